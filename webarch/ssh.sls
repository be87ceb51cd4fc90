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

# sshd runs in the chroots' mount namespace (webarch-chroots.service), where
# the accounts' chroots have their mounts; the host's own mounts reach that
# namespace too, so the admins' sessions see the host as before.  Wants=, not
# Requires=, and --or-host: were the namespace missing, sshd still starts (in
# the host's namespace) and the admins can still log in.
webarch-sshd-namespace:
  file.managed:
    - name: {{ webarch.paths.systemd_dir }}/ssh.service.d/50-webarch-chroots.conf
    - contents: |
        # Managed by Salt (webarch): sshd in the chroots' mount namespace.
        [Unit]
        Wants={{ webarch.paths.chroot_ns_unit }}.service
        After={{ webarch.paths.chroot_ns_unit }}.service
        [Service]
        ExecStart=
        ExecStart={{ webarch.paths.program_dir }}/{{ webarch.paths.chroot_ns_unit }} exec --or-host -- /usr/sbin/sshd -D $SSHD_OPTS
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-sshd-namespace

webarch-sshd-service:
  service.running:
    - name: ssh
    - enable: true
    - reload: true
    - require:
      - module: webarch-sshd-namespace
    {{- service_requisites('watch', ['file: webarch-sshd-config']) }}

# A reload does not move sshd: it starts again in the namespace (the open
# sessions stay: KillMode=process).
webarch-sshd-restart-into-namespace:
  cmd.run:
    - name: systemctl restart ssh
    - onchanges:
      - file: webarch-sshd-namespace
    - require:
      - service: webarch-sshd-service
      - service: webarch-chroots-service
