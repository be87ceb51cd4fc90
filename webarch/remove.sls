# -*- coding: utf-8 -*-
# vim: ft=sls
# Accounts switched to absent: stop their processes, unmount their chroot,
# archive their home (verified), then delete the user.  Sites switched to
# absent: out of Apache first, then their application's database dumped and
# their tree archived (both verified), then the tree deleted.  Nothing is lost.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
---
include:
  - {{ tplroot }}.registry
  - {{ tplroot }}.php
  - {{ tplroot }}.apache
  - {{ tplroot }}.mariadb

{%- for name in webarch.remove %}
{%-   set account = webarch.accounts[name] %}

webarch-{{ name }}-remove-apache-site:
  apache_site.disabled:
    - name: {{ account.apache.site }}
    {{- service_requisites('watch', ['service: webarch-apache-service'], '_in') }}
  file.absent:
    - name: {{ account.apache.file }}
    - require:
      - apache_site: webarch-{{ name }}-remove-apache-site
    {{- service_requisites('watch', ['service: webarch-apache-service'], '_in') }}

# Its rendered file too (a full run's clean of the staging directory would;
# a run limited by webarch_only does not clean): else it would go live again.
webarch-{{ name }}-remove-apache-staged:
  file.absent:
    - name: {{ webarch.paths.apache_staging_dir }}/{{ account.apache.site }}.conf
    - require_in:
      - cmd: webarch-apache-sites-install

webarch-{{ name }}-remove-php-socket:
  service.dead:
    - name: {{ account.pool.socket_unit }}
    - enable: false

webarch-{{ name }}-remove-php-service:
  service.dead:
    - name: {{ account.pool.unit }}
    - require:
      - service: webarch-{{ name }}-remove-php-socket

webarch-{{ name }}-remove-fpm-pool:
  file.absent:
    - names:
      - {{ account.pool.file }}
      - {{ account.pool.old_file }}
      - {{ webarch.paths.systemd_dir }}/{{ account.pool.unit }}.d
      - {{ webarch.paths.systemd_dir }}/{{ account.pool.socket_unit }}.d
    - require:
      - service: webarch-{{ name }}-remove-php-service

# Its slice's limits go before its user (the slice is named after the uid).
webarch-{{ name }}-remove-limits:
  webarch_limits.absent:
    - name: {{ name }}
    - require:
      - cmd: webarch-{{ name }}-remove-processes
    - require_in:
      - user: webarch-{{ name }}-remove-user

webarch-{{ name }}-remove-processes:
  cmd.run:
    - name: pkill -KILL -u {{ name }}; sleep 1
    - onlyif: pgrep -u {{ name }}
    - require:
      - service: webarch-{{ name }}-remove-php-service
      - service: webarch-apache-service

{%-   for mount in account.chroot.mounts | reverse %}

webarch-{{ name }}-unmount-{{ mount.id }}:
  webarch_mount.unmounted:
    - name: {{ mount.name }}
    - config: {{ webarch.paths.chroot_fstab }}
    - base: {{ webarch.chroot_base }}
    - require:
      - cmd: webarch-{{ name }}-remove-processes
    - require_in:
      - webarch_chroot: webarch-{{ name }}-remove-chroot
{%-   endfor %}

webarch-{{ name }}-remove-chroot:
  webarch_chroot.absent:
    - name: {{ name }}
    - path: {{ account.chroot.path }}

# Its snapshots: moved aside, root's alone (a new account of that name never
# sees them); they expire after webarch:backup:days like any other day.
webarch-{{ name }}-backup-retire:
  cmd.run:
    - name: >-
        to={{ webarch.backup.store }}/{{ webarch.backup.retired_prefix }}{{ name }}-$(date -u +%Y%m%dT%H%M%SZ)
        && mv -T -- {{ webarch.backup.store }}/{{ name }} "$to"
        && chown root:root "$to" && chmod 0700 "$to"
    - onlyif: test -d {{ webarch.backup.store }}/{{ name }}
    - require:
      - webarch_chroot: webarch-{{ name }}-remove-chroot

webarch-{{ name }}-archive-home:
  webarch_archive.home_archived:
    - name: {{ name }}
    - home: {{ account.home }}
    - archive_dir: {{ webarch.archive_dir }}
    - require:
      - webarch_chroot: webarch-{{ name }}-remove-chroot

webarch-{{ name }}-remove-authorized-keys:
  file.absent:
    - name: {{ account.ssh.authorized_keys }}
    - require:
      - webarch_archive: webarch-{{ name }}-archive-home

webarch-{{ name }}-remove-user:
  user.absent:
    - name: {{ name }}
    - purge: false
    - require:
      - webarch_archive: webarch-{{ name }}-archive-home

# A password still waiting to be mailed (the MTA refused it) is of no use, and
# no secret should outlive its account.
webarch-{{ name }}-remove-notify-spool:
  file.absent:
    - names: {{ account.notify.spool | json }}
    - require:
      - user: webarch-{{ name }}-remove-user

webarch-{{ name }}-remove-group:
  group.absent:
    - name: {{ name }}
    - require:
      - user: webarch-{{ name }}-remove-user

webarch-{{ name }}-unregister:
  file.line:
    - name: {{ webarch.registry.path }}
    - content: {{ name }}
    - mode: delete
    - require:
      - group: webarch-{{ name }}-remove-group
      - file: webarch-registry
{%- endfor %}

{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}
{%-   for site in account.sites_removed %}

webarch-{{ name }}-site-{{ site.name }}-archived:
  webarch_archive.tree_archived:
    - name: {{ site.archive_name }}
    - path: {{ site.root }}
    - archive_dir: {{ site.archive_dir }}
    - databases: {{ site.databases | json }}
    - dump_dir: {{ site.dump_dir }}
    - stage_dir: {{ site.stage_dir }}
    - require:
      # Apache serves the account's site file without it first.
      - service: webarch-apache-service
      - service: webarch-mariadb-service
{%-     for dbname in site.databases if dbname in account.mariadb.absent %}
    - require_in:
      - webarch_mariadb: webarch-{{ name }}-db-{{ dbname }}-absent
{%-     endfor %}

webarch-{{ name }}-site-{{ site.name }}-leftovers:
  file.absent:
    - names: {{ site.leftovers | json }}
    - require:
      - webarch_archive: webarch-{{ name }}-site-{{ site.name }}-archived
{%-   endfor %}
{%- endfor %}
