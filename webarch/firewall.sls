# -*- coding: utf-8 -*-
# vim: ft=sls
# The accounts' outbound connections: one nftables table (inet webarch),
# matched on the socket owner's uid.  Their SMTP goes only through the host's
# Exim (which fixes the envelope sender); the rest is open unless
# deny_other.  Loaded by webarch-firewall.service, checked (nft -c) before it
# is put in place; the host's other tables are not touched.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set firewall = webarch.firewall %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.users

webarch-firewall-rules:
  file.managed:
    - name: {{ firewall.path }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ firewall.text | json }}
    - check_cmd: /usr/sbin/nft -c -f
    - require:
      - pkg: webarch-packages
{%- for name in webarch.present %}
      - user: webarch-{{ name }}-user
{%- endfor %}

webarch-firewall-unit:
  file.managed:
    - name: {{ webarch.paths.systemd_dir }}/{{ firewall.unit }}.service
    - source: salt://{{ tplroot }}/files/systemd/webarch-firewall.service
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-firewall-unit

webarch-firewall-service:
  service.running:
    - name: {{ firewall.unit }}
    - enable: true
    # A change of rules: ExecReload, the new table replaces the old atomically.
    - reload: true
    - require:
      - module: webarch-firewall-unit
    {{- service_requisites('watch', ['file: webarch-firewall-rules']) }}
