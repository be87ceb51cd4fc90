# -*- coding: utf-8 -*-
# vim: ft=sls
# Automatic security updates: unattended-upgrades takes Debian's security suite
# only, needrestart restarts the services that run replaced libraries, and a
# daily timer mails the admin once when an update needs a reboot.  The files'
# texts come from the model (webarch_updates); webarch:updates:enabled: false
# turns the updates off (apt's periodic run set to 0) and removes the timer.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
{%- set updates = webarch.updates %}
{%- set systemd_dir = webarch.paths.systemd_dir %}
{%- set unit = updates.reboot.unit %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.mail

webarch-updates-apt-conf:
  file.managed:
    - name: {{ updates.apt_conf }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ updates.apt_text | json }}
    - check_cmd: apt-config dump -c
    - require:
      - pkg: webarch-packages

{%- if updates.restart_services %}

webarch-updates-needrestart-conf:
  file.managed:
    - name: {{ updates.needrestart_conf }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ updates.needrestart_text | json }}
    - check_cmd: perl -c
    - require:
      - pkg: webarch-packages
{%- else %}

webarch-updates-needrestart-conf:
  file.absent:
    - name: {{ updates.needrestart_conf }}
{%- endif %}

{%- if updates.reboot_mail %}

webarch-updates-reboot-program:
  file.managed:
    - name: {{ updates.reboot.program }}
    - source: salt://{{ tplroot }}/files/updates/{{ unit }}
    - user: root
    - group: root
    - mode: '0755'

webarch-updates-reboot-units:
  file.managed:
    - names:
      - {{ systemd_dir }}/{{ unit }}.service:
        - source: salt://{{ tplroot }}/files/updates/{{ unit }}.service.jinja
        - template: jinja
        - context:
            program: {{ updates.reboot.program }}
            mail_to: {{ updates.mail_to }}
            sender: {{ updates.reboot.sender }}
            hostname: {{ webarch.hostname or grains['fqdn'] }}
            flag: {{ updates.reboot.flag }}
      - {{ systemd_dir }}/{{ unit }}.timer:
        - source: salt://{{ tplroot }}/files/updates/{{ unit }}.timer
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: webarch-updates-reboot-program
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-updates-reboot-units

webarch-updates-reboot-timer:
  service.running:
    - name: {{ unit }}.timer
    - enable: true
    - require:
      - module: webarch-updates-reboot-units
      - sls: {{ tplroot }}.mail
{%- else %}

webarch-updates-reboot-timer:
  service.dead:
    - name: {{ unit }}.timer
    - enable: false

webarch-updates-reboot-units:
  file.absent:
    - names:
      - {{ systemd_dir }}/{{ unit }}.service
      - {{ systemd_dir }}/{{ unit }}.timer
      - {{ updates.reboot.program }}
    - require:
      - service: webarch-updates-reboot-timer
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-updates-reboot-units
{%- endif %}
