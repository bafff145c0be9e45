# The two commands of the quick start: `make demo` and `make test`.
# Both create .venv if missing (idempotent `make setup`) and install everything in it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hwmap-installed
PLUGIN_PROJECTS := $(wildcard plugins/*/pyproject.toml)

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(PLUGIN_PROJECTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch: exactly the CPU wheel on disk; a newer or unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	# torch pinned again in the same resolve: a test peer that needs torchvision (aihwkit) would otherwise take
	# the newest torchvision, which upgrades torch to a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0 -e '.[torch,nir,test]' $(foreach p,$(PLUGIN_PROJECTS),-e $(dir $(p)))
	$(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'torch ' + torch.__version__ + ' installed, want 2.13.0')"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/hwmap demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider -n 2

bench: setup
	for b in bench/[!_]*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV)
