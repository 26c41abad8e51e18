# Two commands for a fresh machine (see README.md):
#   make run    install everything into .venv and run the default job
#   make test   install everything into .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# constraints.txt holds the exact, tested versions (pyproject.toml states ranges); [all] is both frameworks
# (CPU TensorFlow) and every integration, [dev] the test tools.
CONSTRAINTS := constraints.txt

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(BIN)/python -m pip install -c $(CONSTRAINTS) -e '.[all,dev]'
	touch $(STAMP)

# The GPU image's constraints: constraints.txt without PyPI torch's CUDA 13 runtime (see its last section).
cluster/constraints-gpu.txt: $(CONSTRAINTS)
	{ echo "# Written by 'make $@' from $(CONSTRAINTS) (edit that file, not this one)."; \
	  sed '/^# --- CUDA 13 runtime/,$$d' $(CONSTRAINTS); } > $@

run: install
	$(BIN)/raykit train jobs/configs/digits_cnn_torch.yaml

# --durations: the slowest tests at the end of CI's log, where the suite's time goes.
test: install
	$(BIN)/python -m pytest --durations=30

clean:
	rm -rf $(VENV) runs .pytest_cache

bench: install
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/toolkit_overhead.py
	$(BIN)/python benchmarks/first_epoch.py
	$(BIN)/python benchmarks/scaling_curve.py
	$(BIN)/python benchmarks/loop_vs_torch.py
	$(BIN)/python benchmarks/loop_vs_keras.py
	$(BIN)/python benchmarks/augment_throughput.py
	$(BIN)/python benchmarks/checkpoint_io.py
	$(BIN)/python benchmarks/sweeps.py
	$(BIN)/python benchmarks/time_to_accuracy.py
	$(BIN)/python benchmarks/data_streaming.py
	$(BIN)/python benchmarks/parity_cifar.py
