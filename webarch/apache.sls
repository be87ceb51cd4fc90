# -*- coding: utf-8 -*-
# vim: ft=sls
# Apache with core modules only (event MPM, proxy_fcgi, ssl, http2, md): one
# port-80 virtual host redirecting to HTTPS, and a file per account with a
# virtual host per site.  Every file is checked with apache2 -t (together with
# the rest of the configuration) before it is put in place: the server-wide
# files one by one, the accounts' files all at once (rendered into a staging
# directory, then webarch-apache-sites checks every changed one in a single
# apache2 -t and puts those that pass in place).  A bad file keeps the old one
# live and fails webarch-apache-sites-refused, naming it; the others still
# reload.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set apache = webarch.apache %}
{%- set waf = webarch.waf %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.programs
  - {{ tplroot }}.users
  - {{ tplroot }}.php

{%- for module in apache.modules %}

webarch-apache-module-{{ module }}:
  apache_module.enabled:
    - name: {{ module }}
    - require:
      - pkg: webarch-packages
      - apache_module: webarch-apache-module-off-{{ apache.modules_off[-1] }}
{%- endfor %}

{#- Each after the one before: a module that depends on another goes first. #}
{%- for module in apache.modules_off %}

webarch-apache-module-off-{{ module }}:
  apache_module.disabled:
    - name: {{ module }}
    - require:
      - pkg: webarch-packages
{%-   if not loop.first %}
      - apache_module: webarch-apache-module-off-{{ loop.previtem }}
{%-   endif %}
{%- endfor %}

{%- for site in ('000-default', 'default-ssl') %}

webarch-apache-debian-site-{{ site }}:
  apache_site.disabled:
    - name: {{ site }}
    - require:
      - pkg: webarch-packages
{%- endfor %}

# A change of MPM needs a full restart, not a graceful reload; so does a
# change of the unit's options (its sandbox): Apache never runs without them.
webarch-apache-restart-for-modules:
  cmd.run:
    - name: systemctl restart apache2
    - onchanges:
{%- for module in apache.modules_off %}
      - apache_module: webarch-apache-module-off-{{ module }}
{%- endfor %}
      - apache_module: webarch-apache-module-mpm_event
      - file: webarch-apache-unit-options
    - require:
      - module: webarch-apache-unit-options

webarch-apache-check-script:
  file.managed:
    - names:
      - {{ webarch.paths.program_dir }}/webarch-apache-check:
        - source: salt://{{ tplroot }}/files/programs/webarch-apache-check.sh
      - {{ webarch.paths.program_dir }}/webarch-apache-sites:
        - source: salt://{{ tplroot }}/files/programs/webarch_apache_sites.py
    - user: root
    - group: root
    - mode: '0755'

# The accounts' files as rendered (see webarch-apache-sites-install); a full
# run removes those of accounts no longer here (all but the present ones'
# files: a pattern, not a require_in of each, which Salt's clean resolves in
# time quadratic in accounts).
webarch-apache-staging-dir:
  file.directory:
    - name: {{ webarch.paths.apache_staging_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: true
    - clean: {{ webarch.only is none }}
    - exclude_pat: {{ apache.staged_keep | json }}

# Apache's piped logger: a reload of Apache starts it anew (it watches this).
webarch-apache-log-split:
  file.managed:
    - name: {{ webarch.paths.program_dir }}/webarch-log-split
    - source: salt://{{ tplroot }}/files/programs/webarch_log_split.py
    - user: root
    - group: root
    - mode: '0755'
    # Its helper modules are in place before it can run.
    - require:
      - file: webarch-program-lib

webarch-apache-log-map:
  file.managed:
    - name: {{ webarch.log_map.path }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
    - contents: {{ webarch.log_map.lines | json }}

# Debian's log of all vhosts in one file: replaced by the per-account logs.
webarch-apache-debian-vhosts-log:
  apache_conf.disabled:
    - name: other-vhosts-access-log
    - require:
      - pkg: webarch-packages

{%- if webarch.app_packages %}

# Debian's mediawiki package enables an alias /mediawiki on every virtual host
# (its own shared copy, AllowOverride All): the sites have their own copies.
webarch-apache-debian-mediawiki-conf:
  apache_conf.disabled:
    - name: mediawiki
    - require:
      - pkg: webarch-app-packages
{%- endif %}

webarch-logrotate:
  file.managed:
    - name: {{ webarch.paths.logrotate_conf }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (webarch): the accounts' own Apache and PHP logs.
        {{ webarch.log_map.rotate_glob }} {
            daily
            rotate {{ webarch.log_retention_days }}
            maxage {{ webarch.log_retention_days }}
            missingok
            notifempty
            compress
            delaycompress
            copytruncate
        }

webarch-apache-default-certificate:
  cmd.run:
    - name: >-
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=webarch-default
        -addext basicConstraints=critical,CA:FALSE
        -keyout {{ webarch.paths.apache_default_key }} -out {{ webarch.paths.apache_default_cert }}
        && chmod 0600 {{ webarch.paths.apache_default_key }}
    - creates: {{ webarch.paths.apache_default_cert }}
    - require:
      - pkg: webarch-packages

webarch-apache-auth-dir:
  file.directory:
    - name: {{ apache.auth_dir }}
    - user: root
    - group: {{ webarch.web_user }}
    - mode: '0750'
    # Not in a run limited by webarch_only: the other accounts' files stay.
    - clean: {{ webarch.only is none }}
    - require:
      - pkg: webarch-packages

{%- set configs = [
      ('conf', webarch.paths.apache_conf, 'apache-global.conf.jinja', 'webarch'),
      ('site', webarch.paths.apache_http_site, 'apache-http.conf.jinja', '000-webarch'),
    ] %}
{%- for kind, path, template, enable in configs %}

webarch-apache-{{ enable }}:
  file.managed:
    - name: {{ path }}
    - source: salt://{{ tplroot }}/files/templates/{{ template }}
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: {{ webarch.paths.program_dir }}/webarch-apache-check {{ path }}
    - context:
        acme: {{ webarch.acme | json }}
        chroot_base: {{ webarch.chroot_base }}
        server_name: {{ apache.server_name }}
        paths: {{ webarch.paths | json }}
    - require:
      - file: webarch-apache-check-script
      - file: webarch-md-message
      - file: webarch-md-stamp-dir
      - file: webarch-apache-log-split
      - file: webarch-apache-log-map
      - apache_conf: webarch-apache-debian-vhosts-log
      - cmd: webarch-apache-default-certificate
{%-   for module in apache.modules %}
      - apache_module: webarch-apache-module-{{ module }}
{%-   endfor %}
  apache_{{ kind }}.enabled:
    - name: {{ enable }}
    - require:
      - file: webarch-apache-{{ enable }}
{%- endfor %}

# The web application firewall (ModSecurity with the OWASP CRS): installed and
# loaded once some site has one, its engine Off but in the vhosts of those
# sites.  When no site has one any more the module is unloaded (after every
# account's file has lost its directives: not in a run limited by webarch_only,
# whose other accounts' files are not rewritten).
{%- if waf.enabled %}

webarch-waf-packages:
  pkg.installed:
    - pkgs: {{ waf.packages | json }}
    - require:
      - pkg: webarch-packages

webarch-waf-data-dir:
  file.directory:
    - name: {{ waf.data_dir }}
    - user: {{ webarch.web_user }}
    - group: root
    - mode: '0700'
    - require:
      - pkg: webarch-waf-packages
{%-   for module in waf.modules %}

webarch-apache-waf-module-{{ module }}:
  apache_module.enabled:
    - name: {{ module }}
    - require:
      - pkg: webarch-waf-packages
{%-   endfor %}

webarch-apache-waf-conf:
  file.managed:
    - name: {{ waf.conf }}
    - source: salt://{{ tplroot }}/files/templates/modsecurity.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: {{ webarch.paths.program_dir }}/webarch-apache-check {{ waf.conf }}
    - context:
        waf: {{ waf | json }}
    - require:
      - file: webarch-apache-check-script
      - file: webarch-waf-data-dir
{%-   for module in waf.modules %}
      - apache_module: webarch-apache-waf-module-{{ module }}
{%-   endfor %}
{%- elif webarch.only is none %}

webarch-apache-waf-module-off:
  apache_module.disabled:
    - name: security2
    - require:
      - cmd: webarch-apache-sites-install
      - pkg: webarch-packages
{%- endif %}

{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}

webarch-{{ name }}-home-web-access:
  acl.present:
    - name: {{ account.home }}
    - acl_type: user
    - acl_name: {{ webarch.web_user }}
    - perms: x
    # (In test mode on a new account the home does not exist yet.)
    - onlyif: test -d {{ account.home }}
    - require:
      - file: webarch-{{ name }}-dir-home

{%-   for site_name, site in account.sites.items() if site.basic_auth %}

webarch-{{ name }}-site-{{ site_name }}-auth:
  file.managed:
    - name: {{ apache.auth_dir }}/{{ name }}-{{ site_name }}
    - user: root
    - group: {{ webarch.web_user }}
    - mode: '0640'
    - contents: {{ site.basic_auth.lines | json }}
    # Password hashes stay out of state output and the job cache.
    - show_changes: false
    - makedirs: true
    - dir_mode: '0750'
    - require_in:
      - file: webarch-apache-auth-dir
{%-   endfor %}

webarch-{{ name }}-apache-sites:
  file.managed:
    - name: {{ webarch.paths.apache_staging_dir }}/{{ account.apache.site }}.conf
    - source: salt://{{ tplroot }}/files/templates/apache-account.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: true
    - context:
        account: {{ account | json }}
        override_list: {{ apache.htaccess_directives | json }}
        allow_override: {{ apache.allow_override | json }}
        auth_dir: {{ apache.auth_dir }}
        paths: {{ webarch.paths | json }}
    - require:
      - file: webarch-apache-webarch
      - acl: webarch-{{ name }}-home-web-access
{%-   if waf.enabled %}
      - file: webarch-apache-waf-conf
{%-   endif %}
  apache_site.enabled:
    - name: {{ account.apache.site }}
    - require:
      - cmd: webarch-apache-sites-install
{%- endfor %}

# One apache2 -t of the whole configuration with every changed account file
# in it (on a scratch copy of /etc/apache2), then those that pass go live: a
# check per file read every other account's file each time (quadratic in
# accounts).  A file refused keeps the live one; webarch-apache-sites-refused
# fails, naming the account and quoting Apache.  Both run only when a staged
# file is not live.
webarch-apache-sites-install:
  cmd.run:
    - name: {{ webarch.paths.program_dir }}/webarch-apache-sites install
    - unless: {{ webarch.paths.program_dir }}/webarch-apache-sites current
    - stateful: true
    - require:
      - file: webarch-apache-check-script
      - file: webarch-program-lib
      - file: webarch-apache-staging-dir
      - file: webarch-apache-webarch
      - apache_conf: webarch-apache-webarch
      - file: webarch-apache-000-webarch
      - apache_site: webarch-apache-000-webarch
{%- if waf.enabled %}
      - file: webarch-apache-waf-conf
{%- endif %}
{%- for name in webarch.present %}
      - file: webarch-{{ name }}-apache-sites
{%- endfor %}

webarch-apache-sites-refused:
  cmd.run:
    - name: {{ webarch.paths.program_dir }}/webarch-apache-sites refused
    # (The last install's refusals, if any; the program says which still are.)
    - onlyif: grep -qs sha256 {{ webarch.paths.apache_sites_verdicts }}
    - require:
      - cmd: webarch-apache-sites-install

# mod_md fetches certificates in the background and stages them; Apache uses a
# new one after a graceful reload.  mod_md reports "renewed" (the first
# certificate too) to MDMessageCmd, which runs as the web server's user: it
# touches a stamp that a systemd path unit watches to reload Apache.  A daily
# reload catches anything missed.
webarch-md-stamp-dir:
  file.directory:
    - name: {{ webarch.paths.md_stamp_dir }}
    - user: {{ webarch.web_user }}
    - group: root
    - mode: '0700'

webarch-md-message:
  file.managed:
    - name: {{ webarch.paths.program_dir }}/webarch-md-message
    - source: salt://{{ tplroot }}/files/programs/webarch-md-message.sh
    - user: root
    - group: root
    - mode: '0755'

webarch-md-reload-units:
  file.managed:
    - names:
{%- for unit in ('webarch-md-reload.service', 'webarch-md-reload.path', 'webarch-md-reload.timer') %}
      - {{ webarch.paths.systemd_dir }}/{{ unit }}:
        - source: salt://{{ tplroot }}/files/systemd/{{ unit }}
{%- endfor %}
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-md-reload-units

{%- for unit in ('webarch-md-reload.path', 'webarch-md-reload.timer') %}

webarch-{{ unit }}:
  service.running:
    - name: {{ unit }}
    - enable: true
    - require:
      - service: webarch-apache-service
    {{- service_requisites('require', ['module: webarch-md-reload-units']) }}
{%- endfor %}

# Debian's apache2.service has PrivateTmp: systemd then builds a new mount
# namespace for each of its commands, every reload too, copying all the host's
# mounts.  The chroots add about 7 per account: at 200 accounts each reload
# took 0.3 s more.  No account program runs outside its chroot and Apache keeps
# no temporary files, so a private /tmp protects nothing here
# (docs/security.rst, known limits).  A reload was also "apachectl graceful":
# apache2 -t, then apache2 -k graceful, which reads and checks the whole
# configuration again before it signals Apache (and refuses a broken one).
webarch-apache-unit-options:
  file.managed:
    - name: {{ webarch.paths.apache_unit_dropin }}
    - source: salt://{{ tplroot }}/files/systemd/apache2-webarch.conf
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-apache-unit-options

webarch-apache-service:
  service.running:
    - name: apache2
    - enable: true
    - reload: true
    - require:
      - cmd: webarch-apache-restart-for-modules
      - module: webarch-apache-unit-options
{#- A reload starts new piped loggers: a changed webarch-log-split runs. #}
{%- set watched = ['apache_conf: webarch-apache-debian-vhosts-log',
                   'file: webarch-apache-webarch', 'apache_conf: webarch-apache-webarch',
                   'file: webarch-apache-000-webarch', 'apache_site: webarch-apache-000-webarch',
                   'file: webarch-apache-log-split', 'file: webarch-program-lib'] %}
{%- if webarch.app_packages %}
{%-   do watched.append('apache_conf: webarch-apache-debian-mediawiki-conf') %}
{%- endif %}
{%- if waf.enabled %}
{%-   do watched.append('file: webarch-apache-waf-conf') %}
{%-   for module in waf.modules %}
{%-     do watched.append('apache_module: webarch-apache-waf-module-' ~ module) %}
{%-   endfor %}
{%- elif webarch.only is none %}
{%-   do watched.append('apache_module: webarch-apache-waf-module-off') %}
{%- endif %}
{%- do watched.append('cmd: webarch-apache-sites-install') %}
{%- for name in webarch.present %}
{%-   do watched.append('apache_site: webarch-' ~ name ~ '-apache-sites') %}
{%- endfor %}
    {{- service_requisites('watch_any', watched) }}
