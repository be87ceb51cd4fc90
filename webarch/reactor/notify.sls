# -*- coding: utf-8 -*-
# vim: ft=sls
# Reactor for webarch/notify/ACCOUNT/KIND: mail the pending password from the
# minion that fired the event.  The event carries the account and the kind
# only; the minion checks both against its own pillar (webarch_notify.send: a
# present account of the model, a kind it knows) and takes the address, names
# and texts from there (never from the event).  Here both need only be plain
# tokens, so that nothing from the event can shape this SLS.
{%- set payload = data.get('data', {}) %}
{%- set account = payload.get('account', '') | string %}
{%- set kind = payload.get('kind', '') | string %}
{%- if account | regex_match('^([a-z0-9-]{1,64})$') and kind | regex_match('^(ssh|mariadb|matomo|app-[a-z0-9-]{1,63})$') %}
---
webarch-notify-{{ account }}-{{ kind }}:
  local.webarch_notify.send:
    - tgt: {{ data['id'] | json }}
    - tgt_type: list
    - args:
      - account: {{ account }}
      - kind: {{ kind }}
{%- endif %}
