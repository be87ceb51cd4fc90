# -*- coding: utf-8 -*-
# vim: ft=sls
---
include:
  - .packages
  - .registry
  - .users
  - .mail
  - .chroot
  - .ssh
  - .php
  - .apache
  - .mariadb
  - .notify
  - .remove
