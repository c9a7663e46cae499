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

.PHONY: install demo test flow serve mlflow-ui clean

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

# The demo: params.yaml composed from conf/ on the default profile, then the whole pipeline.
demo: install
	subjectlab params
	dvc repro

test: install
	pytest

flow: install
	python -m flows.pipeline

serve: install
	python -m flows.serve

mlflow-ui: install
	mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db --port 5000

clean:
	rm -rf data/synthworld data/augmented data/models data/generated data/personalization data/class_images data/zoo metrics plots checkpoints
