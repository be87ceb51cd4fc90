# -*- coding: utf-8 -*-
# vim: ft=sls
# .htaccess files: webarch-htaccess-check tells what of a site's .htaccess
# files this server ignores or refuses.  An account runs it by name in its
# chroot (whose /usr is the host's, read-only); its hourly report, also started
# by webarch-log-split when Apache ignores a .htaccess line, writes the lines
# of the files new or changed since into the account's ~/logs/apache-error.log.
# The policy it checks against (webarch_htaccess) is in webarch-program-lib.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set unit = webarch.paths.htaccess_report_unit %}
{%- set program = webarch.paths.program_dir ~ '/webarch-htaccess-check' %}
---
include:
  - {{ tplroot }}.programs

webarch-htaccess-check:
  file.managed:
    - name: {{ program }}
    - source: salt://{{ tplroot }}/files/programs/webarch_htaccess_check.py
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: webarch-program-lib

# On the chroots' PATH (/usr/local/sbin is not).
webarch-htaccess-check-link:
  file.symlink:
    - name: {{ webarch.paths.account_program_dir }}/webarch-htaccess-check
    - target: {{ program }}
    - require:
      - file: webarch-htaccess-check

webarch-htaccess-report-units:
  file.managed:
    - names:
{%- for suffix in ('service', 'timer') %}
      - {{ webarch.paths.systemd_dir }}/{{ unit }}.{{ suffix }}:
        - source: salt://{{ tplroot }}/files/systemd/webarch-htaccess-report.{{ suffix }}
{%- endfor %}
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-htaccess-report-units

webarch-htaccess-report-timer:
  service.running:
    - name: {{ unit }}.timer
    - enable: true
    {{- service_requisites('require', ['module: webarch-htaccess-report-units',
                                       'file: webarch-htaccess-check',
                                       'file: webarch-program-lib']) }}
