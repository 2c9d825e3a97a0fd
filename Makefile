# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs mtl_jax and runs the seed example on the embedded data
#   make test   creates or reuses .venv and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test

# PYTHONWARNINGS: setuptools' build backend boxes a warning about editable installs on every
# install, about folders named like the package in the working directory: that folder is the package.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python experiments/seed_cnn.py --workdir runs/seed_cnn --resume

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n auto --dist worksteal tests
