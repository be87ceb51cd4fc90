# -*- coding: utf-8 -*-
# vim: ft=sls
# Apache with core modules only (event MPM, proxy_fcgi, ssl, http2, md): one
# port-80 virtual host redirecting to HTTPS, and a file per account with a
# virtual host per site.  Every file is checked with apache2 -t (together with
# the rest of the configuration) before it is put in place: a bad file keeps
# the old one live and fails its state, the others still reload.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
{%- set apache = webarch.apache %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.users
  - {{ tplroot }}.php

{%- for module in apache.modules %}

webarch-apache-module-{{ module }}:
  apache_module.enabled:
    - name: {{ module }}
    - require:
      - pkg: webarch-packages
      - apache_module: webarch-apache-module-off-{{ apache.modules_off[0] }}
{%- endfor %}

{%- for module in apache.modules_off %}

webarch-apache-module-off-{{ module }}:
  apache_module.disabled:
    - name: {{ module }}
    - require:
      - pkg: webarch-packages
{%- endfor %}

{%- for site in ('000-default', 'default-ssl') %}

webarch-apache-debian-site-{{ site }}:
  apache_site.disabled:
    - name: {{ site }}
    - require:
      - pkg: webarch-packages
{%- endfor %}

# A change of MPM needs a full restart, not a graceful reload.
webarch-apache-restart-for-modules:
  cmd.run:
    - name: systemctl restart apache2
    - onchanges:
{%- for module in apache.modules_off %}
      - apache_module: webarch-apache-module-off-{{ module }}
{%- endfor %}
      - apache_module: webarch-apache-module-mpm_event

webarch-apache-check-script:
  file.managed:
    - name: /usr/local/sbin/webarch-apache-check
    - source: salt://{{ tplroot }}/files/webarch-apache-check
    - user: root
    - group: root
    - mode: '0755'

webarch-apache-log-split:
  file.managed:
    - name: /usr/local/sbin/webarch-log-split
    - source: salt://{{ tplroot }}/files/webarch-log-split
    - user: root
    - group: root
    - mode: '0755'

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

webarch-logrotate:
  file.managed:
    - name: /etc/logrotate.d/webarch
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
        -keyout /etc/apache2/webarch-default.key -out /etc/apache2/webarch-default.crt
        && chmod 0600 /etc/apache2/webarch-default.key
    - creates: /etc/apache2/webarch-default.crt
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
      ('conf', 'conf-available/webarch.conf', 'apache-global.conf.jinja', 'webarch'),
      ('site', 'sites-available/000-webarch.conf', 'apache-http.conf.jinja', '000-webarch'),
    ] %}
{%- for kind, path, template, enable in configs %}

webarch-apache-{{ enable }}:
  file.managed:
    - name: /etc/apache2/{{ path }}
    - source: salt://{{ tplroot }}/files/{{ template }}
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/local/sbin/webarch-apache-check /etc/apache2/{{ path }}
    - context:
        acme: {{ webarch.acme | json }}
        chroot_base: {{ webarch.chroot_base }}
        server_name: {{ apache.server_name }}
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
    - name: /etc/apache2/sites-available/webarch-{{ name }}.conf
    - source: salt://{{ tplroot }}/files/apache-account.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/local/sbin/webarch-apache-check /etc/apache2/sites-available/webarch-{{ name }}.conf
    - context:
        account: {{ account | json }}
        override_list: {{ apache.htaccess_directives | json }}
        auth_dir: {{ apache.auth_dir }}
    - require:
      - file: webarch-apache-webarch
      - acl: webarch-{{ name }}-home-web-access
  apache_site.enabled:
    - name: webarch-{{ name }}
    - require:
      - file: webarch-{{ name }}-apache-sites
{%- endfor %}

# mod_md fetches certificates in the background and stages them; Apache uses a
# new one after a graceful reload.  mod_md reports "renewed" (the first
# certificate too) to MDMessageCmd, which runs as the web server's user: it
# touches a stamp that a systemd path unit watches to reload Apache.  A daily
# reload catches anything missed.
webarch-md-stamp-dir:
  file.directory:
    - name: /var/lib/webarch-md
    - user: {{ webarch.web_user }}
    - group: root
    - mode: '0700'

webarch-md-message:
  file.managed:
    - name: /usr/local/sbin/webarch-md-message
    - user: root
    - group: root
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt (webarch): mod_md's MDMessageCmd (REASON DOMAIN).
        # Only "renewed" (a new certificate is staged); "installed" follows the
        # reload that activated it and must not start another one.
        case "$1" in
          renewed) touch /var/lib/webarch-md/renewed ;;
        esac
        exit 0

webarch-md-reload-units:
  file.managed:
    - names:
      - /etc/systemd/system/webarch-md-reload.service:
        - contents: |
            # Managed by Salt (webarch): activate certificates mod_md staged.
            [Unit]
            Description=Reload Apache to activate new certificates from mod_md
            [Service]
            Type=oneshot
            # The stamp goes first: a certificate reported while this runs
            # leaves a new stamp, and the path unit starts this again.
            ExecStart=/bin/rm -f /var/lib/webarch-md/renewed
            ExecStart=/bin/sleep 3
            ExecStart=/bin/systemctl reload apache2.service
      - /etc/systemd/system/webarch-md-reload.path:
        - contents: |
            # Managed by Salt (webarch): mod_md said it has a new certificate.
            [Unit]
            Description=Watch for new certificates from mod_md
            [Path]
            PathExists=/var/lib/webarch-md/renewed
            Unit=webarch-md-reload.service
            [Install]
            WantedBy=multi-user.target
      - /etc/systemd/system/webarch-md-reload.timer:
        - contents: |
            # Managed by Salt (webarch): a daily reload, should the watch miss one.
            [Unit]
            Description=Daily Apache reload for renewed certificates
            [Timer]
            OnCalendar=daily
            RandomizedDelaySec=1h
            Persistent=true
            Unit=webarch-md-reload.service
            [Install]
            WantedBy=timers.target
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
{%- for requisite in ['require'] + webarch.service_onchanges %}
    - {{ requisite }}:
      - module: webarch-md-reload-units
{%- endfor %}
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
    - name: /etc/systemd/system/apache2.service.d/webarch.conf
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
    - contents: |
        # Managed by Salt (webarch): see webarch/apache.sls.
        [Service]
        PrivateTmp=false
        ExecReload=
        ExecReload=/usr/sbin/apache2ctl -k graceful
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
{%- for requisite in ['watch_any'] + webarch.service_onchanges %}
    - {{ requisite }}:
      - apache_conf: webarch-apache-debian-vhosts-log
      - file: webarch-apache-webarch
      - apache_conf: webarch-apache-webarch
      - file: webarch-apache-000-webarch
      - apache_site: webarch-apache-000-webarch
{%- for name in webarch.present %}
      - file: webarch-{{ name }}-apache-sites
      - apache_site: webarch-{{ name }}-apache-sites
{%- endfor %}
{%- endfor %}
