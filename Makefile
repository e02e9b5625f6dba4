# Two commands for a fresh machine with Python 3.10+:
#   make demo   set up .venv, then run the course end to end on the embedded synthetic data
#   make test   set up .venv, then run the whole test suite (what CI runs)
# and for maintainers:
#   make test-colab     the fast suite and every notebook on Colab's own package versions (.venv-colab)
#   make mutate         a fixed set of mutants of the course's core, each of which the fast tests must kill
#   make release-check  before publishing: the tag on HEAD, notebooks built for this version, a CHANGELOG entry
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
COLAB_VENV  := .venv-colab
COLAB_PY    := $(COLAB_VENV)/bin/python
COLAB_STAMP := $(COLAB_VENV)/.installed
# pytest-xdist: one worker per logical core (tests/conftest.py gives each its share of threads and hands out the
# longest work first); `make test TEST_WORKERS=0` runs in one process
TEST_WORKERS ?= logical
XDIST := -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

.PHONY: venv demo test test-colab mutate release-check clean

venv: $(STAMP)

# --no-cache-dir: torch's CUDA build is about 5.5 GB installed; no second copy in pip's cache.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The main job (a short SimpleCNN training and evaluation on the SYNTHETIC set, with metrics
# and figures), then every notebook in order: smoke mode on a CPU, full settings on a GPU.
demo: $(STAMP)
	$(PY) -m skinlib demo --out outputs/demo
	$(PY) tools/run_notebooks.py --solutions --out outputs/notebooks

test: $(STAMP)
	$(PY) -m pytest $(XDIST)

# Colab's versions (requirements-colab.txt, from shared/colab/pip-freeze.gpu.txt) in an environment of their own.
# torch and torchvision come from .venv through a .pth file read after the environment's own packages: Colab's
# torch 2.11 cannot be installed offline. The .pth is written after pip ran, so pip never sees .venv's packages.
# captum without its dependencies: it asks for torch, which pip would otherwise fetch.
$(COLAB_STAMP): requirements-colab.txt pyproject.toml $(STAMP)
	$(PYTHON) -m venv $(COLAB_VENV)
	grep -v '^captum==' requirements-colab.txt > $(COLAB_VENV)/requirements.txt
	$(COLAB_PY) -m pip install --quiet --no-cache-dir -r $(COLAB_VENV)/requirements.txt
	$(COLAB_PY) -m pip install --quiet --no-cache-dir --no-deps $$(grep '^captum==' requirements-colab.txt)
	$(COLAB_PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
		> "$$($(COLAB_PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/zz-torch-from-venv.pth"
	touch $(COLAB_STAMP)

# The fast suite, then the student notebooks and the solutions (the SYNTHETIC course as a chain of runtimes) under nbval.
# -p no:platformdirs: .venv's newer platformdirs (seen through the .pth) announces a pytest plugin that
# Colab's platformdirs, the one imported here, does not have; exported, so the nbval runs the tests start get it too.
COLAB_PYTEST := $(COLAB_PY) -m pytest $(XDIST)
test-colab: export PYTEST_ADDOPTS = -p no:platformdirs
test-colab: $(COLAB_STAMP)
	$(COLAB_PY) tools/colab_versions.py requirements-colab.txt
	$(COLAB_PYTEST) -m "not slow"
	$(COLAB_PYTEST) tests/test_notebooks_meta.py::test_notebook_runs_on_the_synthetic_data \
		tests/test_journey.py::test_the_synthetic_course_runs_as_a_chain_of_fresh_runtimes

mutate: $(STAMP)
	$(PY) tools/mutate.py

release-check: $(STAMP)
	$(PY) tools/release_check.py

clean:
	rm -rf $(VENV) $(COLAB_VENV) outputs runs .pytest_cache
