# Two commands for a fresh machine with Python 3.10+:
#   make demo   set up .venv, then run the course end to end on the embedded synthetic data
#   make test   set up .venv, then run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test clean

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
	$(PY) -m pytest

clean:
	rm -rf $(VENV) outputs runs .pytest_cache
