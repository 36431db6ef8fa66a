# Two entry points, both self-installing on a fresh machine (Python >= 3.8 with venv):
#   make demo   - the whole pipeline on edgeseg's synthetic dataset (runs/demo/report.md)
#   make test   - the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/.edgeseg-installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.edgeseg-installed

demo: install
	$(BIN)/edgeseg demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info
