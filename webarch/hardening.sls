# -*- coding: utf-8 -*-
# vim: ft=sls
# The host's own hardening, what an auditor (lynis) asks of a shared hosting
# server that does not get in the accounts' way: login.defs, no core dumps,
# idle shells ended, kernel and network settings, no USB/FireWire storage nor
# rare network protocols, a legal banner.  The values come from
# webarch_hardening (webarch.hardening); docs/security.rst lists what lynis
# still suggests and why it does not apply.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
{%- set hardening = salt['webarch.hardening']() %}
---
include:
  - {{ tplroot }}.packages
{%- for key, value in hardening.login_defs_values | dictsort %}

webarch-hardening-login-defs-{{ key | lower | replace('_', '-') }}:
  file.replace:
    - name: {{ hardening.login_defs }}
    - pattern: '^{{ key }}\s.*$'
    - repl: '{{ key }} {{ value }}'
    - append_if_not_found: true
{%- endfor %}

webarch-hardening-files:
  file.managed:
    - names:
      - {{ hardening.limits_file }}:
        - contents: {{ hardening.limits_text | json }}
      - {{ hardening.coredump_file }}:
        - contents: {{ hardening.coredump_text | json }}
      - {{ hardening.profile_file }}:
        - contents: {{ hardening.profile_text | json }}
      - {{ hardening.modprobe_file }}:
        - contents: {{ hardening.modprobe_text | json }}
{%- for path in hardening.banner_files %}
      - {{ path }}:
        - contents: {{ hardening.banner | json }}
{%- endfor %}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
    - require:
      - pkg: webarch-packages

webarch-hardening-sysctl:
  file.managed:
    - name: {{ hardening.sysctl_file }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ hardening.sysctl_text | json }}
  cmd.run:
    - name: /lib/systemd/systemd-sysctl {{ hardening.sysctl_file }}
    - onchanges:
      - file: webarch-hardening-sysctl

# sar's history of the host's load (for the noisy neighbour hunted afterwards).
webarch-hardening-sysstat:
  file.replace:
    - name: {{ hardening.sysstat_default }}
    - pattern: '^ENABLED=.*$'
    - repl: 'ENABLED="true"'
    - require:
      - pkg: webarch-packages
  service.running:
    - name: sysstat
    - enable: true
    - watch:
      - file: webarch-hardening-sysstat

# The packages' files checked weekly: Debian's cron job where a cron daemon
# runs (CRON_CHECK), else the formula's timer (its service skips itself when
# /usr/sbin/cron exists).
webarch-hardening-debsums:
  file.replace:
    - name: {{ hardening.debsums_default }}
    - pattern: '^CRON_CHECK=.*$'
    - repl: 'CRON_CHECK=weekly'
    - append_if_not_found: true
    - require:
      - pkg: webarch-packages

webarch-hardening-debsums-units:
  file.managed:
    - names:
{%- for suffix in ('service', 'timer') %}
      - {{ webarch.paths.systemd_dir }}/{{ hardening.debsums_unit }}.{{ suffix }}:
        - source: salt://{{ tplroot }}/files/hardening/{{ hardening.debsums_unit }}.{{ suffix }}
{%- endfor %}
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-hardening-debsums-units

webarch-hardening-debsums-timer:
  service.running:
    - name: {{ hardening.debsums_unit }}.timer
    - enable: true
    - require:
      - module: webarch-hardening-debsums-units
      - pkg: webarch-packages
