# -*- coding: utf-8 -*-
# vim: ft=sls
# Each present account: its group, its user and the standard layout of its home
# (an adopted user, adopt: true, keeps its uid, group and files: only the layout's
# directories are made or get their owner and mode, never their contents).
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
    # An adopted home's own file or symlink in the way fails the run: never
    # replaced, never followed.
    - allow_symlink: false
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

{%- if webarch.present %}

# A suspended account's user expires (sshd refuses its logins, key or
# password) and its processes end; the others' never expire.  One command
# for all accounts, run only when /etc/shadow differs.
{%-   set expired = ' ' ~ webarch.expiry.expired | join(' ') ~ ' ' %}
{%-   set open = ' ' ~ webarch.expiry.open | join(' ') ~ ' ' %}
{%-   set differs = "awk -F: -v s='" ~ expired ~ "' -v a='" ~ open ~ "' "
        ~ "'index(s, \" \" $1 \" \") && $8 != \"1\" {print \"1\", $1} "
        ~ "index(a, \" \" $1 \" \") && $8 != \"\" {print \"off\", $1}' /etc/shadow" %}

webarch-accounts-expiry:
  cmd.run:
    - name: >-
        {{ differs }} | while read expire user; do
        if [ "$expire" = off ]; then usermod --expiredate '' "$user" || exit 1;
        else usermod --expiredate 1 "$user" && { pkill -KILL -u "$user"; true; } || exit 1; fi;
        done
    - onlyif: {{ (differs ~ ' | grep -q .') | json }}
    - require:
{%-   for name in webarch.present %}
      - user: webarch-{{ name }}-user
{%-   endfor %}
{%- endif %}
