# -*- coding: utf-8 -*-
# vim: ft=sls
# A PHP-FPM pool per present account: as the account, in its chroot.  Each pool
# file is checked alone with php-fpm -t before it is put in place, so a bad
# pool is refused and the others keep running.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set php = webarch.php_version %}
{%- set fpm = webarch.php_fpm %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.chroot

webarch-fpm-check-script:
  file.managed:
    - name: {{ webarch.paths.program_dir }}/webarch-fpm-check
    - source: salt://{{ tplroot }}/files/programs/webarch-fpm-check.sh
    - user: root
    - group: root
    - mode: '0755'

# Debian's own pool runs PHP as www-data, outside any chroot: a .htaccess that
# steered a request to it would run an account's PHP with the web server's
# rights.  It goes; a pool nobody can reach keeps php-fpm valid with no account.
webarch-fpm-default-pool:
  file.absent:
    - name: {{ fpm.default_pool }}
    - require:
      - file: webarch-fpm-idle-pool

webarch-fpm-idle-pool:
  file.managed:
    - name: {{ fpm.idle_pool }}
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: {{ webarch.paths.program_dir }}/webarch-fpm-check {{ php }}
    - contents: |
        ; Managed by Salt (webarch): a pool that no one can reach (a root-only
        ; socket) and that never starts a worker; php-fpm needs one pool.
        [webarch-idle]
        user = nobody
        group = nogroup
        listen = {{ fpm.idle_socket }}
        listen.owner = root
        listen.group = root
        listen.mode = 0600
        pm = ondemand
        pm.max_children = 1
    - require:
      - pkg: webarch-packages
      - file: webarch-fpm-check-script

# System V IPC is shared by the whole host (a chroot does not separate it):
# the pools get no PHP functions for it (phpdismod keeps that over upgrades).
webarch-fpm-no-sysv-ipc:
  cmd.run:
    - name: phpdismod -v {{ php }} -s fpm {{ webarch.php_fpm_modules_off | join(' ') }}
    - onlyif: >-
        ls {{ fpm.conf_dir }}/ |
        grep -Eq -- '-({{ webarch.php_fpm_modules_off | join('|') }})\.ini$'
    - require:
      - pkg: webarch-packages

{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}

# The pool's PHP writes its error log from inside the chroot, as the account;
# php-fpm itself (root) writes the slow log.  Both readable by the account.
webarch-{{ name }}-php-error-log:
  file.managed:
    - name: {{ account.pool.error_log }}
    - user: {{ name }}
    - group: {{ name }}
    - mode: '0640'
    - replace: false
    - require:
      - file: webarch-{{ name }}-dir-logs

webarch-{{ name }}-php-slow-log:
  file.managed:
    - name: {{ account.pool.slow_log }}
    - user: root
    - group: {{ name }}
    - mode: '0640'
    - replace: false
    - require:
      - file: webarch-{{ name }}-dir-logs
    - require_in:
      - file: webarch-{{ name }}-fpm-pool

webarch-{{ name }}-fpm-pool:
  file.managed:
    - name: {{ account.pool.file }}
    - source: salt://{{ tplroot }}/files/templates/fpm-pool.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: {{ webarch.paths.program_dir }}/webarch-fpm-check {{ php }}
    - context:
        account: {{ account | json }}
        php: {{ account.php | json }}
        web_user: {{ webarch.web_user }}
        mariadb_socket: {{ webarch.paths.mariadb_socket }}
    - require:
      - pkg: webarch-packages
      - file: webarch-fpm-check-script
      - file: webarch-{{ name }}-php-error-log
      - webarch_chroot: webarch-{{ name }}-chroot
{%- endfor %}

webarch-fpm-service:
  service.running:
    - name: {{ fpm.service }}
    - enable: true
    - reload: true
    - require:
      - pkg: webarch-packages
{%- set watched = ['file: webarch-fpm-check-script', 'cmd: webarch-fpm-no-sysv-ipc',
                   'file: webarch-fpm-idle-pool', 'file: webarch-fpm-default-pool'] %}
{%- for name in webarch.present %}
{%-   do watched.append('file: webarch-' ~ name ~ '-fpm-pool') %}
{%- endfor %}
    {{- service_requisites('watch_any', watched) }}
