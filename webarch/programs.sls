# -*- coding: utf-8 -*-
# vim: ft=sls
# The helper modules of webarch's Python programs (webarch-mail-gate,
# webarch-mail-log, webarch-log-split): each program puts this directory first
# on sys.path and imports webarch_progs (their shared helpers) and
# webarch_paths (the formula's paths and names) from it, webarch-log-split and
# webarch-htaccess-check also webarch_htaccess (the .htaccess policy and its
# checker), webarch-chroots webarch_mountns (the chroots' mount namespace).
# The services that run a program watch webarch-program-lib as well as the
# program.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
{%- set lib = webarch.paths.program_lib_dir %}
---
webarch-program-lib-dir:
  file.directory:
    - name: {{ lib }}
    - user: root
    - group: root
    - mode: '0755'

webarch-program-lib:
  file.managed:
    - names:
      - {{ lib }}/webarch_progs.py:
        - source: salt://{{ tplroot }}/files/programs/webarch_progs.py
      - {{ lib }}/webarch_paths.py:
        - source: salt://_utils/webarch_paths.py
      - {{ lib }}/webarch_htaccess.py:
        - source: salt://_utils/webarch_htaccess.py
      - {{ lib }}/webarch_cron.py:
        - source: salt://_utils/webarch_cron.py
      - {{ lib }}/webarch_mountns.py:
        - source: salt://_utils/webarch_mountns.py
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: webarch-program-lib-dir
