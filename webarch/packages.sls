# -*- coding: utf-8 -*-
# vim: ft=sls
# The Debian packages of the parts webarch manages.
---
webarch-packages:
  pkg.installed:
    - pkgs: {{ salt['webarch.packages']() | json }}
