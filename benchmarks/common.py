"""What every benchmark script shares: the machine line and writing its section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine_line(framework: str = "torch") -> str:
    """Cores, memory, GPU and versions, for the table's caption; ``framework="tf"`` names TensorFlow and
    Keras instead of torch (and does not import torch)."""
    import ray

    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if framework == "tf":
        import keras
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        gpu, versions = gpus[0].name if gpus else "no GPU", f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    else:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        versions = f"torch {torch.__version__}"
    return (f"Machine: {os.cpu_count()} cores, {memory_gb:.0f} GiB, {platform.machine()}, {gpu}; Python "
            f"{platform.python_version()}, Ray {ray.__version__}, {versions}.")


SHARED_RAY_VARIABLE = "RAYKIT_BENCH_RAY_ADDRESS"


def start_ray(num_cpus: int = 2, log_to_driver: bool = False) -> None:
    """A fresh local Ray with ``num_cpus`` CPUs, as the tables are measured; or, when the environment
    names one in ``RAYKIT_BENCH_RAY_ADDRESS``, that running Ray: the smoke tests (tests/test_benchmarks.py)
    share the test session's instead of starting one per script. Timings from a shared Ray are not the
    tables' timings. ``ray.shutdown()`` afterwards disconnects from a shared Ray without stopping it."""
    import ray

    address = shared_ray_address()
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver)


def shared_ray_address() -> str | None:
    """The test session's Ray that smoke tests ask a script to join (``RAYKIT_BENCH_RAY_ADDRESS``), or None
    (the script's runs start Ray as a user's would, which is what the tables measure)."""
    return os.environ.get(SHARED_RAY_VARIABLE) or None


def spread(values: list[float], digits: int = 1, unit: str = "") -> str:
    """``median (min a, max b)`` of repeated measurements."""
    f = f"{{:.{digits}f}}"
    return (f"{f.format(statistics.median(values))}{unit} (min {f.format(min(values))}, "
            f"max {f.format(max(values))})")


def write_section(section: str, table: str, results: Path = RESULTS) -> None:
    """Replace this benchmark's section (``## Title`` up to the next ``## ``) of the results file, keeping
    the others."""
    text = results.read_text() if results.exists() else "# Benchmark results\n\nWritten by the scripts in benchmarks/.\n\n"
    if section in text:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        text = text[:start] + table.rstrip("\n") + "\n" + ("\n" + text[end + 1:] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + table
    results.write_text(text)


def synthetic_npz(path: str | Path, rows: int, shape: tuple[int, int, int], classes: int = 10, seed: int = 0) -> str:
    """A learnable synthetic image set as an .npz (uint8 ``x`` NHWC, int64 ``y``): the class sets the mean
    brightness, Gaussian noise on top. Returns the path, for ``data.uri``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    mean = labels[:, None, None, None] * (200 / classes) + 30
    np.savez(path, x=np.clip(rng.normal(mean, 30, (rows, *shape)), 0, 255).astype(np.uint8), y=labels)
    return str(path)


def verdict(name: str, values: list[float], target: float, *, at_least: bool = True, digits: int = 2) -> str:
    """``name: median (min, max); target >= t: met.`` (or ``< t``, ``not met``), judged on the median."""
    median = statistics.median(values)
    met = median >= target if at_least else median < target
    while not met and digits < 6 and float(f"{median:.{digits}f}") == target:
        digits += 1  # 0.949 would print as "0.95 ... target >= 0.95: not met"
    return f"{name}: {spread(values, digits)}; target {'>=' if at_least else '<'} {target:g}: " \
           f"**{'met' if met else 'not met'}**."


def steady_samples_per_worker(history: list[dict], samples_per_worker: int) -> float:
    """One worker's training samples / epoch time (training + validation, like raykit's ``epoch_time_s``),
    median over epochs 2+: epoch 1 pays one-off warm-up."""
    return statistics.median(samples_per_worker / row["epoch_time_s"] for row in history[1:] or history)


def digits_train_size() -> int:
    """Training samples in the default job's digits split."""
    from raykit.data import load_splits
    from raykit.spec import DataSpec

    return len(load_splits(DataSpec()).train)
