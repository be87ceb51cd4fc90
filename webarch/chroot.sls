# -*- coding: utf-8 -*-
# vim: ft=sls
# Each present account's chroot: a root-owned skeleton (webarch_chroot) and its
# bind mounts, persisted in /etc/fstab so that they come back at boot.  The /usr
# bind is a mount slave (webarch_mount makes an older shared one a slave too):
# the sendmail file bind on top of it must not propagate to the host's /usr.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
---
include:
  - {{ tplroot }}.users
  - {{ tplroot }}.mail

webarch-chroot-base:
  file.directory:
    - name: {{ webarch.chroot_base }}
    - user: root
    - group: root
    - mode: '0755'

{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}

webarch-{{ name }}-chroot:
  webarch_chroot.present:
    - name: {{ name }}
    - path: {{ account.chroot.path }}
    - home: {{ account.home }}
    - web_user: {{ webarch.web_user }}
    - files:
        etc/msmtprc: {{ (account.mail.msmtprc.lines | join('\n') ~ '\n') | json }}
    - require:
      - file: webarch-chroot-base
      - user: webarch-{{ name }}-user
      - file: webarch-{{ name }}-dir-tmp

{%-   for mount in account.chroot.mounts %}

webarch-{{ name }}-mount-{{ mount.id }}:
  webarch_mount.mounted:
    - name: {{ mount.name }}
    - device: {{ mount.device }}
    - fstype: {{ mount.fstype }}
    - opts: {{ mount.opts | json }}
    - persist: true
    - mkmnt: false
    - bind_mount_copy_active_opts: false
    - extra_mount_invisible_keys:
      - x-systemd.after
    - extra_mount_invisible_options:
      - slave
    - require:
      - webarch_chroot: webarch-{{ name }}-chroot
{%-     if mount.id == 'mail' %}
      - file: webarch-mail-gate-dir
{%-     elif mount.id == 'sendmail' %}
      - webarch_mount: webarch-{{ name }}-mount-usr
{%-     endif %}
{%-   endfor %}
{%- endfor %}
