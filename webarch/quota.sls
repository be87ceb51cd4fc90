# -*- coding: utf-8 -*-
# vim: ft=sls
# Disk quotas (space and files) of the accounts on the file system holding
# their homes (webarch:quota, webarch:accounts:USERNAME:quota).  Each account's
# limits are set only when they differ; where that file system has no user
# quotas on, its state fails and names it.  On btrfs each home is a subvolume
# whose qgroup holds the account's hard space limit.  webarch-quota-report writes each
# account's usage into its ~/logs/quota.txt (every 10 minutes, and after a
# change of limits), which the account reads from its chroot.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set quota = webarch.quota %}
{%- set unit = 'webarch-quota-report' %}
{%- set program = webarch.paths.program_dir ~ '/' ~ unit %}
{%- set units = [webarch.paths.systemd_dir ~ '/' ~ unit ~ '.service',
                 webarch.paths.systemd_dir ~ '/' ~ unit ~ '.timer'] %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.users
{%- if quota.off_notice %}

webarch-quota-off:
  test.succeed_without_changes:
    - comment: 'Disk quotas are switched off (webarch:quota:enabled: false): the limits in pillar are not applied.'
{%- endif %}
{%- if quota.enabled %}

# On btrfs: its quotas (qgroups) on; elsewhere the mount's usrquota does it.
webarch-quota-homes:
  webarch_quota.enabled:
    - name: {{ quota.homes }}
    - require:
      - pkg: webarch-packages
{%-   for name in webarch.present %}
{%-     set account = webarch.accounts[name] %}

# On btrfs: a new home is a subvolume (its qgroup limits it), made before
# anything is put in it; an older plain directory fails, saying how to convert.
webarch-{{ name }}-home-subvolume:
  webarch_quota.home:
    - name: {{ account.home }}
    - chroot: {{ account.chroot.path }}
    - require:
      - webarch_quota: webarch-quota-homes
    - require_in:
{%-     for dir in account.dirs %}
      - file: webarch-{{ name }}-dir-{{ dir.id }}
{%-     endfor %}

webarch-{{ name }}-quota:
  webarch_quota.limits:
    - name: {{ name }}
    - path: {{ account.home }}
{%-     for key, value in account.quota.items() %}
    - {{ key }}: {{ value }}
{%-     endfor %}
{%-     if account.quota_from %}
    - sources: {{ account.quota_from | json }}
{%-     endif %}
    - require:
      - pkg: webarch-packages
      - user: webarch-{{ name }}-user
      - file: webarch-{{ name }}-dir-logs
      - webarch_quota: webarch-{{ name }}-home-subvolume
{%-   endfor %}

webarch-quota-report-script:
  file.managed:
    - name: {{ program }}
    - source: salt://{{ tplroot }}/files/programs/webarch-quota-report.sh
    - user: root
    - group: root
    - mode: '0755'

webarch-quota-report-units:
  file.managed:
    - names:
      - {{ units[0] }}:
        - source: salt://{{ tplroot }}/files/systemd/{{ unit }}.service.jinja
        - context:
            program: {{ program }}
            accounts: {{ quota.report_args | json }}
      - {{ units[1] }}:
        - source: salt://{{ tplroot }}/files/systemd/{{ unit }}.timer.jinja
        - context:
            calendar: '{{ quota.report_calendar }}'
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-quota-report-units

webarch-quota-report-timer:
  service.running:
    - name: {{ unit }}.timer
    - enable: true
    {{- service_requisites('require', ['module: webarch-quota-report-units',
                                       'file: webarch-quota-report-script']) }}

# The reports right after limits changed (the timer refreshes them later).
webarch-quota-report-now:
  module.run:
    - service.start:
      - {{ unit }}.service
    - onchanges:
{%-   for name in webarch.present %}
      - webarch_quota: webarch-{{ name }}-quota
{%-   endfor %}
      - file: webarch-quota-report-units
    - require:
      - module: webarch-quota-report-units
      - file: webarch-quota-report-script
{%- else %}

# Quotas off: no report timer left from when they were on.
webarch-quota-report-stop:
  service.dead:
    - name: {{ unit }}.timer
    - enable: false
    - prereq:
      - file: webarch-quota-report-absent

webarch-quota-report-absent:
  file.absent:
    - names: {{ (units + [program]) | json }}
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-quota-report-absent
{%- endif %}
