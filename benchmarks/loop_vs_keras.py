"""raykit's TensorFlow / Keras 3 training loop vs plain Keras ``model.fit``, in one process (no torch).

raykit's loop runs in-process without Ray (``fit(spec, WorkerSession())``: its custom ``tf.function`` step
under the default strategy); the baseline (benchmarks/baselines/plain_keras.py) compiles the same CNN built
by hand and calls ``model.fit``. Same synthetic data (digits-shaped 8x8x1 images; the same train/val
split), batch size, Adam 1e-3 and TensorFlow thread pools; both validate every epoch (batches of 1024).
The two alternate ``--repeats`` times. Throughput is training samples / epoch seconds, median over epochs 2+.

    .venv/bin/python benchmarks/loop_vs_keras.py [--rows 24000] [--epochs 4] [--repeats 5] [--results FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (RESULTS, machine_line, spread, steady_samples_per_worker, synthetic_npz,
                               verdict, write_section)  # noqa: E402

SECTION = "## Training loop: raykit vs plain Keras"
SHAPE = (8, 8, 1)


def raykit_run(spec, train_size: int) -> tuple[float, float]:
    import keras

    from raykit.engine import fit
    from raykit.session import WorkerSession

    keras.backend.clear_session()
    history = fit(spec, WorkerSession())["history"]
    return steady_samples_per_worker(history, train_size), history[-1]["val_acc"]


def plain_run(spec, splits) -> tuple[float, float]:
    import keras

    from benchmarks.baselines import plain_keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.train.seed)
    model = plain_keras.build_cnn(splits.input_shape, splits.num_classes)
    seconds, val_acc = plain_keras.train(model, splits.train.x, splits.train.y, splits.val.x, splits.val.y,
                                         epochs=spec.train.epochs, batch_size=spec.train.batch_size, lr=spec.optim.lr)
    return steady_samples_per_worker([{"epoch_time_s": s} for s in seconds], len(splits.train)), val_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=24_000, help="synthetic images (70%% train, 15%% val)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra- and inter-op threads for both")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # raykit's TF loop sizes its pools from it
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from raykit.data import load_splits
    from raykit.spec import load_spec

    with tempfile.TemporaryDirectory(prefix="raykit-bench-keras-") as work:
        uri = synthetic_npz(Path(work) / "images.npz", args.rows, SHAPE)
        spec = load_spec(None, [f"data.uri={uri}", "framework=tf", "scaling.num_workers=1",
                                f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}"])
        splits = load_splits(spec.data)
        runs: dict[str, list] = {"raykit": [], "plain": []}
        for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both
            runs["raykit"].append(raykit_run(spec, len(splits.train)))
            runs["plain"].append(plain_run(spec, splits))
    table = render(runs, len(splits.train), args)
    print(table)
    write_section(SECTION, table, args.results)


def render(runs: dict, train_size: int, args) -> str:
    ratio = [r[0] / p[0] for r, p in zip(runs["raykit"], runs["plain"])]
    lines = [SECTION, "", machine_line("tf") + f" TensorFlow intra/inter-op threads {args.threads}. The seed's "
             f"CNN on {args.rows:,} synthetic {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} images ({train_size:,} training), "
             f"batch {args.batch_size}, Adam 1e-3, {args.epochs} epochs per run, each followed by validation in "
             f"batches of 1,024; {args.repeats} repeats alternating raykit's in-process TF loop and plain "
             "`model.compile` + `model.fit` (Keras defaults otherwise) on the same hand-built model "
             "(benchmarks/baselines/plain_keras.py). Samples/s = training samples / (train + validation "
             "seconds), median over epochs 2+.", "",
             "| loop | training samples/s | last val accuracy |", "|---|---|---|"]
    for name, label in (("raykit", "raykit TF `fit`"), ("plain", "plain Keras `model.fit`")):
        lines.append(f"| {label} | {spread([r[0] for r in runs[name]], 0)} | "
                     f"{spread([r[1] for r in runs[name]], 3)} |")
    lines += ["", verdict("Ratio raykit / plain Keras, per repeat", ratio, 0.9), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
