# -*- coding: utf-8 -*-
# vim: ft=sls
# Matomo: the server's instance in its account's matomo site (verified
# release, headless install, settings, core:archive timer), then a Matomo
# user per account and a website per site (webarch_matomo states: one read of
# Matomo per run, writes only for differences).  Nothing else in the run
# depends on these states: when Matomo is down, only they fail.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
{%- set matomo = webarch.matomo %}
{%- set local = matomo.local %}
{%- set matomo_local = local and local.account in webarch.present %}
---
include:
  - {{ tplroot }}.mail
  - {{ tplroot }}.users
  - {{ tplroot }}.php
  - {{ tplroot }}.mariadb
  - {{ tplroot }}.notify

{%- if matomo.on %}

webarch-matomo-state-dir:
  file.directory:
    - name: {{ webarch.paths.matomo_state_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: true
{%- endif %}

{%- if matomo_local %}
{%-   set release = webarch.paths.matomo_releases_dir ~ '/matomo-' ~ local.archive.sha256[:16] ~ '.tar.gz' %}

webarch-matomo-release:
  file.managed:
    - name: {{ release }}
    - source: {{ local.archive.source }}
    - source_hash: sha256={{ local.archive.sha256 }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: true
    - require:
      - file: webarch-matomo-state-dir

webarch-matomo-instance-file:
  file.serialize:
    - name: {{ webarch.paths.matomo_instance_path }}
    - dataset:
        host: {{ local.server_name }}
        socket: {{ local.socket }}
        docroot: {{ local.docroot }}
        url: {{ local.url }}
    - serializer: json
    - user: root
    - group: root
    - mode: '0600'
    - require:
      - file: webarch-matomo-state-dir

webarch-matomo-installed:
  webarch_matomo.installed:
    - name: {{ local.docroot }}
    - archive: {{ release }}
    - sha256: {{ local.archive.sha256 }}
    - require:
      - file: webarch-matomo-release
      - file: webarch-matomo-instance-file
      - file: webarch-{{ local.account }}-site-{{ local.site }}-docroot
      - service: webarch-{{ local.account }}-php-socket
      - mysql_grants: webarch-{{ local.account }}-db-{{ local.database }}-grant

{%-   if local.geoip %}

# Matomo never downloads a GeoIP database: the pillar's copy, in its misc/.
webarch-matomo-geoip-dir:
  file.directory:
    - name: {{ local.geoip.dir }}
    - user: {{ local.account }}
    - group: {{ webarch.web_user }}
    - mode: '2750'
    - require:
      - webarch_matomo: webarch-matomo-installed

webarch-matomo-geoip:
  file.managed:
    - name: {{ local.geoip.path }}
    - source: {{ local.geoip.source }}
    - user: {{ local.account }}
    - group: {{ webarch.web_user }}
    - mode: '0640'
    - require:
      - file: webarch-matomo-geoip-dir
{%-   endif %}

webarch-matomo-configured:
  webarch_matomo.configured:
    - name: {{ local.docroot }}
    - require:
      - webarch_matomo: webarch-matomo-installed
{%-   if local.geoip %}
      - file: webarch-matomo-geoip
{%-   endif %}

{%-   if local.superuser %}

webarch-matomo-superuser:
  webarch_matomo.superuser_sent:
    - name: {{ local.superuser.login }}
    - require:
      - webarch_matomo: webarch-matomo-configured
      - service: webarch-mail-exim-service
{%-   endif %}

webarch-matomo-archive-units:
  file.managed:
    - names:
      - {{ webarch.paths.systemd_dir }}/{{ local.timer }}.service:
        - source: salt://{{ tplroot }}/files/systemd/webarch-matomo-archive.service.jinja
      - {{ webarch.paths.systemd_dir }}/{{ local.timer }}.timer:
        - source: salt://{{ tplroot }}/files/systemd/webarch-matomo-archive.timer.jinja
    - template: jinja
    - context:
        local: {{ local | json }}
        minutes: {{ matomo.archive_minutes }}
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-matomo-archive-units

webarch-matomo-archive-timer:
  service.running:
    - name: {{ local.timer }}.timer
    - enable: true
    - require:
      - module: webarch-matomo-archive-units
      - webarch_matomo: webarch-matomo-configured
{%- endif %}

{%- if matomo.on %}
{%-   for name in matomo.users if name in webarch.present %}
{%-     set want = matomo.wanted[name] %}

webarch-{{ name }}-matomo-user:
  webarch_matomo.user_present:
    - name: {{ name }}
    - require:
      - webarch_notify: webarch-{{ name }}-notify-matomo
{%-     for site_name, site in want.sites | dictsort %}

webarch-{{ name }}-matomo-site-{{ site_name }}:
  webarch_matomo.{{ 'site_absent' if site.absent else 'site_present' }}:
    - name: {{ name }}/{{ site_name }}
{%-       if matomo_local %}
    - require:
      - webarch_matomo: webarch-matomo-installed
{%-       endif %}
{%-     endfor %}

webarch-{{ name }}-matomo-access:
  webarch_matomo.access:
    - name: {{ name }}
    - require:
      - webarch_matomo: webarch-{{ name }}-matomo-user
{%-     for site_name in want.sites %}
      - webarch_matomo: webarch-{{ name }}-matomo-site-{{ site_name }}
{%-     endfor %}
{%-   endfor %}
{%-   if webarch.only is none %}

# Whatever the states above do not name: users of accounts removed from the
# pillar (their websites and data stay), access to sites switched off.
webarch-matomo-synced:
  webarch_matomo.synced:
    - name: all
    - require:
{%-     for name in matomo.users %}
      - webarch_matomo: webarch-{{ name }}-matomo-access
{%-     endfor %}
{%-     if matomo_local %}
      - webarch_matomo: webarch-matomo-installed
{%-     endif %}
{%-   endif %}
{%- endif %}
