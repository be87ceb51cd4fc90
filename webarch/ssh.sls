# -*- coding: utf-8 -*-
# vim: ft=sls
# sshd: accounts log in by key (from root-owned files) into their chroots.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
---
include:
  - {{ tplroot }}.chroot

webarch-ssh-authorized-keys-dir:
  file.directory:
    - name: {{ webarch.paths.ssh_authorized_keys_dir }}
    - user: root
    - group: root
    - mode: '0755'

{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}

webarch-{{ name }}-authorized-keys:
  file.managed:
    - name: {{ account.ssh.authorized_keys }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ (["# Managed by Salt (webarch): keys of " ~ name] + account.ssh['keys']) | json }}
    - require:
      - file: webarch-ssh-authorized-keys-dir
    - require_in:
      - file: webarch-sshd-config
{%- endfor %}

webarch-sshd-config:
  file.managed:
    - name: {{ webarch.paths.sshd_config }}
    - source: salt://{{ tplroot }}/files/templates/sshd_config.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/sbin/sshd -t -f
    - context:
        password_accounts: {{ webarch.ssh_password_accounts | json }}
        account_group: {{ webarch.account_group }}
        chroot_base: {{ webarch.chroot_base }}
        authorized_keys_dir: {{ webarch.paths.ssh_authorized_keys_dir }}
    - require:
      - sls: {{ tplroot }}.chroot

webarch-sshd-service:
  service.running:
    - name: ssh
    - enable: true
    - reload: true
    {{- service_requisites('watch', ['file: webarch-sshd-config']) }}
