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
  - .limits
  - .mail
  - .chroot
  - .ssh
  - .php
  - .apache
  - .htaccess
  - .cron
  - .firewall
  - .fail2ban
  - .hardening
  - .updates
  - .mariadb
  - .backup
  - .apps
  - .notify
  - .matomo
  - .remove
