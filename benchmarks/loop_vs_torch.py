"""raykit's PyTorch training loop vs the plain loop a user would write, in one process, same everything.

raykit's loop runs in-process without Ray (``fit(spec, WorkerSession())``, no run directory); the plain
loop (benchmarks/baselines/plain_torch.py) trains the same CNN built by hand. Same synthetic data
(digits-shaped 8x8x1 images, so the epochs are long enough to time; the same train/val split), batch
size, Adam 1e-3 and ``torch.set_num_threads``; both evaluate the validation split every epoch. The two
alternate ``--repeats`` times. Throughput is training samples / epoch seconds, median over epochs 2+.

    .venv/bin/python benchmarks/loop_vs_torch.py [--rows 40000] [--epochs 4] [--repeats 5] [--results FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.baselines import plain_torch  # noqa: E402
from benchmarks.common import (RESULTS, machine_line, spread, steady_samples_per_worker, synthetic_npz,
                               verdict, write_section)  # noqa: E402
from raykit.backends.torch.backend import seed_everything  # noqa: E402
from raykit.engine import fit  # noqa: E402
from raykit.data import load_splits  # noqa: E402
from raykit.session import WorkerSession  # noqa: E402
from raykit.spec import load_spec  # noqa: E402

SECTION = "## Training loop: raykit vs plain PyTorch"
SHAPE = (8, 8, 1)


def raykit_run(spec, train_size: int) -> tuple[float, float]:
    history = fit(spec, WorkerSession())["history"]
    return steady_samples_per_worker(history, train_size), history[-1]["val_acc"]


def plain_run(spec, splits, channels_last: bool) -> tuple[float, float]:
    seed_everything(spec.train.seed)
    model = plain_torch.build_cnn(splits.input_shape, splits.num_classes)
    seconds, val_acc = plain_torch.train(model, splits.train.x, splits.train.y, splits.val.x, splits.val.y,
                                         epochs=spec.train.epochs, batch_size=spec.train.batch_size,
                                         lr=spec.optim.lr, seed=spec.train.seed, channels_last=channels_last)
    return steady_samples_per_worker([{"epoch_time_s": s} for s in seconds], len(splits.train)), val_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40_000, help="synthetic images (70%% train, 15%% val)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both loops")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="raykit-bench-loop-") as work:
        uri = synthetic_npz(Path(work) / "images.npz", args.rows, SHAPE)
        spec = load_spec(None, [f"data.uri={uri}", "scaling.num_workers=1", f"train.epochs={args.epochs}",
                                f"train.batch_size={args.batch_size}"])
        splits = load_splits(spec.data)
        runs: dict[str, list] = {"raykit": [], "plain": [], "plain_cl": []}
        for _ in range(args.repeats):  # alternate, so drift on a shared machine hits all
            runs["raykit"].append(raykit_run(spec, len(splits.train)))
            runs["plain"].append(plain_run(spec, splits, channels_last=False))
            runs["plain_cl"].append(plain_run(spec, splits, channels_last=True))
    table = render(runs, len(splits.train), args)
    print(table)
    write_section(SECTION, table, args.results)


def render(runs: dict, train_size: int, args) -> str:
    ratio = {name: [r[0] / p[0] for r, p in zip(runs["raykit"], runs[name])] for name in ("plain", "plain_cl")}
    lines = [SECTION, "", machine_line() + f" `torch.set_num_threads({args.threads})`. The seed's CNN on "
             f"{args.rows:,} synthetic {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} images ({train_size:,} training), batch "
             f"{args.batch_size}, Adam 1e-3, {args.epochs} epochs per run, each epoch followed by validation; "
             f"{args.repeats} repeats alternating raykit's in-process loop (`fit(spec, WorkerSession())`) and a "
             "plain loop on the same hand-built model (benchmarks/baselines/plain_torch.py), once with standard NCHW "
             "tensors and once channels-last (what `torch.from_numpy(nhwc).permute(0, 3, 1, 2)` gives; raykit's "
             "`train.channels_last: auto` feeds a conv net channels-last too). Samples/s = training samples / "
             "(train + validation seconds), median over epochs 2+.", "",
             "| loop | training samples/s | last val accuracy |", "|---|---|---|"]
    for name, label in (("raykit", "raykit `fit` (channels-last, auto)"), ("plain", "plain PyTorch, NCHW"),
                        ("plain_cl", "plain PyTorch, channels-last")):
        lines.append(f"| {label} | {spread([r[0] for r in runs[name]], 0)} | "
                     f"{spread([r[1] for r in runs[name]], 3)} |")
    lines += ["", verdict("Ratio raykit / plain channels-last (the same layout), per repeat", ratio["plain_cl"], 0.95),
              verdict("Ratio raykit / plain NCHW, per repeat", ratio["plain"], 0.95)
              + " The two plain rows differ only in the input's memory layout (channels-last carries through conv, "
              "batch norm and max-pool on the CPU).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
