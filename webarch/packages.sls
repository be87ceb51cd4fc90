# -*- coding: utf-8 -*-
# vim: ft=sls
# The Debian packages of the parts webarch manages, and of the applications
# the sites' app blocks install from Debian.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
---
webarch-packages:
  pkg.installed:
    - pkgs: {{ salt['webarch.packages']() | json }}
{%- if webarch.app_packages %}

webarch-app-packages:
  pkg.installed:
    - pkgs: {{ webarch.app_packages | json }}
    - require:
      - pkg: webarch-packages
{%- endif %}
