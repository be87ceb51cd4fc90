# -*- coding: utf-8 -*-
# vim: ft=sls
---
include:
  - .packages
  - .registry
  - .users
  - .chroot
  - .ssh
  - .php
  - .apache
  - .mariadb
  - .remove
