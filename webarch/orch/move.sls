# -*- coding: utf-8 -*-
# vim: ft=sls
# Move a hosting account from one server of the fleet to another (docs/fleet.rst):
#   salt-run state.orchestrate webarch.orch.move \
#     pillar='{"webarch_move": {"account": "alice", "from": "web1", "to": "web2"}}'
# Each step requires the one before and stops the move when it fails (failhard).
# The request is validated by the first step (webarch_fleet.move_check).
{%- set req = pillar.get('webarch_move', {}) %}
{%- set req = req if req is mapping else {} %}
{%- set account = req.get('account', '') | string %}
{%- set only = {'webarch_only': [account]} %}
{%- set held = {account: {'suspended': true} } %}
{%- set suspended = {'webarch_only': [account], 'webarch': {'accounts': held} } %}
---
webarch-move-check:
  salt.runner:
    - name: webarch_fleet.move_check
    - request: {{ req | json }}
    - failhard: true

# The passwords the account was sent already are not issued again on "to".
webarch-move-seed:
  salt.runner:
    - name: webarch_fleet.move_seed
    - request: {{ req | json }}
    - failhard: true
    - require:
      - salt: webarch-move-check

# "to": the account made (user, chroot, databases, vhosts, certificates),
# suspended: nothing of it runs or is served yet.
webarch-move-to-prepared:
  salt.state:
    - tgt: {{ req.get('to', '') | string | json }}
    - sls: webarch
    - pillar: {{ suspended | json }}
    - failhard: true
    - require:
      - salt: webarch-move-seed

# A first copy of the home while "from" still serves it, made the home on "to":
# the copy after the suspension sends only what changed since.
webarch-move-precopied:
  salt.runner:
    - name: webarch_fleet.move_precopy
    - request: {{ req | json }}
    - failhard: true
    - require:
      - salt: webarch-move-to-prepared

# Each server's hand-over rendered as its run would: "from" with the account
# suspended, "to" as its pillar says (the Apache site file, and what the two
# narrow steps below need).
webarch-move-from-ready:
  salt.function:
    - name: webarch_handover.ready
    - tgt: {{ req.get('from', '') | string | json }}
    - arg:
      - {{ account | json }}
    - kwarg:
        suspended: true
    - failhard: true
    - require:
      - salt: webarch-move-precopied

webarch-move-to-ready:
  salt.function:
    - name: webarch_handover.ready
    - tgt: {{ req.get('to', '') | string | json }}
    - arg:
      - {{ account | json }}
    - failhard: true
    - require:
      - salt: webarch-move-from-ready

# "from" holds the account (sites 503, SSH refused, cron, mail and PHP
# stopped): the downtime starts here.
webarch-move-from-held:
  salt.function:
    - name: webarch_handover.hold
    - tgt: {{ req.get('from', '') | string | json }}
    - arg:
      - {{ account | json }}
    - failhard: true
    - require:
      - salt: webarch-move-to-ready

# What changed in the home, the dumps and the manifest, from "from" to "to".
webarch-move-copied:
  salt.runner:
    - name: webarch_fleet.move_copy
    - request: {{ req | json }}
    - failhard: true
    - require:
      - salt: webarch-move-from-held

# Unpacked and loaded on "to"; the manifests compared: equal, else the move stops.
webarch-move-unpacked:
  salt.function:
    - name: webarch_move.unpack
    - tgt: {{ req.get('to', '') | string | json }}
    - arg:
      - {{ account | json }}
    - failhard: true
    - require:
      - salt: webarch-move-copied

# "to" serves the account: its sites, SSH, mail and PHP.
webarch-move-to-served:
  salt.function:
    - name: webarch_handover.serve
    - tgt: {{ req.get('to', '') | string | json }}
    - arg:
      - {{ account | json }}
    - failhard: true
    - require:
      - salt: webarch-move-unpacked

# DNS or the front-end pointed at "to": the downtime ends here.
webarch-move-switched:
  salt.runner:
    - name: webarch_fleet.move_switch
    - request: {{ req | json }}
    - failhard: true
    - require:
      - salt: webarch-move-to-served

# "to" converges the account as its pillar says (what is left: its applications).
webarch-move-to-converged:
  salt.state:
    - tgt: {{ req.get('to', '') | string | json }}
    - sls: webarch
    - pillar: {{ only | json }}
    - failhard: true
    - require:
      - salt: webarch-move-switched

# "to": what its home held before the copy (its first run's files, such as a
# fresh application install) goes into a verified archive, then away.
webarch-move-to-settled:
  salt.function:
    - name: webarch_move.settle
    - tgt: {{ req.get('to', '') | string | json }}
    - arg:
      - {{ account | json }}
    - failhard: true
    - require:
      - salt: webarch-move-to-converged

# "from": the verified archive of the home it keeps until the admin removes the
# account there (made once the new server serves: out of the downtime).
webarch-move-from-kept:
  salt.function:
    - name: webarch_move.keep
    - tgt: {{ req.get('from', '') | string | json }}
    - arg:
      - {{ account | json }}
    - failhard: true
    - require:
      - salt: webarch-move-to-settled
