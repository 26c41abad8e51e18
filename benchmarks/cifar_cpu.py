"""CIFAR-10 on the CPU: raykit (1 Ray Train worker, data in memory or streamed) vs a plain PyTorch loop.

The seed's CNN with the seed's augmentation (random crop, padding 4; horizontal flip; normalize by
CIFAR-10's mean and std), Adam 1e-3 with a cosine schedule, batch 64, on slices of the CIFAR-10 JPEG
Parquet copy (`--data`): the first `--train-rows` training images, the next `--val-rows` for validation,
the first `--test-rows` test images. Contenders, alternating `--repeats` times:

* raykit, `data.loader: memory`: `raykit.train` with 1 Ray Train worker holding 2 CPUs (so torch runs 2
  threads; this script's process has started Ray, so the run takes the worker group, not the inline path);
* raykit, `data.loader: stream`: the same, with Ray Data decoding the JPEG row groups (1 CPU of reads);
* plain PyTorch (benchmarks/baselines/cifar_torch.py): one process, `torch.set_num_threads(2)`, the images
  decoded once, batches augmented on the device (here the CPU) and fed channels-last.

Wall time, each side a fresh process timed from launch to exit (as a user runs them, decoding included):
`raykit train` with the same spec in memory (one worker: it trains inline, with no Ray started) vs
`benchmarks/baselines/cifar_torch.py --json` on the same slices and epochs.

Images/s = training images / (training + validation seconds) of an epoch, median over epochs 2+; test
accuracy after the last epoch (raykit: of the best checkpoint by validation accuracy). One local Ray with
3 logical CPUs on this 2-core machine (the worker's 2 and the stream's reads share the cores).

    .venv/bin/python benchmarks/cifar_cpu.py [--data ../shared/data/cifar10] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")

from benchmarks.common import RESULTS, machine_line, shared_ray_address, spread, start_ray, verdict, \
    write_section  # noqa: E402
from benchmarks.parity_cifar import CIFAR, write_slices  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTION = "## CIFAR-10 on the CPU: raykit vs plain PyTorch"
OPS = [{"op": "random_crop", "padding": 4}, {"op": "hflip", "p": 0.5},
       {"op": "normalize", "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}]


def overrides(loader: str, uris: dict, args, storage: str, name: str) -> dict:
    """The raykit spec of every raykit contender (as ``raykit.train`` overrides)."""
    return {**uris, "data.loader": loader, "data.read_cpus": args.read_cpus, "model.name": "cnn",
            "augment.preset": "none", "augment.ops": OPS, "optim.name": "adam", "optim.lr": 1e-3,
            "optim.schedule": "cosine", "train.batch_size": 64, "train.epochs": args.epochs, "scaling.num_workers": 1,
            "scaling.resources_per_worker": {"CPU": args.worker_cpus}, "checkpoint.keep_best": 1,
            "train.tensorboard": False, "storage": storage, "name": name}


def steady_rate(history: list[dict]) -> float:
    """Training images/s (training + validation seconds), median over epochs 2+."""
    return statistics.median(row["samples_per_s"] for row in history[1:] or history)


def raykit_run(loader: str, uris: dict, args, storage: str, index: int) -> dict:
    import raykit

    result = raykit.train(None, overrides(loader, uris, args, storage, f"cifar-{loader}-{index}"), verbose=False)
    return {"images_per_s": steady_rate(result.history), "test_acc": result.test_accuracy}


def fresh_process_run(name: str, uris: dict, args, storage: str, index: int) -> dict:
    """``raykit train`` (name "raykit-cli") or the plain script ("plain-cli") in a new process, timed from
    launch to exit."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    if name == "raykit-cli":
        import yaml

        from raykit.spec.paths import set_dotted

        nested: dict = {}
        for path, value in overrides("memory", uris, args, storage, f"cifar-cli-{index}").items():
            set_dotted(nested, path, value)
        spec = Path(storage, f"cli-{index}.yaml")
        spec.write_text(yaml.safe_dump(nested))
        shared = shared_ray_address()  # smoke tests only
        command = [sys.executable, "-m", "raykit.cli", "train", str(spec), *(["--address", shared] if shared else [])]
    else:
        command = [sys.executable, str(REPO / "benchmarks" / "baselines" / "cifar_torch.py"), "--data", str(args.data),
                   "--train-rows", str(args.train_rows), "--val-rows", str(args.val_rows), "--test-rows",
                   str(args.test_rows), "--epochs", str(args.epochs), "--threads", str(args.worker_cpus), "--json"]
    started = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    if name == "raykit-cli":
        from raykit.run import Run

        result = Run.open(Path(storage, f"cifar-cli-{index}"))
        return {"wall_s": wall, "images_per_s": steady_rate(result.history), "test_acc": result.test_accuracy}
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    rates = [args.train_rows / seconds for seconds in plain["epoch_seconds"][1:] or plain["epoch_seconds"]]
    return {"wall_s": wall, "images_per_s": statistics.median(rates), "test_acc": plain["test_acc"]}


