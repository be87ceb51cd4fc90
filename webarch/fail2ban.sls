# -*- coding: utf-8 -*-
# vim: ft=sls
# Brute-force bans: fail2ban with the formula's jails (SSH/SFTP password
# logins from the journal; basic auth, WordPress and Matomo logins from the
# root-only logs Apache writes for them), banning through fail2ban's own
# nftables table (inet f2b-table: the formula's inet webarch is not touched).
# The jail file comes from the model (webarch_fail2ban) and is checked with
# the whole fail2ban configuration before it is put in place.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set f2b = webarch.fail2ban %}
{%- set program_dir = webarch.paths.program_dir %}
---
include:
  - {{ tplroot }}.packages
{%- if f2b.enabled %}

# Apache appends to them (apache-global.conf); here they exist before the
# jails read them, with the owner and mode Debian's logrotate gives them.
webarch-fail2ban-ban-logs:
  file.managed:
    - names: {{ f2b.logs | json }}
    - replace: false
    - user: root
    - group: adm
    - mode: '0640'
    - require:
      - pkg: webarch-packages

webarch-fail2ban-filters:
  file.managed:
    - names:
{%-   for name in f2b.filters %}
      - {{ f2b.filter_dir }}/{{ name }}.conf:
        - source: salt://{{ tplroot }}/files/fail2ban/filter.d/{{ name }}.conf
{%-   endfor %}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: webarch-packages

webarch-fail2ban-check:
  file.managed:
    - name: {{ program_dir }}/{{ f2b.check_program }}
    - source: salt://{{ tplroot }}/files/fail2ban/{{ f2b.check_program }}
    - user: root
    - group: root
    - mode: '0755'

webarch-fail2ban-jails:
  file.managed:
    - name: {{ f2b.jail_file }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ f2b.text | json }}
    - check_cmd: {{ program_dir }}/{{ f2b.check_program }}
    - require:
      - file: webarch-fail2ban-ban-logs
      - file: webarch-fail2ban-filters
      - file: webarch-fail2ban-check

webarch-fail2ban-service:
  service.running:
    - name: {{ f2b.service }}
    - enable: true
    - reload: true
    - require:
      - file: webarch-fail2ban-jails
    {{- service_requisites('watch', ['file: webarch-fail2ban-jails', 'file: webarch-fail2ban-filters']) }}
{%- else %}

webarch-fail2ban-service:
  service.dead:
    - name: {{ f2b.service }}
    - enable: false
    - require:
      - pkg: webarch-packages

webarch-fail2ban-jails:
  file.absent:
    - name: {{ f2b.jail_file }}
    - require:
      - service: webarch-fail2ban-service
{%- endif %}
