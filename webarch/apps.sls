# -*- coding: utf-8 -*-
# vim: ft=sls
# The sites' applications (WordPress, MediaWiki): installed by webarch_app into
# a site's empty document root as the account, in its chroot; an application
# already there (installed by webarch, by hand or imported) is left as it is.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.users
  - {{ tplroot }}.chroot
  - {{ tplroot }}.mariadb

{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}
{%-   for site, app in account.apps.items() %}

webarch-{{ name }}-app-{{ site }}:
  webarch_app.installed:
    - name: {{ app.docroot }}
    - account: {{ name }}
    - site: {{ site }}
    - kind: {{ app.kind }}
    - marker: {{ app.marker }}
    - held: {{ account.suspended }}
    - require:
      - file: webarch-{{ name }}-site-{{ site }}-docroot
      - webarch_chroot: webarch-{{ name }}-chroot
{%-     for mount in account.chroot.mounts %}
      - webarch_mount: webarch-{{ name }}-mount-{{ mount.id }}
{%-     endfor %}
      - mysql_grants: webarch-{{ name }}-db-{{ app.database }}-grant
{%-     if app.source.kind == 'debian' %}
      - pkg: webarch-app-packages
{%-     endif %}
{%-     if app.kind == 'wordpress' %}
{%-       set plugins = app.docroot ~ '/wp-content/mu-plugins' %}
{%-       set tracked = webarch.matomo.on and account.matomo and account.sites[site].matomo == true %}

# The site's Matomo tracking code, as a must-use plugin the formula owns.
webarch-{{ name }}-app-{{ site }}-matomo:
{%-       if tracked %}
  file.managed:
    - name: {{ plugins }}/webarch-matomo.php
    - source: salt://{{ tplroot }}/files/templates/wp-matomo.php.jinja
    - template: jinja
    - context:
        site: {{ site }}
        sites_file: {{ account.home }}/{{ webarch.paths.matomo_sites_file }}
    - makedirs: true
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - webarch_app: webarch-{{ name }}-app-{{ site }}
{%-       else %}
  file.absent:
    - name: {{ plugins }}/webarch-matomo.php
{%-       endif %}
{%-     endif %}
{%-   endfor %}
{%- endfor %}
