# Two entry points, both self-installing on a fresh machine (Python >= 3.8 with venv):
#   make demo   - the whole pipeline on edgeseg's synthetic dataset (runs/demo/report.md)
#   make test   - the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
TRT_BINDINGS ?= 10.3.0 11.4.0.106
TRT_WHEELS := .cache/trt-bindings/.downloaded

.PHONY: demo test install clean

$(BIN)/.edgeseg-installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# TensorRT's Python bindings (no libraries) for the API conformance test; not needed to run edgeseg. A failed
# download is retried on the next make; the conformance test then skips, and fails under CI=true.
$(TRT_WHEELS): $(BIN)/.edgeseg-installed
	for v in $(TRT_BINDINGS); do $(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: \
		--dest .cache/trt-bindings "tensorrt-cu12-bindings==$$v" || { echo "could not download \
		tensorrt-cu12-bindings $$v: tests/test_trt_api_conformance.py fails under CI=true" >&2; exit 0; }; done; \
		touch $@

install: $(BIN)/.edgeseg-installed

demo: install
	$(BIN)/edgeseg demo --out runs/demo

test: install $(TRT_WHEELS)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info
