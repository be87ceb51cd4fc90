# -*- coding: utf-8 -*-
# vim: ft=sls
---
include:
  - .packages
  - .programs
  - .registry
  - .ipc
  - .users
  - .mail
  - .chroot
  - .ssh
  - .php
  - .apache
  - .htaccess
  - .mariadb
  - .apps
  - .notify
  - .matomo
  - .remove
