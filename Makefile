# webarch: the two commands a newcomer needs are `make demo` and `make test`.
# Both run as root on a Debian 12 machine; everything they need is installed
# by `make prereqs` (Debian packages) and `make venv` (Python tools).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RELEASE ?= bookworm
DEMO ?= webarch-demo
export PYTHONPATH := $(CURDIR)/test

.PHONY: help prereqs venv lint unit e2e test image demo demo-shell demo-apply demo-pillar demo-stop clean

help:
	@echo "make demo   boot a Debian test host, converge pillar.example on it, show what to try"
	@echo "make test   lint, unit tests and end-to-end tests on Debian test hosts"
	@echo "make lint | unit | e2e | image | demo-shell | demo-apply | demo-pillar | demo-stop"

# Host packages: debootstrap and systemd-nspawn build and boot the test hosts;
# the tests reach them from outside with this machine's ssh, curl and openssl,
# and look at the sites with Debian's headless Chromium driven by chromedriver;
# mkfs.btrfs makes the btrfs /home of the quota tests' host; testssl and
# ssh-audit audit a converged host as outside auditors do (test_audit.py).
prereqs:
	@missing=""; \
	for cmd in debootstrap:debootstrap systemd-nspawn:systemd-container \
	           ip:iproute2 nsenter:util-linux ssh:openssh-client curl:curl \
	           openssl:openssl chromium:chromium chromedriver:chromium-driver \
	           mkfs.btrfs:btrfs-progs testssl:testssl.sh ssh-audit:ssh-audit; do \
	  command -v $${cmd%%:*} >/dev/null || missing="$$missing $${cmd##*:}"; \
	done; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The development and test tools pinned in pyproject.toml.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$($(PYTHON) -c 'import tomllib; \
	  print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]))')
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check --output-format concise .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/salt-lint webarch/*.sls webarch/reactor/*.sls webarch/orch/*.sls
	$(VENV)/bin/yamllint --strict .
	$(PY) test/lint_formula.py
	$(PY) -c 'import docutils.core; docutils.core.publish_doctree(open("README.rst").read(), \
	  settings_overrides={"halt_level": 2})'
	$(PY) test/pillar_reference.py --check

unit: venv
	$(PY) -m pytest test/unit

e2e: prereqs venv
	$(PY) -m pytest -m e2e test

# The render check, in seconds, without root or a test host: the stored model of
# pillar.example (test/data/model/), the whole formula compiled by Salt for
# Debian 12 and 13 (full, webarch_only, an account removed), its requisites,
# file sources, templates and state functions.  After an intended change of
# the model, `make check-update` rewrites test/data/model/ (commit the diff).
.PHONY: check check-update
check: venv
	$(PY) -m formula_check

check-update: venv
	$(PY) -m formula_check --update

# Everything on Debian 12 test hosts and, at the same time, the end-to-end tests on
# Debian 13 where a release can differ (its packages, PHP, Python, systemd): two pytest
# runs side by side (a test host mostly waits on one core; this machine has two),
# the Debian 13 one with its own work dirs (TRIXIE_RUN: hosts of the same name get
# their own machine names and cgroups), its browser screenshots in test/artifacts/debian13/
# and its lines marked "debian13|".
# test_accounts (the pillar's mistakes, test mode, interrupted runs, users and homes:
# Salt's and the model's logic, the same on both) runs on Debian 12 only.
TRIXIE_RUN ?= /var/tmp/webarch-test-run-trixie
test: prereqs venv lint check
	@rc=$$(mktemp); \
	( WEBARCH_TEST_RELEASE=trixie WEBARCH_TEST_RUN=$(TRIXIE_RUN) \
	  WEBARCH_TEST_ARTIFACTS=$(CURDIR)/test/artifacts/debian13 $(PY) -m pytest \
	    --durations=30 -m e2e --ignore=test/e2e/test_accounts.py test 2>&1; \
	  echo $$? > $$rc ) | sed -u 's/^/debian13| /' & \
	$(PY) -m pytest --durations=30 test; bookworm=$$?; \
	wait; trixie=$$(cat $$rc); rm -f $$rc; \
	echo "make test: Debian 12 run exit $$bookworm, Debian 13 run exit $$trixie"; \
	[ "$$bookworm" = 0 ] && [ "$$trixie" = 0 ]

image: prereqs venv
	$(PY) -m testhost build --release $(RELEASE)

demo: prereqs venv
	$(PY) -m testhost demo $(DEMO) --release $(RELEASE) --formula $(CURDIR)

demo-shell:
	$(PY) -m testhost shell $(DEMO)

demo-apply:
	$(PY) -m testhost apply $(DEMO)

demo-pillar:
	$(PY) -m testhost pillar $(DEMO) $(PILLAR)

demo-stop:
	$(PY) -m testhost stop $(DEMO)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# The benchmarks of issues 8, 15 and 17 (not part of `make test`): one line per figure, then
# ratios and PASS/MISS per target.  See bench/README.rst; each script takes --quick.
# PNG charts (bench/charts/) from the benchmarks' saved stdout: BENCH_OUTPUT (files).
BENCH_OUTPUT ?= $(wildcard /var/tmp/webarch-bench/s13/big.out /var/tmp/webarch-bench/s13/mounts.out)
.PHONY: charts
charts: venv
	$(PY) -m pip install -q $$($(PYTHON) -c 'import tomllib; \
	  print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))')
	$(PY) bench/charts.py $(BENCH_OUTPUT)

.PHONY: bench
bench: prereqs venv
	$(PY) bench/converge.py --profile
	$(PY) bench/serving.py
	$(PY) bench/apache_fds.py
	$(PY) bench/memory.py
	$(PY) bench/matomo.py
	$(PY) bench/backup.py
	$(PY) bench/mounts.py
