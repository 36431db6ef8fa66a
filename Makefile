# Two entry points, both self-installing on a fresh machine (Python >= 3.8 with venv):
#   make demo   - the whole pipeline on edgeseg's synthetic dataset (runs/demo/report.md)
#   make test   - the test suite
#   make docs   - serve the manual (docs/, mkdocs.yml) at http://127.0.0.1:8000 while you edit it
# and one habit for whoever changes tests (not part of `make test`; needs Python >= 3.10 for mutmut 3):
#   make mutate MODULE=edgeseg/quant/trt_cache.py   - mutation testing of one .py file or a package folder
#       (MODULE=edgeseg/quant/): mutmut mutates it, runs for each mutant only the tests that call the mutated
#       function, and prints killed / total and every surviving mutant's diff. Tests are the test files that
#       import MODULE; widen with TESTS="tests/test_quant.py tests/test_engine.py" (TESTS=tests: all of them),
#       skip a test with MUTATE_PYTEST_ARGS="--deselect tests/x.py::test_y", resume a stopped run with KEEP=1.
#       Work folder: .cache/mutate/<module>/ (cd there and run ../../../.venv/bin/mutmut browse to look around).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
TRT_BINDINGS ?= 10.3.0 11.4.0.106
TRT_WHEELS := .cache/trt-bindings/.downloaded

.PHONY: demo test install clean mutate docs

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

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) runs build *.egg-info

# mutation testing (see the top of this file); one worker, niced, so it shares 2 cores with other work.
# timeout_constant 60: a forked test run first rebuilds the session fixtures (train, export, calibrate: ~20 s of
# CPU), which mutmut's time limit (the tests' own time + constant, x 15 x 2) would otherwise read as a timeout,
# scoring a survivor as caught.
# mutmut forks each mutant's test run from a process that already ran the tests: PyTorch's OpenMP pool then
# deadlocks the child (measured: the calibrate tests hang past mutmut's limit and read as 'timeout', i.e.
# caught, for mutants that in fact survive), so OpenMP runs one thread
MUTMUT_VERSION ?= 3.8.1
MUTATE_JOBS ?= 1
MUTATE_NICE ?= nice -n 10
MUTATE_ENV ?= OMP_NUM_THREADS=1
MUTATE_PYTEST_ARGS ?=
MUTATE_DIR = .cache/mutate/$(subst /,-,$(patsubst %/,%,$(MODULE)))

mutate: install
	@test -n "$(MODULE)" && test -e "$(MODULE)" || { echo "usage: make mutate MODULE=edgeseg/quant/ (a package" \
		"folder) or MODULE=edgeseg/quant/trt_cache.py (one file) [TESTS=...]" >&2; exit 2; }
	@$(BIN)/python -c "import importlib.metadata as m, sys; sys.exit(m.version('mutmut') != '$(MUTMUT_VERSION)')" \
		2>/dev/null || $(BIN)/python -m pip install --quiet "mutmut==$(MUTMUT_VERSION)"
	@set -e; mod="$(patsubst %/,%,$(MODULE))"; dotted=$$(echo "$${mod%.py}" | tr / .); \
	tests="$(TESTS)"; if [ -z "$$tests" ]; then \
		esc=$$(echo "$$dotted" | sed 's/\./\\./g'); parent=$$(echo "$${dotted%.*}" | sed 's/\./\\./g'); \
		tests=$$(grep -lE "$$esc\b|from $$parent import .*\b$${dotted##*.}\b" tests/test_*.py | tr '\n' ' '); \
	fi; \
	[ -n "$$tests" ] || { echo "no test file imports $$dotted: name them with TESTS=..." >&2; exit 2; }; \
	if [ -d "$$mod" ]; then only="$$mod/*"; else only="$$mod"; fi; \
	[ -n "$(KEEP)" ] || rm -rf "$(MUTATE_DIR)"; mkdir -p "$(MUTATE_DIR)/mutants"; \
	for f in edgeseg tests setup.cfg; do ln -sfn "$(CURDIR)/$$f" "$(MUTATE_DIR)/$$f"; done; \
	for f in *; do case "$$f" in edgeseg|tests|setup.cfg|pyproject.toml) ;; \
		*) ln -sfn "$(CURDIR)/$$f" "$(MUTATE_DIR)/mutants/$$f";; esac; done; \
	$(BIN)/python -c 'import json, shlex, sys; only, tests, extra = sys.argv[1], sys.argv[2].split(), sys.argv[3]; \
		print("# written by make mutate\n[tool.mutmut]\nsource_paths = [\"edgeseg\"]"); \
		print("only_mutate = " + json.dumps([only])); \
		print("pytest_add_cli_args_test_selection = " + json.dumps(tests)); \
		print("pytest_add_cli_args = " + json.dumps(["-p", "no:cacheprovider"] + shlex.split(extra))); \
		print("use_git_change_detection = false"); \
		print("timeout_constant = 60")' "$$only" "$$tests" '$(MUTATE_PYTEST_ARGS)' \
		> "$(MUTATE_DIR)/pyproject.toml"; \
	echo "mutating $$only with $$tests in $(MUTATE_DIR)"; \
	cd "$(MUTATE_DIR)"; mutmut="$(CURDIR)/$(BIN)/mutmut"; \
	env $(MUTATE_ENV) $(MUTATE_NICE) "$$mutmut" run --max-children $(MUTATE_JOBS); \
	"$$mutmut" export-cicd-stats > /dev/null; "$$mutmut" results > not-killed.txt; \
	echo; echo "== $$only: not killed (every survivor shown below; 'no tests': no selected test calls it)"; \
	cat not-killed.txt; \
	for name in $$(sed -n 's/^ *\(.*\): survived$$/\1/p' not-killed.txt); do "$$mutmut" show "$$name"; done; \
	$(CURDIR)/$(BIN)/python -c 'import json, sys; s = json.load(open("mutants/mutmut-cicd-stats.json")); \
		print("\n== %s: killed %d / total %d" % (sys.argv[1], s["killed"], s["total"]), "(" + ", ".join( \
		"%s %d" % (k.replace("_", " "), s[k]) for k in ("survived", "no_tests", "timeout", "suspicious")) + ")")' \
		"$$only"
