# The two commands of the README: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= param.json

.PHONY: train test venv clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PY) train/train_custom_videos.py --config $(CONFIG)

test: venv
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
