# -*- coding: utf-8 -*-
# vim: ft=sls
# Mail: Exim takes mail only from local programs (no SMTP listener).  Accounts
# hand theirs in through /run/webarch-mail/submit.sock (seen at the same path in
# every chroot, where sendmail is msmtp): webarch-mail-gate runs `exim4 -bs` as
# the account that connected, so Exim fixes its envelope sender (rewritten to the
# account's address by /etc/email-addresses), applies its hourly limit and tags
# its log lines, which webarch-mail-log copies into ~/logs/mail.log.
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
        dc_use_split_config='false'
        dc_hide_mailname=''
        dc_mailname_in_oh='true'
        dc_localdelivery='mail_spool'
    - require:
      - pkg: webarch-packages

webarch-mail-exim-macros:
  file.managed:
    - name: {{ webarch.paths.exim_macros }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (webarch): do not edit by hand.
        # Local callers that are not trusted (the hosting accounts) cannot
        # choose their envelope sender: Exim uses their login, rewritten by
        # /etc/email-addresses to the account's configured address.
        MAIN_FORCE_SENDER = yes
        # Per-account hourly send limits.
        MAIN_ACL_CHECK_MAIL = {{ webarch.paths.exim_mail_acl }}
    - require:
      - pkg: webarch-packages

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

webarch-mail-exim-update:
  cmd.run:
    - name: update-exim4.conf && exim4 -bV >/dev/null
    - onchanges:
      - file: webarch-mail-exim-debconf
      - file: webarch-mail-exim-macros
      - file: webarch-mail-exim-acl

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
