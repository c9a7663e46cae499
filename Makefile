# The two commands: `make demo` (pipeline on the embedded defaults) and `make test`.
# Both build the virtual environment first; nothing else needs to be installed by hand.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin

# Stages run as `python -m tasks.<method>.<stage>` from dvc.yaml: the venv's python must come first.
export PATH := $(BIN):$(PATH)
# No telemetry from DVC, MLflow or Prefect.
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install browser demo test flow serve deploy worker queue report edit-page mlflow-ui mlflow-server clean

install: $(VENV)/.installed

# uv resolves and installs the pinned set in parallel, in about a minute where pip took six.
# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on many CI machines) nothing would
# cache the bytecode, and every stage process would compile torch, lightning and mlflow anew
# (about 25 s each).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt uv
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -c constraints.txt -e '.[test]'
	touch $@

MLFLOW_PORT ?= 5000

# The demo: params.yaml composed from conf/ on the default profile, then the whole pipeline.
demo: install
	subjectlab params
	dvc repro

# The browser tests drive Debian's Chromium with Playwright (no browser download at run time):
# installed from the distribution's packages when it is missing (as root, or through sudo).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: install browser
	pytest

flow: install
	python -m flows.pipeline

serve: install
	python -m flows.serve

# A lab's setup (docs/SCALE-OUT.md): the deployment on a work pool, and a worker that runs it.
POOL ?= subjectlab
deploy: install
	python -m flows.serve --pool $(POOL)

worker: install
	prefect worker start --pool $(POOL) --type process

# DVC's experiment queue with one worker per device (queue experiments first: dvc exp run --queue -S ...).
DEVICES ?= 0
queue: install
	python -m flows.queue_workers --devices $(DEVICES)

# The static HTML report of a reproduced workspace (tables + pictures, linked to their MLflow runs).
report: install
	python -m flows.report --mlflow-ui http://127.0.0.1:$(MLFLOW_PORT)

# eCLIPsed's edit page: a slider per learned direction, the edited face redrawn as one moves.
# ROWS: rows of the eclipsed table with trained directions (comma-separated; empty: all of them).
ROWS ?=
PORT ?= 8600
edit-page: install
	python -m flows.edit_page $(if $(ROWS),--rows $(ROWS)) --port $(PORT)

mlflow-ui: install
	mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db --port 5000

# The shared tracking server: PostgreSQL (a cluster under mlflow/server/) + proxied artifacts.
mlflow-server: install
	python -m flows.tracking_server --port $(MLFLOW_PORT)

clean:
	rm -rf data/synthworld data/augmented data/models data/generated data/personalization data/class_images data/zoo metrics plots checkpoints
