# The two commands of the README: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= param.json

.PHONY: train test venv clean

# The dependencies, then the project itself, editable: .venv/bin/vqvc works from any folder.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# --resume: running `make train` again continues the run in runs/<config name>/ (`make clean` starts over).
train: venv
	$(PY) train/train_custom_videos.py --config $(CONFIG) --resume

test: venv
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
