# -*- coding: utf-8 -*-
# vim: ft=sls
# Mail: Exim takes mail only from local programs (no SMTP listener).  Accounts
# hand theirs in through /run/webarch-mail/submit.sock (seen at the same path in
# every chroot, where sendmail is msmtp): webarch-mail-gate runs `exim4 -bs` as
# the account that connected, so Exim fixes its envelope sender (rewritten to the
# account's address by /etc/email-addresses), applies its hourly limit and tags
# its log lines, which webarch-mail-log copies into ~/logs/mail.log.
# Mail leaves through mail:smarthost (over TLS, logged in, as the pillar says:
# Debian's split configuration plus webarch's additions) or straight to each MX.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set mail = webarch.mail %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.programs

{%- if webarch.hostname %}

webarch-mail-mailname:
  file.managed:
    - name: {{ webarch.paths.mailname }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ webarch.hostname }}
    - require:
      - pkg: webarch-packages
    - onchanges_in:
      - cmd: webarch-mail-exim-update
{%- endif %}

webarch-mail-exim-debconf:
  file.managed:
    - name: {{ webarch.paths.exim_debconf }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (webarch): do not edit by hand.
        dc_eximconfig_configtype='{{ 'smarthost' if mail.smarthost else 'internet' }}'
        dc_other_hostnames='{{ webarch.hostname or '' }}'
        dc_local_interfaces='127.0.0.1 ; ::1'
        dc_readhost=''
        dc_relay_domains=''
        dc_minimaldns='false'
        dc_relay_nets=''
        dc_smarthost='{{ mail.smarthost or '' }}'
        CFILEMODE='644'
        dc_use_split_config='true'
        dc_hide_mailname=''
        dc_mailname_in_oh='true'
        dc_localdelivery='mail_spool'
    - require:
      - pkg: webarch-packages

# Local callers that are not trusted (the hosting accounts) cannot choose their
# envelope sender (MAIN_FORCE_SENDER); per-account send limits; TLS towards
# the smarthost.
webarch-mail-exim-macros:
  file.managed:
    - name: {{ webarch.paths.exim_macros }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ mail.exim_macros | json }}
    - require:
      - pkg: webarch-packages

# Debian's split configuration (conf.d/) reads the macros file through this,
# first of all; and a smarthost with a login must take it (hosts_require_auth,
# an addition to Debian's remote_smtp_smarthost transport).
{%- for id, part in [('main-include', mail.exim_main_include),
                     ('smarthost-addition', mail.exim_smarthost_addition)] %}

webarch-mail-exim-{{ id }}:
  file.managed:
    - name: {{ part.path }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ part.lines | json }}
    - require:
      - pkg: webarch-packages
{%- endfor %}

# The smarthost login, root:Debian-exim 0640: the state reads the password
# from the pillar when it runs, so it is in no state argument (Salt caches
# those), output or log.  In place before any mail is handed to Exim.
webarch-mail-smarthost-login:
  webarch_smarthost.login:
    - name: {{ mail.passwd_client.path }}
    - host: {{ (mail.smarthost_auth.host if mail.smarthost_auth else '') | json }}
    - user: {{ (mail.smarthost_auth.user if mail.smarthost_auth else '') | json }}
    - group: {{ mail.passwd_client.group }}
    - require:
      - pkg: webarch-packages
    - require_in:
      - service: webarch-mail-exim-service

webarch-mail-exim-acl:
  file.managed:
    - name: {{ webarch.paths.exim_mail_acl }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (webarch): Exim's MAIL ACL.  $sender_ident is the
        # login of a local caller (the account, via webarch-mail-gate).
          deny
            condition = ${if def:sender_ident}
            set acl_m_webarch_limit = ${lookup{$sender_ident}lsearch{ {{- mail.limits_path -}} }{$value}{}}
            condition = ${if !eq{$acl_m_webarch_limit}{}}
            ratelimit = $acl_m_webarch_limit / 1h / per_mail / webarch-$sender_ident
            message = send limit of $acl_m_webarch_limit messages per hour reached
          accept
    - require:
      - pkg: webarch-packages

webarch-mail-limits:
  file.managed:
    - name: {{ mail.limits_path }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ (['# Managed by Salt (webarch): ACCOUNT: messages per hour.']
                    + webarch.mail_accounts.limits) | json }}
    - require:
      - pkg: webarch-packages

