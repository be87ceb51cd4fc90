# -*- coding: utf-8 -*-
# vim: ft=sls
# A PHP-FPM per present account: its own master (webarch-php@NAME.service) in
# the account's slice, under its limits (webarch.limits); its pool runs as the
# account, in its chroot.  Each file is checked with php-fpm -t before it is
# put in place, so a bad pool is refused and the others keep running.
# Debian's own php-fpm service is stopped and masked: it runs no pool.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set php = webarch.php_version %}
{%- set fpm = webarch.php_fpm %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.chroot
  - {{ tplroot }}.limits

webarch-fpm-check-script:
  file.managed:
    - name: {{ webarch.paths.program_dir }}/webarch-fpm-check
    - source: salt://{{ tplroot }}/files/programs/webarch-fpm-check.sh
    - user: root
    - group: root
    - mode: '0755'

# Debian's own pool runs PHP as www-data, outside any chroot: a .htaccess that
# steered a request to it would run an account's PHP with the web server's
# rights.  It goes; a pool nobody can reach keeps Debian's php-fpm config
# valid (its service is masked: the accounts' masters run the pools).
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
    - makedirs: true
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

# Where the pool was when one php-fpm ran them all (an upgraded host).
webarch-{{ name }}-fpm-old-pool:
  file.absent:
    - name: {{ account.pool.old_file }}
    - require_in:
      - service: webarch-fpm-debian-service

# systemd holds the pool's socket; the first request starts the master,
# which adopts it (FPM_SOCKETS); webarch-php-idle stops an idle master.
# systemd reloads once for all accounts (webarch-units-reload).
webarch-{{ name }}-php-units:
  file.managed:
    - names:
      - {{ webarch.paths.systemd_dir }}/{{ account.pool.socket_unit }}.d/50-webarch-listen.conf:
        - contents: |
            # Managed by Salt (webarch): where {{ name }}'s PHP-FPM is reached.
            [Socket]
            ListenStream={{ account.pool.socket }}
      - {{ webarch.paths.systemd_dir }}/{{ account.pool.unit }}.d/40-webarch-socket.conf:
        - contents: |
            # Managed by Salt (webarch): the pool takes the socket systemd passes.
            [Service]
            Environment=FPM_SOCKETS={{ account.pool.listen }}=3
      - {{ webarch.paths.systemd_dir }}/{{ account.pool.unit }}.d/45-webarch-chroot.conf:
        - contents: |
            # Managed by Salt (webarch): the chroot's binds, in the unit's namespace.
            [Service]
            BindReadOnlyPaths={{ account.chroot.unit_binds.ro | join(' ') }}
            BindPaths={{ account.chroot.unit_binds.rw | join(' ') }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
    - require_in:
      - module: webarch-units-reload

{%-   if account.suspended %}

# Suspended: no socket, no master (the pool's configuration stays).
webarch-{{ name }}-php-socket-enabled:
  file.absent:
    - name: {{ webarch.paths.systemd_dir }}/sockets.target.wants/{{ account.pool.socket_unit }}
    - require_in:
      - module: webarch-units-reload

webarch-{{ name }}-php-socket:
  service.dead:
    - names:
      - {{ account.pool.socket_unit }}
      - {{ account.pool.unit }}
    - require:
      - module: webarch-units-reload
{%-   else %}

# Enabled as ``systemctl enable`` would do it, without its reload per account.
webarch-{{ name }}-php-socket-enabled:
  file.symlink:
    - name: {{ webarch.paths.systemd_dir }}/sockets.target.wants/{{ account.pool.socket_unit }}
    - target: {{ webarch.paths.systemd_dir }}/{{ webarch.paths.fpm_unit }}.socket
    - makedirs: true
    - require_in:
      - module: webarch-units-reload

webarch-{{ name }}-php-socket:
  service.running:
    - name: {{ account.pool.socket_unit }}
    - require:
      - service: webarch-fpm-debian-service
      - module: webarch-units-reload
      - file: webarch-{{ name }}-php-units
      - file: webarch-{{ name }}-php-socket-enabled
      - cmd: webarch-php-handover
      - file: webarch-{{ name }}-fpm-pool
      - webarch_limits: webarch-{{ name }}-limits
{%-   endif %}

# A changed pool: a running master reloads it (a stopped one reads it when
# its socket next starts it).
webarch-{{ name }}-php-reload:
  cmd.run:
    - name: systemctl try-reload-or-restart {{ account.pool.unit }}
    - onchanges:
      - file: webarch-{{ name }}-fpm-pool
      - file: webarch-{{ name }}-php-units
      - cmd: webarch-fpm-no-sysv-ipc
    - require:
      - service: webarch-{{ name }}-php-socket
{%- endfor %}

{%- set masters = webarch.php_masters %}
{%- if masters.services %}

# A master running without its socket (started by hand, or by an older
# formula) holds the socket's path: it stops, the socket starts it again.
# One command for all accounts, run only while some socket is not active.
webarch-php-handover:
  cmd.run:
    - name: >-
        for unit in {{ masters.services | join(' ') }}; do
        systemctl is-active --quiet "${unit%.service}.socket" ||
        ! systemctl is-active --quiet "$unit" ||
        systemctl stop "$unit" || exit 1; done
    - unless: systemctl is-active --quiet {{ masters.sockets | join(' ') }}
    - require:
      - module: webarch-units-reload
{%- endif %}

webarch-fpm-unit:
  file.managed:
    - names:
      - {{ webarch.paths.systemd_dir }}/{{ webarch.paths.fpm_unit }}.service:
        - source: salt://{{ tplroot }}/files/systemd/webarch-php@.service.jinja
      - {{ webarch.paths.systemd_dir }}/{{ webarch.paths.fpm_unit }}.socket:
        - source: salt://{{ tplroot }}/files/systemd/webarch-php@.socket.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - context:
        php_version: {{ php | json }}
        conf_dir: {{ webarch.paths.fpm_conf_dir }}
        oom_score_adjust: {{ webarch.limits_oom_score_adjust }}
        web_user: {{ webarch.web_user }}
        home_base: {{ webarch.paths.home_base }}
    - require_in:
      - module: webarch-units-reload

# A changed unit (its sandbox, its limits) reaches a master only when it
# starts: running masters restart (a reload would keep the old process).
webarch-fpm-unit-restart:
  cmd.run:
    - name: systemctl try-restart '{{ webarch.paths.fpm_unit }}*.service'
    - onchanges:
      - file: webarch-fpm-unit
    - require:
      - module: webarch-units-reload

# An idle account costs no process: its master is stopped after an idle
# interval (every 5 minutes), its socket starts it again.
webarch-php-idle-program:
  file.managed:
    - name: {{ webarch.paths.program_dir }}/webarch-php-idle
    - source: salt://{{ tplroot }}/files/programs/webarch_php_idle.py
    - user: root
    - group: root
    - mode: '0755'

webarch-php-idle-units:
  file.managed:
    - names:
{%- for unit in ('webarch-php-idle.service', 'webarch-php-idle.timer') %}
      - {{ webarch.paths.systemd_dir }}/{{ unit }}:
        - source: salt://{{ tplroot }}/files/systemd/{{ unit }}
{%- endfor %}
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-php-idle-units

webarch-php-idle-timer:
  service.running:
    - name: webarch-php-idle.timer
    - enable: true
    - require:
      - file: webarch-php-idle-program
      - module: webarch-php-idle-units

# The pools moved to the accounts' own masters (the same sockets): Debian's
# service goes first, so that they can bind them.
webarch-fpm-debian-service:
  service.dead:
    - name: {{ fpm.service }}
    - enable: false
    - require:
      - file: webarch-fpm-idle-pool
      - file: webarch-fpm-default-pool

webarch-fpm-debian-service-masked:
  service.masked:
    - name: {{ fpm.service }}
    - require:
      - service: webarch-fpm-debian-service
