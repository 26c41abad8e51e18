# Two commands for a fresh machine (see README.md):
#   make run    install everything into .venv and run the default job
#   make test   install everything into .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/raykit train jobs/configs/digits_cnn_torch.yaml

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache

bench: install
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/toolkit_overhead.py
	$(BIN)/python benchmarks/scaling_curve.py
	$(BIN)/python benchmarks/loop_vs_torch.py
	$(BIN)/python benchmarks/loop_vs_keras.py
	$(BIN)/python benchmarks/augment_throughput.py
	$(BIN)/python benchmarks/checkpoint_io.py
	$(BIN)/python benchmarks/sweeps.py
	$(BIN)/python benchmarks/time_to_accuracy.py
	$(BIN)/python benchmarks/data_streaming.py
	$(BIN)/python benchmarks/parity_cifar.py
