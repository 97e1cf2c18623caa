# The two commands a reader needs: `make run` and `make test`. Everything else is for maintainers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test quick test-fresh-env test-gpu lint notebook translation images checkpoint benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

# requirements-test.txt includes requirements.txt: one resolver run for both. uv, installed into
# the venv first, does it in about 4 s where pip takes 16 (the same packages); pip if uv fails.
# --compile-bytecode, as pip does: else the suite's first processes, started together, each
# compile the same modules: pytest on a fresh clone took 298 s without it, 264 s with it, and
# the install 7 s longer (2026-12-06).
$(VENV)/.installed-test: requirements-test.txt requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install uv && $(BIN)/uv pip install --python $(BIN)/python \
		--compile-bytecode -r requirements-test.txt \
		|| $(BIN)/python -m pip install -r requirements-test.txt
	$(BIN)/python -c "import matplotlib.pyplot"  # build matplotlib's font cache once, outside the notebook
	touch $(VENV)/.installed $@

## run: execute the notebook headless on the embedded checkpoint (or LLAMA3_CKPT) and print the prediction
run: $(VENV)/.installed
	$(BIN)/python -m plumbing.run_notebook

## test: lint, then pytest — nbval re-executes the notebook against its stored outputs, plus tests/
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

## quick: the edit loop, about a minute: lint, nbval on the English notebook, the tests that start no extra kernel
quick: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow and not fresh_env"

## test-fresh-env: a new environment from requirements.txt alone runs the notebook on the embedded Meta folder and on a Hugging Face folder (CI runs it after test)
test-fresh-env: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m fresh_env tests/test_requirements.py

## test-gpu: on a CUDA machine, nbval against the stored CPU outputs and the GPU benchmarks (tools/gpu_check.sh)
test-gpu:
	bash tools/gpu_check.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## notebook: re-execute the committed notebook on CPU and normalize it (the stored outputs nbval compares), then regenerate the Chinese edition from it and i18n/zh.json
notebook: $(VENV)/.installed-test
	env $$($(BIN)/python -m plumbing.settings --unset) \
		LLAMA3_DEVICE=cpu LLAMA3_DTYPE=float32 $(BIN)/python -m plumbing.run_notebook --inplace
	$(BIN)/python -m generators.translate_notebook zh

## translation: regenerate the Chinese edition only (after editing i18n/zh.json or an English markdown cell); `--todo` lists what to translate
translation: $(VENV)/.installed-test
	$(BIN)/python -m generators.translate_notebook zh

## images: redraw the diagrams in images/ (byte-identical with the same matplotlib)
images: $(VENV)/.installed
	$(BIN)/python -m generators.make_images

## checkpoint: retrain the embedded checkpoints, Llama 3's and the last section's Llama 4 (about 7 minutes on 2 CPU cores)
checkpoint: $(VENV)/.installed-test
	$(BIN)/python -m generators.train_embedded_checkpoint
	$(BIN)/python -m generators.train_llama4_checkpoint

## benchmark: runtime on the embedded checkpoint, then memory/time at 8B scale (writes ~22 GB of random checkpoints to build/), then generation speed
benchmark: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.notebook_runtime
	$(BIN)/python -m benchmarks.scale
	$(BIN)/python -m benchmarks.generation

clean:
	rm -rf build .pytest_cache
