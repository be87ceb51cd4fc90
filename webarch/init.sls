# -*- coding: utf-8 -*-
# vim: ft=sls
---
include:
  - .packages
  - .registry
  - .ipc
  - .users
  - .mail
  - .chroot
  - .ssh
  - .php
  - .apache
  - .mariadb
  - .notify
  - .remove