webarch-mail-senders:
  file.blockreplace:
    - name: {{ webarch.paths.email_addresses }}
    - marker_start: '# webarch accounts: start (managed by Salt, do not edit)'
    - marker_end: '# webarch accounts: end'
    - content: {{ (['# ACCOUNT: the envelope sender Exim gives its mail']
                   + webarch.mail_accounts.senders.items() | map('join', ': ') | list)
                  | join('\n') | json }}
    - append_if_not_found: true
    - require:
      - pkg: webarch-packages

# Mail to ACCOUNT@hostname (bounces of its own mail, too) goes to its holder.
webarch-mail-aliases:
  file.blockreplace:
    - name: {{ webarch.paths.aliases }}
    - marker_start: '# webarch accounts: start (managed by Salt, do not edit)'
    - marker_end: '# webarch accounts: end'
    - content: {{ (['# ACCOUNT: where mail to ACCOUNT@hostname goes (its email)']
                   + webarch.mail_accounts.aliases.items() | map('join', ': ') | list)
                  | join('\n') | json }}
    - append_if_not_found: true
    - require:
      - pkg: webarch-packages

# Exim's daemon runs the queue only: no SMTP listener, not even on 127.0.0.1.
webarch-mail-exim-queueonly:
  file.replace:
    - name: {{ webarch.paths.exim_defaults }}
    - pattern: {{ mail.daemon.pattern | json }}
    - repl: {{ mail.daemon.line | json }}
    - append_if_not_found: true
    - require:
      - pkg: webarch-packages

# Generates Exim's configuration and checks it, with the addition in its place.
webarch-mail-exim-update:
  cmd.run:
    - name: |
        update-exim4.conf && exim4 -bV >/dev/null || exit 1
        if ! exim4 -bP transport remote_smtp_smarthost | grep -q '^hosts_require_auth = '; then
          echo "{{ mail.exim_smarthost_addition.path }} is not read as part of" \
               "Debian's remote_smtp_smarthost transport any more" >&2
          exit 1
        fi
    - onchanges:
      - file: webarch-mail-exim-debconf
      - file: webarch-mail-exim-macros
      - file: webarch-mail-exim-acl
      - file: webarch-mail-exim-main-include
      - file: webarch-mail-exim-smarthost-addition

webarch-mail-exim-service:
  service.running:
    - name: exim4
    - enable: true
    {{- service_requisites('watch', ['cmd: webarch-mail-exim-update',
                                     'file: webarch-mail-exim-queueonly']) }}

webarch-mail-accounts:
  file.managed:
    - name: {{ mail.accounts_path }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
    - contents: {{ webarch.mail_accounts.lines | json }}

{%- for script in ['webarch-mail-gate', 'webarch-mail-log'] %}

webarch-mail-{{ script }}-script:
  file.managed:
    - name: {{ webarch.paths.program_dir }}/{{ script }}
    - source: salt://{{ tplroot }}/files/programs/{{ script | replace('-', '_') }}.py
    - user: root
    - group: root
    - mode: '0755'
    # Its helper modules are in place before it can run.
    - require:
      - file: webarch-program-lib
{%- endfor %}

# The gate's directory: made at boot before the chroots' bind mounts of it.
webarch-mail-tmpfiles:
  file.managed:
    - name: {{ webarch.paths.mail_tmpfiles }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (webarch)
        d {{ mail.gate_dir }} 0755 root root -

webarch-mail-gate-dir:
  file.directory:
    - name: {{ mail.gate_dir }}
    - user: root
    - group: root
    - mode: '0755'

{%- for unit in ['webarch-mail.socket', 'webarch-mail@.service', 'webarch-mail-log.service'] %}

webarch-mail-unit-{{ unit | replace('@', '') }}:
  file.managed:
    - name: {{ webarch.paths.systemd_dir }}/{{ unit }}
    - source: salt://{{ tplroot }}/files/systemd/{{ unit }}
    - user: root
    - group: root
    - mode: '0644'
{%- endfor %}

webarch-mail-socket:
  service.running:
    - name: webarch-mail.socket
    - enable: true
    - require:
      - file: webarch-mail-gate-dir
      - file: webarch-mail-webarch-mail-gate-script
      - service: webarch-mail-exim-service
    {{- service_requisites('watch', ['file: webarch-mail-unit-webarch-mail.socket']) }}

webarch-mail-log-service:
  service.running:
    - name: webarch-mail-log
    - enable: true
    - require:
      - file: webarch-mail-accounts
      - service: webarch-mail-exim-service
    {{- service_requisites('watch', ['file: webarch-mail-unit-webarch-mail-log.service',
                                     'file: webarch-mail-webarch-mail-log-script',
                                     'file: webarch-program-lib']) }}
