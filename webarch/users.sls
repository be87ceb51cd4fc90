# -*- coding: utf-8 -*-
# vim: ft=sls
# Each present account: its group, its user and the standard layout of its home.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
---
include:
  - {{ tplroot }}.registry

# Every hosting account is a member: sshd chroots the members of this group.
webarch-account-group:
  group.present:
    - name: {{ webarch.account_group }}
    - system: true

{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}

webarch-{{ name }}-group:
  group.present:
    - name: {{ name }}
{%-   if account.gid %}
    - gid: {{ account.gid }}
{%-   endif %}
    - require:
      - file: webarch-registry

webarch-{{ name }}-user:
  user.present:
    - name: {{ name }}
{%-   if account.uid %}
    - uid: {{ account.uid }}
{%-   endif %}
    - gid: {{ name }}
    - groups:
      - {{ webarch.account_group }}
    - home: {{ account.home }}
    - createhome: false
    - shell: {{ account.shell }}
    - fullname: {{ account.fullname | json }}
    - require:
      - group: webarch-{{ name }}-group
      - group: webarch-account-group

{%-   for dir in account.dirs %}

webarch-{{ name }}-dir-{{ dir.id }}:
  file.directory:
    - name: {{ dir.path }}
    - user: {{ dir.user }}
    - group: {{ dir.group }}
    - mode: '{{ dir.mode }}'
    - require:
      - user: webarch-{{ name }}-user
{%-   endfor %}

{%-   for site_name, site in account.sites.items() %}

webarch-{{ name }}-site-{{ site_name }}-docroot:
  file.directory:
    - name: {{ site.docroot }}
    - user: {{ name }}
    - group: {{ webarch.web_user }}
    - mode: '2750'
    - makedirs: true
    - require:
      - file: webarch-{{ name }}-dir-sites
{%-   endfor %}
{%- endfor %}
