# -*- coding: utf-8 -*-
# vim: ft=sls
# Cron jobs: no cron daemon, no crontab in any chroot.  webarch-cron sync
# writes a systemd service and timer per job (the pillar's, from the file
# below, and each account's own ~/private/crontab), whose service runs the
# command as the account in its chroot, its output into ~/logs/cron.log; a
# failed run starts webarch-cron-failed@, which mails the account.  Its timer runs it every minute, so an
# account's crontab needs no Salt run.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set program = webarch.paths.program_dir ~ '/webarch-cron' %}
---
include:
  - {{ tplroot }}.programs
  - {{ tplroot }}.users

webarch-cron-program:
  file.managed:
    - name: {{ program }}
    - source: salt://{{ tplroot }}/files/programs/webarch_cron_jobs.py
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: webarch-program-lib

webarch-cron-config:
  file.serialize:
    - name: {{ webarch.cron.path }}
    - dataset: {{ webarch.cron.data | json }}
    - serializer: json
    - user: root
    - group: root
    - mode: '0600'

{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}

# Written by the jobs' start and end lines and by their output.
webarch-{{ name }}-cron-log:
  file.managed:
    - name: {{ account.cron.log }}
    - replace: false
    - user: root
    - group: {{ name }}
    - mode: '0640'
    - require:
      - file: webarch-{{ name }}-dir-logs
    - require_in:
      - cmd: webarch-cron-sync
{%- endfor %}

webarch-cron-sync:
  cmd.run:
    - name: {{ program }} sync
    - unless: {{ program }} sync --check
    - require:
      - file: webarch-cron-program
      - file: webarch-cron-config
      - file: webarch-program-lib

webarch-cron-units:
  file.managed:
    - names:
{%- for unit in ('webarch-cron.service', 'webarch-cron.timer', 'webarch-cron-failed@.service') %}
      - {{ webarch.paths.systemd_dir }}/{{ unit }}:
        - source: salt://{{ tplroot }}/files/systemd/{{ unit }}
{%- endfor %}
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-cron-units

webarch-cron-timer:
  service.running:
    - name: webarch-cron.timer
    - enable: true
    {{- service_requisites('require', ['module: webarch-cron-units',
                                       'cmd: webarch-cron-sync']) }}
