# Everything installs into .venv/ inside the repo; the first target that needs it creates it.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STATE  := .state
export AIRFLOW_HOME := $(CURDIR)/$(STATE)/airflow
export MPLCONFIGDIR := $(CURDIR)/$(STATE)/matplotlib
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PIP_CACHE_DIR := $(CURDIR)/$(STATE)/pip-cache
export XDG_CACHE_HOME := $(CURDIR)/$(STATE)/cache
export XDG_CONFIG_HOME := $(CURDIR)/$(STATE)/config

.PHONY: install flower test lint demo simulate bench up down federation-up federation-down clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the local CPU wheel; then hold it with a constraint so nothing pulls CUDA builds.
	$(PY) -m pip install -q "torch==2.13.0"
	echo "torch==2.13.0" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The optional Flower extra lives in its own venv: flwr pins packaging, typer, rich, starlette and
# protobuf versions that Airflow and MLflow disagree with. torch first, as above; then the extra
# as pyproject.toml pins it; then fedmap itself without its heavy deps (the library needs only
# these few). tests/fedmap/test_flower.py and bench/flower_fedavg.py run here.
FLOWER      := $(STATE)/flower
FLOWER_PY   := $(FLOWER)/bin/python
FLOWER_LIBS := numpy pyyaml tqdm safetensors
$(FLOWER)/.installed: pyproject.toml
	test -x $(FLOWER_PY) || $(PYTHON) -m venv $(FLOWER)
	$(FLOWER_PY) -m pip install -q --upgrade pip
	$(FLOWER_PY) -m pip install -q "torch==2.13.0"
	echo "torch==2.13.0" > $(FLOWER)/constraints.txt
	$(FLOWER_PY) -m pip install -q -c $(FLOWER)/constraints.txt $(FLOWER_LIBS) \
		$$($(FLOWER_PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["flower"]))')
	$(FLOWER_PY) -m pip install -q -c $(FLOWER)/constraints.txt --no-deps -e .
	touch $@

flower: $(FLOWER)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install flower lint
	mkdir -p $(STATE)
	$(VENV)/bin/pytest -q

# The main job: a 14-hospital federation through S3, Airflow (dags test) and MLflow, then tier-3
# inference. Starts and stops its own servers; a second run warm-starts from the champion.
demo: install
	mkdir -p $(STATE)
	$(PY) -m site_tasks.local.demo

# The researchers' view: compare methods in-process on one scenario (no servers).
simulate: install
	mkdir -p $(STATE)
	$(VENV)/bin/fedmap simulate --scenario label-skew --methods fedmap,individual,fedavg,fedprox \
		--seeds 0 --out $(STATE)/simulate

# Browse: S3, MLflow and airflow standalone in the background (same state as the demo).
up: install
	$(PY) -m site_tasks.local.stack up

down:
	test -x $(PY) && $(PY) -m site_tasks.local.stack down || true

# A real multi-process federation: PostgreSQL, Airflow API server + scheduler + DAG processor,
# an S3 server, and one edge worker per site (FEDERATION=path/to/file.yaml, default: 3 demo sites).
federation-up: install
	$(PY) -m site_tasks.local.edge up $(if $(FEDERATION),--federation $(FEDERATION),) $(if $(WORKERS),--workers $(WORKERS),)

federation-down:
	test -x $(PY) && $(PY) -m site_tasks.local.edge down || true

# DVC runs each stage's cmd through the shell, so the venv's fedmap and python go first on PATH.
bench: install
	mkdir -p $(STATE)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro benchmark_synthetic

clean: down federation-down
	rm -rf $(STATE)
