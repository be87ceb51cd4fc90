# -*- coding: utf-8 -*-
# vim: ft=sls
---
include:
  - .packages
  - .programs
  - .registry
  - .ipc
  - .users
  - .quota
  - .mail
  - .chroot
  - .ssh
  - .php
  - .apache
  - .htaccess
  - .cron
  - .firewall
  - .mariadb
  - .apps
  - .notify
  - .matomo
  - .remove
