# The two commands of the README: `make run` (materialize the default family) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
FAMILY ?= digits
export DAGSTER_HOME := $(CURDIR)/dagster_home
export PYTHONUNBUFFERED := 1

.PHONY: install run test ui report resume

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,deploy]'
	touch $@

install: $(VENV)/.installed

# Materialize every asset of the family through Dagster on the persistent instance in dagster_home/
# (the runs then show in the UI), then print the comparison table and the report paths.
run: install
	$(VENV)/bin/dagster job execute -m compression_pipeline.definitions -j $(FAMILY)_recompress -c deploy/run_serial.yaml
	$(PY) -m compression_pipeline report $(FAMILY)

report: install
	$(PY) -m compression_pipeline report $(FAMILY)

# Re-execute a failed run from its failure: make resume RUN=<run id> (the UI's "Re-execute from failure").
resume: install
	$(PY) -m compression_pipeline resume $(RUN)

test: install
	$(PY) -m pytest

# The Dagster UI (webserver + daemon: schedules and automation) on 127.0.0.1:3000. It listens on loopback
# only; to serve other machines, say so: make ui UI_HOST=0.0.0.0 (and put authentication in front of it).
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000
ui: install
	$(VENV)/bin/dagster dev -w workspace.yaml -h $(UI_HOST) -p $(UI_PORT)
