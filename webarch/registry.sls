# -*- coding: utf-8 -*-
# vim: ft=sls
# The list of Unix accounts webarch created or took over.  A host user missing
# from it is never touched.  Written before any user is created, so a run
# interrupted after this state re-converges.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
---
webarch-registry:
  file.managed:
    - name: {{ webarch.registry.path }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: true
    - dir_mode: '0700'
    - contents: {{ webarch.registry.lines | json }}
