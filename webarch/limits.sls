# -*- coding: utf-8 -*-
# vim: ft=sls
# Each account's share of the machine (webarch:limits, accounts:NAME:limits).
# Its slice (user-UID.slice: its SSH and SFTP sessions, its PHP-FPM, its cron
# jobs) gets CPU, memory, task and I/O limits, enforced by systemd on cgroup
# v2; its processes get per-uid and per-process limits that hold on any
# kernel: pam_limits for its sessions, the units' Limit*= for its PHP-FPM
# (webarch.php) and cron jobs (webarch-cron sync).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.users

webarch-pam-limits:
  file.managed:
    - name: {{ webarch.pam_limits.path }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ webarch.pam_limits.contents | json }}
    - require:
      - pkg: webarch-packages
{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}

webarch-{{ name }}-limits:
  webarch_limits.applied:
    - name: {{ name }}
    - slice_properties: {{ account.limits_units.slice | json }}
    - service_properties: {{ account.limits_units.service | json }}
    - require:
      - user: webarch-{{ name }}-user
{%- endfor %}

# One reload of systemd for every unit file and drop-in of the accounts (their
# limits, their PHP-FPM units), when systemd's view differs from the disk (a
# reload per account would cost a second each with hundreds of accounts).
webarch-units-reload:
  module.run:
    - service.systemctl_reload: []
    - onlyif:
      - fun: webarch_limits.need_reload
        accounts: {{ webarch.present | json }}
    - require:
      - file: webarch-pam-limits
{%- for name in webarch.present %}
      - webarch_limits: webarch-{{ name }}-limits
{%- endfor %}
