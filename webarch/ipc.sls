# -*- coding: utf-8 -*-
# vim: ft=sls
# System V IPC is shared by the whole host (chroots do not separate it): unless
# the pillar sets sysv_ipc: true, no account can make a shared memory segment or
# a message queue that another account could read.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
---
{%- for key, value in webarch.sysctls | dictsort %}

webarch-sysctl-{{ key }}:
  sysctl.present:
    - name: {{ key }}
    - value: {{ value }}
    - config: {{ webarch.paths.sysctl_conf }}
{%- endfor %}
