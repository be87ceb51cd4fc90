# -*- coding: utf-8 -*-
# vim: ft=sls
# MariaDB: on its socket only, a user per account that logs in by its Unix user
# (unix_socket, no password), the account's databases and grants, ~/.my.cnf and
# nightly dumps into ~/backups/mariadb.  A database is dropped only when the
# pillar marks it absent, and only after a verified dump (webarch_mariadb).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import webarch, service_requisites with context %}
{%- set db = webarch.mariadb %}
{%- set conn = {'connection_unix_socket': db.socket, 'connection_user': 'root'} %}
---
include:
  - {{ tplroot }}.packages
  - {{ tplroot }}.users
  - {{ tplroot }}.remove

webarch-mariadb-config:
  file.managed:
    - name: {{ db.conf }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (webarch): do not edit by hand.
        [mysqld]
{%- if db.listen_localhost %}
        skip-networking = 0
        bind-address = 127.0.0.1
{%- else %}
        # The socket only: accounts reach it from their chroots.
        skip-networking
{%- endif %}
        # No LOAD DATA LOCAL INFILE: the server never reads a client's files.
        local-infile = 0
    - require:
      - pkg: webarch-packages

# Sandbox options over Debian's unit (docs/security.rst, Sandboxed services):
# a change restarts the server.
webarch-mariadb-unit-options:
  file.managed:
    - name: {{ webarch.paths.systemd_dir }}/mariadb.service.d/webarch.conf
    - source: salt://{{ tplroot }}/files/systemd/mariadb-webarch.conf
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-mariadb-unit-options

webarch-mariadb-service:
  service.running:
    - name: mariadb
    - enable: true
    - require:
      - module: webarch-mariadb-unit-options
    {{- service_requisites('watch', ['file: webarch-mariadb-config',
                                     'file: webarch-mariadb-unit-options']) }}

webarch-mariadb-dump-dir:
  file.directory:
    - name: {{ webarch.db_dumps.archive_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: true

{%- for name in webarch.present + webarch.remove %}
{%-   set account = webarch.accounts[name] %}
{%-   for dbname in account.mariadb.absent %}

webarch-{{ name }}-db-{{ dbname }}-absent:
  webarch_mariadb.database_absent:
    - name: {{ dbname }}
    - archive_dir: {{ webarch.db_dumps.archive_dir }}
    - require:
      - service: webarch-mariadb-service
      - file: webarch-mariadb-dump-dir
{%-   endfor %}
{%- endfor %}

{%- for name in webarch.present %}
{%-   set account = webarch.accounts[name] %}
{%-   set my = account.mariadb %}

webarch-{{ name }}-mariadb-user:
  mysql_user.present:
    - name: {{ my.user }}
    - host: {{ my.host }}
    - unix_socket: true
    - allow_passwordless: true
{%-   for key, value in conn.items() %}
    - {{ key }}: {{ value }}
{%-   endfor %}
    # Skipped when the run's one snapshot of MariaDB shows it in place (each
    # saltext-mysql check opens several connections).  With a password as
    # well (unix_socket OR mysql_native_password, set by webarch_notify),
    # saltext-mysql no longer recognises the user: then it only creates it.
    - unless:
      - fun: webarch_mariadb.in_place
        what: user
        user: {{ my.user }}
        host: {{ my.host }}
        unix_socket: {{ not (account.notify.db_password or my.password_hash) }}
    - require:
      - service: webarch-mariadb-service
      - user: webarch-{{ name }}-user
{%-   if my.password_hash %}

# An existing password kept (an account moved from another server).
webarch-{{ name }}-mariadb-password-hash:
  module.run:
    - webarch_mariadb.set_password_hash:
      - user: {{ my.user }}
      - host: {{ my.host }}
      - password_hash: {{ my.password_hash | json }}
    - unless:
      - fun: webarch_mariadb.has_password_hash
        user: {{ my.user }}
        host: {{ my.host }}
        password_hash: {{ my.password_hash | json }}
    - require:
      - mysql_user: webarch-{{ name }}-mariadb-user
{%-   endif %}

{%-   for dbname in my.present %}

webarch-{{ name }}-db-{{ dbname }}:
  mysql_database.present:
    - name: {{ dbname }}
{%-     for key, value in conn.items() %}
    - {{ key }}: {{ value }}
{%-     endfor %}
    - unless:
      - fun: webarch_mariadb.in_place
        what: database
        database: {{ dbname }}
    - require:
      - service: webarch-mariadb-service

# mysql_grants.present only adds (and fails on privileges beyond its list, such
# as a hand-made ALL): what the account holds beyond db_privileges goes first.
webarch-{{ name }}-db-{{ dbname }}-privileges:
  webarch_mariadb.privileges_limited:
    - name: {{ my.user }}
    - database: {{ dbname }}
    - privileges: {{ my.privileges | json }}
    - host: {{ my.host }}
    - require:
      - mysql_user: webarch-{{ name }}-mariadb-user
      - mysql_database: webarch-{{ name }}-db-{{ dbname }}

webarch-{{ name }}-db-{{ dbname }}-grant:
  mysql_grants.present:
    - name: webarch-{{ name }}-{{ dbname }}
    - grant: {{ my.privileges | join(',') | json }}
    - database: {{ dbname }}.*
    - user: {{ my.user }}
    - host: {{ my.host }}
    - escape: true
{%-     for key, value in conn.items() %}
    - {{ key }}: {{ value }}
{%-     endfor %}
    - unless:
      - fun: webarch_mariadb.in_place
        what: grant
        user: {{ my.user }}
        host: {{ my.host }}
        database: {{ dbname }}
        privileges: {{ my.privileges | json }}
    - require:
      - webarch_mariadb: webarch-{{ name }}-db-{{ dbname }}-privileges
{%-   endfor %}

# mysql (and any client) in the account's shell logs in as the account.
webarch-{{ name }}-my-cnf:
  file.managed:
    - name: {{ my.my_cnf.path }}
    - user: {{ name }}
    - group: {{ name }}
    - mode: '0400'
    - contents: {{ my.my_cnf.lines | json }}
    - require:
      - file: webarch-{{ name }}-dir-home

# The nightly dumps: root's directories, so the account reads them only.
webarch-{{ name }}-backups-dir:
  file.directory:
    - names:
      - {{ my.backups }}
      - {{ my.dump_dir }}
    - user: root
    - group: {{ name }}
    - mode: '0750'
    - require:
      - file: webarch-{{ name }}-dir-home
{%- endfor %}

{%- for name in webarch.remove %}

# A removed account's MariaDB user goes after every database it could use was
# dumped; its Unix user waits for that.
webarch-{{ name }}-mariadb-user-absent:
  webarch_mariadb.user_absent:
    - name: {{ name }}
    - archive_dir: {{ webarch.db_dumps.archive_dir }}
    - require:
      - service: webarch-mariadb-service
      - file: webarch-mariadb-dump-dir
{%-   for dbname in webarch.accounts[name].mariadb.absent %}
      - webarch_mariadb: webarch-{{ name }}-db-{{ dbname }}-absent
{%-   endfor %}
    - require_in:
      - user: webarch-{{ name }}-remove-user
{%- endfor %}

webarch-db-dump-map:
  file.managed:
    - name: {{ webarch.db_dumps.path }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
    - contents: {{ webarch.db_dumps.lines | json }}

webarch-db-dump-script:
  file.managed:
    - name: {{ webarch.paths.program_dir }}/webarch-db-dump
    - source: salt://{{ tplroot }}/files/programs/webarch-db-dump.sh
    - user: root
    - group: root
    - mode: '0755'

webarch-db-dump-units:
  file.managed:
    - names:
      - {{ webarch.paths.systemd_dir }}/webarch-db-dump.service:
        - source: salt://{{ tplroot }}/files/systemd/webarch-db-dump.service.jinja
        - template: jinja
        - context:
            retention_days: {{ db.dump_retention_days }}
      - {{ webarch.paths.systemd_dir }}/webarch-db-dump.timer:
        - source: salt://{{ tplroot }}/files/systemd/webarch-db-dump.timer
    - user: root
    - group: root
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: webarch-db-dump-units

webarch-db-dump-timer:
  service.running:
    - name: webarch-db-dump.timer
    - enable: true
    {{- service_requisites('require', ['module: webarch-db-dump-units',
                                       'file: webarch-db-dump-script',
                                       'file: webarch-db-dump-map']) }}
