"""Framework parity on real images: one spec trained with PyTorch and with TensorFlow/Keras on a CIFAR-10
slice, accuracy by epoch side by side.

The slices are written once to temporary Parquet files from `../shared/data/cifar10/` (JPEG, rows already
shuffled): the first `--train-rows` of train.parquet for training, the next `--val-rows` for validation,
the first `--test-rows` of test.parquet for the test. The spec is the same for both frameworks but for
`framework`: the seed CNN, `augment.preset: standard`, Adam 1e-3, global batch 64, `--workers` Ray Train
workers each, `--epochs` epochs, on one local Ray (`num_cpus` = workers). Each `--seeds` value
(`train.seed`: initial weights, data order, augmentation, dropout) trains both frameworks, one after the
other; the test accuracy is that of the best checkpoint (validation accuracy), as `raykit train` reports it.

    .venv/bin/python benchmarks/parity_cifar.py [--seeds 0 1 2] [--epochs 5] [--train-rows 10000] [--results FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")

from benchmarks.common import RESULTS, machine_line, start_ray, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10"
SECTION = "## Framework parity on CIFAR-10"
FRAMEWORKS = ("torch", "tf")


def write_slices(source: Path, out: Path, train_rows: int, val_rows: int, test_rows: int) -> dict:
    """Parquet files of the train/val/test slices; returns the spec's ``data.*_uri`` overrides."""
    import pyarrow.parquet as pq

    train = pq.read_table(source / "train.parquet", columns=["image", "label"])
    test = pq.read_table(source / "test.parquet", columns=["image", "label"])
    if train_rows + val_rows > train.num_rows or test_rows > test.num_rows:
        raise SystemExit(f"--train-rows + --val-rows must be at most {train.num_rows}, --test-rows at most "
                         f"{test.num_rows}")
    slices = {"train": train.slice(0, train_rows), "val": train.slice(train_rows, val_rows),
              "test": test.slice(0, test_rows)}
    uris = {}
    for name, table in slices.items():
        path = out / f"{name}.parquet"
        pq.write_table(table, path)
        uris[f"data.{name}_uri"] = str(path)
    return uris


def spec_overrides(framework: str, seed: int, args, uris: dict, storage: str) -> dict:
    return {"framework": framework, **uris, "model.name": "cnn", "augment.preset": "standard",
            "optim.name": "adam", "optim.lr": 1e-3, "train.batch_size": 64, "train.epochs": args.epochs,
            "train.seed": seed, "scaling.num_workers": args.workers, "storage": storage,
            "name": f"parity-{framework}-{seed}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=CIFAR, help="folder with train.parquet and test.parquet")
    parser.add_argument("--train-rows", type=int, default=10_000)
    parser.add_argument("--val-rows", type=int, default=2_000)
    parser.add_argument("--test-rows", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="train.seed values; each trains both frameworks (one seed is noisy: about +-1 point)")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    if not (args.data / "train.parquet").is_file():
        raise SystemExit(f"no CIFAR-10 Parquet files in {args.data} (see ../shared/data/cifar10/README.md)")

    import ray

    import raykit

    scratch = tempfile.mkdtemp(prefix="raykit-bench-parity-")
    uris = write_slices(args.data, Path(scratch), args.train_rows, args.val_rows, args.test_rows)
    runs: dict = {framework: [] for framework in args.frameworks}
    start_ray(args.workers, log_to_driver=True)
    try:
        for seed in args.seeds:
            for framework in args.frameworks:
                result = raykit.train(None, spec_overrides(framework, seed, args, uris, scratch), verbose=False)
                runs[framework].append({"history": result.history, "test_acc": result.test_accuracy,
                                        "seconds": result.seconds})
                print(f"{framework} seed {seed}: val acc by epoch "
                      f"{[round(row['val_acc'], 4) for row in result.history]}, test acc {result.test_accuracy:.4f}, "
                      f"{result.seconds:.0f} s", flush=True)
    finally:
        ray.shutdown()
    table = render(runs, args)
    print(table)
    write_section(SECTION, table, args.results)


def _tf_versions() -> str:
    """TensorFlow's and Keras's versions, read from the installed packages (without importing them)."""
    from importlib import metadata

    def version(*names: str) -> str:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
        return "not installed"

    return f"TensorFlow {version('tensorflow', 'tensorflow-cpu')}, Keras {version('keras')}."


def _mean(values) -> float:
    return statistics.fmean(values)


def caption(names: list[str], args) -> str:
    seeds = ", ".join(str(seed) for seed in args.seeds)
    return (f"{machine_line()} {_tf_versions()} One spec, `framework` {' or '.join(names)}: CIFAR-10 (JPEG copy), "
            f"the first {args.train_rows:,} training images, the next {args.val_rows:,} for validation, the first "
            f"{args.test_rows:,} test images; the seed CNN (conv 32-64-128, dense 128, dropout 0.5), "
            f"`augment.preset: standard`, Adam 1e-3, global batch 64, {args.workers} Ray Train workers each, "
            f"{args.epochs} epochs; `train.seed` {seeds}. Per epoch: validation accuracy and training loss (mean "
            "over seeds); test accuracy of the best checkpoint (by validation accuracy).")


def render(runs: dict, args) -> str:
    names = list(runs)
    lines = [SECTION, "", caption(names, args), "",
             "| epoch | " + " | ".join(f"{n} val acc" for n in names) + " | "
             + " | ".join(f"{n} train loss" for n in names) + " |", "|---" * (1 + 2 * len(names)) + "|"]
    for index in range(args.epochs):
        accuracy = [f"{_mean(run['history'][index]['val_acc'] for run in runs[n]):.4f}" for n in names]
        loss = [f"{_mean(run['history'][index]['train_loss'] for run in runs[n]):.3f}" for n in names]
        lines.append(f"| {index + 1} | " + " | ".join(accuracy + loss) + " |")
    tests = {n: [run["test_acc"] for run in runs[n]] for n in names}
    both = len(names) == 2
    gaps = [100 * (a - b) for a, b in zip(*tests.values())] if both else []
    lines += ["", "| | " + " | ".join(names) + (f" | {names[0]} - {names[1]} (points)" if both else "") + " |",
              "|---" * (1 + len(names) + both) + "|",
              "| test accuracy, mean over seeds | " + " | ".join(f"{_mean(tests[n]):.4f}" for n in names)
              + (f" | {_mean(gaps):+.2f}" if both else "") + " |"]
    if len(args.seeds) > 1:
        lines.append("| test accuracy by seed | " + " | ".join(" ".join(f"{v:.4f}" for v in tests[n]) for n in names)
                     + (" | " + " ".join(f"{g:+.2f}" for g in gaps) if both else "") + " |")
    lines.append("| wall seconds per run, mean | " + " | ".join(f"{_mean(r['seconds'] for r in runs[n]):.0f}"
                                                             for n in names) + (" |" if both else "") + " |")
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    main()
