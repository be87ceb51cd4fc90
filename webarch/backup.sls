# -*- coding: utf-8 -*-
# vim: ft=sls
# Nightly snapshots of the accounts' homes (webarch:backup).  webarch-backup
# (webarch-backup.timer, after the night's MariaDB dumps) copies each home as
# its account into STORE/USERNAME/days/YYYY-MM-DD (hard links to the day
# before for what did not change); each chroot shows its own days read-only
# at ~/backups/files (the mount is in chroot.sls, from the account's chroot).
# STORE is root's (0711): nobody lists it; each account's rsync reaches its
# own STORE/USERNAME (0700) only, and no account's chroot shows the store.
# On btrfs (webarch:backup:method) a night is a read-only snapshot of each
# home (a subvolume) made by the kernel as STORE/USERNAME/days/YYYY-MM-DD.
# Switched off: the timer and its units go, the store and its days stay.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set backup = webarch.backup %}
{%- set program = webarch.paths.program_dir ~ '/webarch-backup' %}
{%- set units = [webarch.paths.systemd_dir ~ '/' ~ backup.unit ~ '.service',
                 webarch.paths.systemd_dir ~ '/' ~ backup.unit ~ '.timer'] %}
---
include:
  - {{ tplroot }}.programs
  - {{ tplroot }}.users
  - {{ tplroot }}.mariadb
  - {{ tplroot }}.chroot
{%- if backup.enabled %}
{#- btrfs or rsync on this host (webarch:backup:method; auto: btrfs where the
    store is on the btrfs of the homes and they are subvolumes, quotas on). #}
{%-   set plan = salt['webarch_backup.plan'](backup.method, backup.store, webarch.quota.enabled) %}

# Fails (naming webarch:backup:method) when btrfs is asked for and cannot be.
webarch-backup-method:
  webarch_backup.method:
    - name: {{ backup.store }}
    - method: {{ backup.method }}
    - subvolumes: {{ webarch.quota.enabled }}
    - require_in:
      - file: webarch-backup-config
      - file: webarch-backup-units

webarch-backup-program:
  file.managed:
    - names:
      - {{ program }}:
        - source: salt://{{ tplroot }}/files/programs/webarch_backup.py
        - mode: '0755'
      - {{ webarch.paths.program_lib_dir }}/webarch_backup_btrfs.py:
        - source: salt://_utils/webarch_backup_btrfs.py
        - mode: '0644'
    - user: root
    - group: root
    - require:
      - file: webarch-program-lib

webarch-backup-store:
  file.directory:
    - name: {{ backup.store }}
    - user: root
    - group: root
    - mode: '0711'
    - makedirs: true

webarch-backup-log-dir:
  file.directory:
    - name: {{ backup.log_dir }}
    - user: root
    - group: root
    - mode: '0700'

webarch-backup-config:
  file.serialize:
    - name: {{ backup.config_path }}
    - dataset: {{ dict(backup.config, method=plan.method) | json }}
    - serializer: json
    - user: root
    - group: root
    - mode: '0600'
{%-   for name in backup.accounts if name in webarch.present %}
{%-     set account = webarch.accounts[name] %}

# STORE/USERNAME: the account's (its rsync writes the night there); days/:
# root's, read by the account (the night is renamed into it when complete).
webarch-{{ name }}-backup-store:
  file.directory:
    - name: {{ backup.store }}/{{ name }}
    - user: {{ name }}
    - group: {{ name }}
    - mode: '0700'
    - require:
      - file: webarch-backup-store
      - user: webarch-{{ name }}-user

# The mount point in ~/backups (root's: the account cannot replace it) and
# what is mounted there: both root:USERNAME 0750, so the point reads the same
# mounted or not.
webarch-{{ name }}-backup-days:
  file.directory:
    - names:
      - {{ backup.store }}/{{ name }}/{{ backup.days_dir }}:
        - require:
          - file: webarch-{{ name }}-backup-store
      - {{ account.home }}/{{ backup.mount_dir }}:
        - require:
          - file: webarch-{{ name }}-backups-dir
    - user: root
    - group: {{ name }}
    - mode: '0750'
    - require_in:
      - webarch_mount: webarch-{{ name }}-mount-backups
{%-   endfor %}

webarch-backup-units:
  file.managed:
    - names:
      - {{ units[0] }}:
        - source: salt://{{ tplroot }}/files/systemd/{{ backup.unit }}.service.jinja
        - context:
            program: {{ program }}
            store: {{ backup.store }}
            state_dir: {{ webarch.paths.state_dir }}
            snapshots: {{ plan.method == 'btrfs' }}
      - {{ units[1] }}:
        - source: salt://{{ tplroot }}/files/systemd/{{ backup.unit }}.timer.jinja
        - context:
            calendar: '{{ backup.on_calendar }}'
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-backup-units

webarch-backup-timer:
  service.running:
    - name: {{ backup.unit }}.timer
    - enable: true
    {{- service_requisites('require', ['module: webarch-backup-units',
                                       'file: webarch-backup-program',
                                       'file: webarch-backup-config',
                                       'file: webarch-backup-store']) }}
{%- else %}

# Snapshots off: no timer left from when they were on (the store stays).
webarch-backup-stop:
  service.dead:
    - name: {{ backup.unit }}.timer
    - enable: false
    - prereq:
      - file: webarch-backup-absent

webarch-backup-absent:
  file.absent:
    - names: {{ (units + [program, backup.config_path,
                 webarch.paths.program_lib_dir ~ '/webarch_backup_btrfs.py']) | json }}
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-backup-absent
{%- endif %}
