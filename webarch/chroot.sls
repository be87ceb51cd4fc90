# -*- coding: utf-8 -*-
# vim: ft=sls
# Each present account's chroot: a root-owned skeleton (webarch_chroot) and its
# bind mounts.  The mounts live in a mount namespace of their own (not PID 1's:
# systemd slows down with thousands of mounts), pinned by
# webarch-chroots.service, and are persisted in /etc/webarch/chroots.fstab,
# which that service mounts at boot (webarch_mountns).  The /usr bind is a
# mount slave (webarch_mount makes an older shared one a slave too): the
# sendmail file bind on top of it must not propagate to the host's /usr.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
---
include:
  - {{ tplroot }}.users
  - {{ tplroot }}.mail
  - {{ tplroot }}.programs

webarch-chroot-base:
  file.directory:
    - name: {{ webarch.chroot_base }}
    - user: root
    - group: root
    - mode: '0755'

webarch-chroots-program:
  file.managed:
    - name: {{ webarch.paths.program_dir }}/{{ webarch.paths.chroot_ns_unit }}
    - source: salt://{{ tplroot }}/files/programs/webarch_chroots.py
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: webarch-program-lib

webarch-chroots-unit:
  file.managed:
    - name: {{ webarch.paths.systemd_dir }}/{{ webarch.paths.chroot_ns_unit }}.service
    - source: salt://{{ tplroot }}/files/systemd/webarch-chroots.service.jinja
    - template: jinja
    - context:
        program: {{ webarch.paths.program_dir }}/{{ webarch.paths.chroot_ns_unit }}
        base: {{ webarch.chroot_base }}
        ns: {{ webarch.paths.chroot_ns }}
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-chroots-unit

# Pins the namespace (and mounts the fstab's lines): the mounts below go there.
# Its first start seconds after boot once failed to pin (EINVAL, ten tries in
# 5 s) where the next start did at once: a failed start is started again
# (Restart= in the unit too), so that it is also enabled in this run.
webarch-chroots-service:
  service.running:
    - name: {{ webarch.paths.chroot_ns_unit }}
    - enable: true
    - retry:
        attempts: 3
        interval: 2
    - require:
      - file: webarch-chroot-base
      - module: webarch-chroots-unit
    - watch:
      - file: webarch-chroots-program
      - file: webarch-program-lib

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
    - config: {{ webarch.paths.chroot_fstab }}
    - base: {{ webarch.chroot_base }}
    - require:
      - webarch_chroot: webarch-{{ name }}-chroot
      - service: webarch-chroots-service
{%-     if mount.id == 'mail' %}
      - file: webarch-mail-gate-dir
{%-     elif mount.id == 'sendmail' %}
      - webarch_mount: webarch-{{ name }}-mount-usr
{%-     endif %}
{%-   endfor %}
{%- endfor %}
