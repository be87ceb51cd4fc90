# -*- coding: utf-8 -*-
# vim: ft=sls
---
include:
  - .registry
  - .users
  - .chroot
  - .ssh
  - .remove
