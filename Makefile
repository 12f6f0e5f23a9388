# The two commands of the README: `make run` (materialize the default family) and `make test` (the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
FAMILY ?= digits
export DAGSTER_HOME := $(CURDIR)/dagster_home
export PYTHONUNBUFFERED := 1
# dagster.yaml turns telemetry off, but only this variable stops the webserver's and daemon's telemetry-upload thread
# (it renames $DAGSTER_HOME/logs/ away whenever that folder is not empty).
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install run test ui report resume remeasure benchmarks

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,deploy]'
	touch $@

install: $(VENV)/.installed

# Materialize every asset of the family through Dagster on the persistent instance in dagster_home/ (the runs then
# show in the UI): one line per step, then a summary with the comparison table and the report paths.
# A family whose data a package provides (fashion: Debian's dataset-fashion-mnist) gets it first.
run: install
	scripts/family_data.sh $(FAMILY)
	$(PY) -m compression_pipeline run $(FAMILY)

report: install
	$(PY) -m compression_pipeline report $(FAMILY)

# Measure the family's last good models again in one benchmark session and rebuild the report (nothing retrains):
# after a session that ran under load, or on another machine.
remeasure: install
	$(PY) -m compression_pipeline run $(FAMILY) --remeasure

# BENCHMARKS.md, the measured tables, from every family's report.json (or REPORTS="a/report.json b/report.json": two
# runs of one family side by side, with the run-to-run agreement of each speedup).
benchmarks: install
	$(PY) -m compression_pipeline benchmarks $(REPORTS)

# Complete an interrupted (or failed, then fixed) launch: make resume FAMILY=<name> builds the data, then only what is
# missing or stale, reusing every current model. make resume RUN=<run id> re-executes one run from its failure (the
# UI's "Re-execute from failure").
resume: install
ifdef RUN
	$(PY) -m compression_pipeline resume $(RUN)
else
	scripts/family_data.sh $(FAMILY)
	$(PY) -m compression_pipeline run $(FAMILY) --stale
endif

# The whole suite on a fresh machine: first what the tests need beyond Python (a PostgreSQL server, Debian's
# chromium: installed with apt when missing, started when down), then the linter, then pytest on TEST_WORKERS
# processes (pytest-xdist; the long tests go first and idle workers steal queued ones; the 15 slowest are listed at
# the end). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install
	scripts/test_services.sh
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=15

# The Dagster UI (webserver + daemon: schedules and automation) on 127.0.0.1:3000. It listens on loopback
# only; to serve other machines, say so: make ui UI_HOST=0.0.0.0 (and put authentication in front of it).
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000
ui: install
	$(VENV)/bin/dagster dev -w workspace.yaml -h $(UI_HOST) -p $(UI_PORT)
