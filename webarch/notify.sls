# -*- coding: utf-8 -*-
# vim: ft=sls
# Generated SSH and MariaDB passwords, mailed once to the account's address
# (webarch_notify).  Masterless, the state run mails them; with a master, it
# fires webarch/notify/ACCOUNT/KIND and the reactor shipped in
# webarch/reactor/notify.sls mails them from this minion.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch with context %}
---
include:
  - {{ tplroot }}.users
  - {{ tplroot }}.mail
  - {{ tplroot }}.mariadb
  - {{ tplroot }}.matomo
  - {{ tplroot }}.apps

{%- set local = webarch.matomo.local %}
{%- set matomo_local = local and local.account in webarch.present %}
{%- for name in webarch.notify_accounts %}
{%-   set account = webarch.accounts[name] %}
{%-   for kind, notify in account.notify.kinds.items() %}

webarch-{{ name }}-notify-{{ kind }}:
  webarch_notify.password_sent:
    - name: {{ name }}
    - kind: {{ kind }}
    - token: {{ notify.token | json }}
    - marker: {{ notify.marker }}
    - via: {{ webarch.notify.via }}
    - require:
      - user: webarch-{{ name }}-user
      - file: webarch-{{ name }}-dir-home
      - service: webarch-mail-exim-service
{%-     if kind == 'mariadb' %}
      - mysql_user: webarch-{{ name }}-mariadb-user
{%-     elif kind == 'matomo' and matomo_local %}
      - webarch_matomo: webarch-matomo-configured
{%-     elif kind.startswith('app-') %}
      - webarch_app: webarch-{{ name }}-{{ kind }}
{%-     endif %}
{%-   endfor %}
{%- endfor %}

{%- if webarch.notify['from'] %}

# Notification mail Exim still holds (its relay was down): try again now.
webarch-notify-queue:
  webarch_notify.queue_delivered:
    - name: {{ webarch.notify['from'] }}
    - require:
      - service: webarch-mail-exim-service
{%- endif %}