def plain_run(data: dict, args) -> dict:
    import torch

    from benchmarks.baselines import cifar_torch

    torch.set_num_threads(args.worker_cpus)  # as many threads as Ray gives the raykit worker (OMP_NUM_THREADS)
    out = cifar_torch.train(data, epochs=args.epochs, batch_size=64, lr=1e-3)
    rates = [args.train_rows / s for s in out["epoch_seconds"][1:]] or [args.train_rows / out["epoch_seconds"][0]]
    return {"images_per_s": statistics.median(rates), "test_acc": out["test_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=CIFAR, help="folder with train.parquet and test.parquet")
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--val-rows", type=int, default=5_000)
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker-cpus", type=int, default=2, help="CPUs (so torch threads) of raykit's worker "
                                                                   "and threads of the plain loop")
    parser.add_argument("--read-cpus", type=float, default=1.0, help="data.read_cpus of the streamed run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    if not (args.data / "train.parquet").is_file():
        raise SystemExit(f"no CIFAR-10 Parquet files in {args.data} (see ../shared/data/cifar10/README.md)")

    import ray

    from benchmarks.baselines.cifar_torch import decode_slices

    scratch = tempfile.mkdtemp(prefix="raykit-bench-cifar-")
    uris = write_slices(args.data, Path(scratch), args.train_rows, args.val_rows, args.test_rows)
    data = decode_slices(args.data, args.train_rows, args.val_rows, args.test_rows)
    runs: dict[str, list] = {"memory": [], "stream": [], "plain": [], "raykit-cli": [], "plain-cli": []}
    start_ray(args.worker_cpus + math.ceil(args.read_cpus), log_to_driver=False)
    try:
        for index in range(args.repeats):  # alternate, so drift on a shared machine hits all
            for name in runs:
                if name.endswith("-cli"):
                    run = fresh_process_run(name, uris, args, scratch, index)
                else:
                    run = plain_run(data, args) if name == "plain" else raykit_run(name, uris, args, scratch, index)
                runs[name].append(run)
                print(f"{name}: {run['images_per_s']:.0f} images/s, test accuracy {run['test_acc']:.4f}", flush=True)
    finally:
        ray.shutdown()
    table = render(runs, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(runs: dict, args) -> str:
    def ratio(a: str, b: str) -> list[float]:
        return [x["images_per_s"] / y["images_per_s"] for x, y in zip(runs[a], runs[b])]

    labels = {"memory": "raykit, 1 Ray Train worker, data in memory", "stream": "raykit, 1 worker, streamed (Ray Data)",
              "plain": "plain PyTorch, 1 process (benchmarks/baselines/cifar_torch.py)"}
    lines = [SECTION, "", f"{machine_line()} CIFAR-10 (JPEG copy): {args.train_rows:,} training, {args.val_rows:,} "
             f"validation, {args.test_rows:,} test images; the seed CNN, random crop (pad 4) + flip + normalize, "
             f"Adam 1e-3 cosine, batch 64, {args.epochs} epochs, {args.worker_cpus} torch threads on every side "
             f"(streamed reads: {args.read_cpus:g} CPU); {args.repeats} "
             "repeats alternating the contenders; median (min, max). Images/s: training images / (training + "
             "validation seconds), median over epochs 2+.", "",
             "| contender | images/s | test accuracy |", "|---|---|---|"]
    for name, label in labels.items():
        lines.append(f"| {label} | {spread([r['images_per_s'] for r in runs[name]], 0)} | "
                     f"{spread([r['test_acc'] for r in runs[name]], 4)} |")
    gap = [abs(m["test_acc"] - p["test_acc"]) * 100 for m, p in zip(runs["memory"], runs["plain"])]
    lines += ["", verdict("Images/s raykit (memory) / plain", ratio("memory", "plain"), 0.95),
              verdict("Images/s streamed / in memory", ratio("stream", "memory"), 0.85),
              verdict("Test-accuracy gap |raykit - plain|, points", gap, 1.0, at_least=False), "",
              "Wall time from launch to exit, each side a fresh process: `raykit train` (1 worker, data in memory: "
              "inline, no Ray started) vs `benchmarks/baselines/cifar_torch.py`, the same slices and epochs "
              "(JPEG decoding, every epoch's validation and the final test pass included on both sides).", "",
              "| contender | wall s | images/s | test accuracy |", "|---|---|---|---|"]
    for name, label in (("raykit-cli", "`raykit train`, fresh process"),
                        ("plain-cli", "plain PyTorch script, fresh process")):
        lines.append(f"| {label} | {spread([r['wall_s'] for r in runs[name]])} | "
                     f"{spread([r['images_per_s'] for r in runs[name]], 0)} | "
                     f"{spread([r['test_acc'] for r in runs[name]], 4)} |")
    wall = [r["wall_s"] / p["wall_s"] for r, p in zip(runs["raykit-cli"], runs["plain-cli"])]
    lines += ["", verdict("Wall raykit / plain, fresh processes", wall, 1.15, at_least=False) + "  ",
              verdict("Images/s raykit inline / plain, fresh processes", ratio("raykit-cli", "plain-cli"), 0.95), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
