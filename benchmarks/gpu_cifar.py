"""Wall time from the command line on one GPU: CIFAR-10 ResNet-18 to the accuracy the plain baseline reaches
(part `cifar`), and the default digits job (part `digits`). Run through benchmarks/gpu.sh.

`cifar`: the plain baseline (benchmarks/baselines/cifar_torch.py: one process, no Ray, data decoded once and
held on the GPU as uint8, crop + flip + normalize batched there, channels-last, bf16 autocast) trains
ResNet-18 (3x3 stem) for `--epochs` epochs with the recipe of `--config` (jobs/configs/cifar10_resnet18.yaml:
SGD momentum 0.9 nesterov, weight decay 5e-4, its lr and schedule, label smoothing, batch 512) and reaches
validation accuracy A after its last epoch. Then `raykit train --config` (1 Ray Train worker, the GPU, a local
Ray started by the command as a user's would be) with the same epochs and `train.stop_at=A`: it stops at the
first epoch whose validation accuracy reaches A. Both train on the rows of `--data`/train.parquet and validate
on `--data`/test.parquet (the 10,000 test images: the accuracy is test accuracy, and a large validation set
keeps the stopping point from hanging on a few images). Each side is a new process timed from launch to exit:
imports, JPEG decoding, (raykit) Ray's start and the end-of-run test evaluation, export and plots count.

`digits`: `raykit train jobs/configs/digits_cnn_torch.yaml --set scaling.use_gpu=true --set scaling.num_workers=1`,
timed from launch to exit, with where the time went (raykit's result.json timings).

Without a GPU, `--device cpu` runs both at tiny size in fp32 (a smoke test of the script).

    python3 benchmarks/gpu_cifar.py --parts cifar digits [--data .gpu/cifar10] [--epochs 12] [--device cuda]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine_line, shared_ray_address, verdict, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CIFAR_SECTION = "## GPU: CIFAR-10 ResNet-18 to the plain baseline's accuracy"
DIGITS_SECTION = "## GPU: the default digits job"
CONFIG = REPO / "jobs" / "configs" / "cifar10_resnet18.yaml"
# The recipe when the config is missing (cifar_torch.py's SGD is momentum 0.9, nesterov, weight decay 5e-4).
RECIPE = {"lr": 0.2, "schedule": "onecycle", "label_smoothing": 0.1, "batch_size": 512}
FALLBACK_OVERRIDES = ["model.name=resnet18", "model.stem=small", "augment.preset=none", "optim.name=sgd",
                      "optim.momentum=0.9", "optim.nesterov=true", "optim.weight_decay=5e-4",
                      "checkpoint.keep_best=1", "checkpoint.monitor=val_acc", "checkpoint.mode=max",
                      'augment.ops=[{"op": "random_crop", "padding": 4}, {"op": "hflip", "p": 0.5}, {"op": '
                      '"normalize", "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}]']


def recipe(config: Path) -> dict:
    """lr, schedule, label smoothing and batch size from the raykit config (the plain side takes the same)."""
    if not config.is_file():
        return dict(RECIPE)
    import yaml

    spec = yaml.safe_load(config.read_text())
    optim, train = spec.get("optim", {}), spec.get("train", {})
    # What cifar_torch.py fixes: a config that differs is named in the table's caption.
    fixed = {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "warmup_epochs": 0.0, "min_lr_fraction": 0.0}
    return {"lr": optim.get("lr", RECIPE["lr"]), "schedule": optim.get("schedule", RECIPE["schedule"]),
            "label_smoothing": train.get("label_smoothing", 0.0), "batch_size": train.get("batch_size", 512),
            "plain_differs": {key: optim[key] for key, value in fixed.items() if key in optim and optim[key] != value}}


def timed(command: list[str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    """Seconds from launch to exit of ``command`` (run from the checkout's root, a fresh local Ray for raykit)."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    started = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return seconds, out


def raykit_command(config: str | None, sets: list[str]) -> list[str]:
    shared = shared_ray_address()  # smoke tests only: the test session's Ray instead of a fresh one
    command = [sys.executable, "-m", "raykit.cli", "train", *([config] if config else [])]
    for item in sets:
        command += ["--set", item]
    return command + (["--address", shared] if shared else [])


def run_record(storage: str, name: str) -> dict:
    """result.json of a finished raykit run, plus its per-epoch rows (metrics.csv)."""
    run = Path(storage, name)
    result = json.loads((run / "result.json").read_text())
    with open(run / "metrics.csv") as rows:
        result["history"] = [{key: float(value) for key, value in row.items() if value not in ("", None)}
                             for row in csv.DictReader(rows)]
    return result


def data_files(args, work: Path) -> Path:
    """``--data``'s files, or slices of them when ``--train-rows``/``--test-rows`` ask for fewer rows."""
    if not args.train_rows and not args.test_rows:
        return args.data
    import pyarrow.parquet as pq

    for name, rows in (("train", args.train_rows), ("test", args.test_rows)):
        table = pq.read_table(args.data / f"{name}.parquet", columns=["image", "label"])
        pq.write_table(table.slice(0, rows or table.num_rows), work / f"{name}.parquet")
    return work


def cifar(args, work: Path) -> dict:
    data, steps = data_files(args, work), recipe(args.config)
    if args.batch_size:
        steps["batch_size"] = args.batch_size
    gpu = args.device == "cuda"
    plain_command = [sys.executable, str(REPO / "benchmarks" / "baselines" / "cifar_torch.py"), "--data", str(data),
                     "--train-rows", "1000000", "--test-rows", "1000000", "--val-split", "test", "--epochs",
                     str(args.epochs), "--device", args.device, "--model", "resnet18", "--optimizer", "sgd",
                     "--lr", str(steps["lr"]), "--schedule", steps["schedule"], "--label-smoothing",
                     str(steps["label_smoothing"]), "--batch-size", str(steps["batch_size"]), "--precision",
                     args.precision, "--threads", str(os.cpu_count()), "--json"]
    runs: dict = {"recipe": steps, "epochs": args.epochs,
                  "config": os.path.relpath(args.config, REPO) if args.config.is_file() else None}
    seconds, out = timed(plain_command, args.timeout)
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    runs["plain"] = {"wall_s": seconds, **plain, "target": plain["val_acc"][-1]}
    print(f"plain: {runs['plain']}", flush=True)
    publish(CIFAR_SECTION, render_cifar(runs, args), runs, args)
    sets = [f"data.uri={data / 'train.parquet'}", f"data.val_uri={data / 'test.parquet'}",
            f"data.test_uri={data / 'test.parquet'}", f"train.epochs={args.epochs}",
            f"train.stop_at={runs['plain']['target']}", f"train.batch_size={steps['batch_size']}",
            f"train.precision={args.precision}", f"scaling.use_gpu={str(gpu).lower()}", "scaling.num_workers=1",
            "data.loader=memory", f"storage={work / 'runs'}", "name=cifar10-resnet18"]
    if not args.config.is_file():
        sets = FALLBACK_OVERRIDES + [f"optim.lr={steps['lr']}", f"optim.schedule={steps['schedule']}",
                                     f"train.label_smoothing={steps['label_smoothing']}"] + sets
    seconds, _ = timed(raykit_command(str(args.config) if args.config.is_file() else None, sets), args.timeout)
    record = run_record(str(work / "runs"), "cifar10-resnet18")
    runs["raykit"] = {"wall_s": seconds, "epochs": len(record["history"]),
                      "val_acc": [row["val_acc"] for row in record["history"]],
                      "test_acc": record["test_metrics"].get("test_acc"), "timings": record["timings"]}
    print(f"raykit: {runs['raykit']}", flush=True)
    publish(CIFAR_SECTION, render_cifar(runs, args), runs, args)
    return runs


def render_cifar(runs: dict, args) -> str:
    plain, steps = runs["plain"], runs["recipe"]
    config = f"`{runs['config']}`" if runs["config"] else "equivalent overrides (no config file)"
    differs = f" except optim {steps['plain_differs']} (fixed in cifar_torch.py)" if steps.get("plain_differs") else ""
    lines = [CIFAR_SECTION, "", f"{machine_line()} CIFAR-10 (JPEG copy), {os.path.relpath(args.data, REPO)}: "
             f"ResNet-18 (3x3 stem), crop (pad 4) + flip + normalize, SGD nesterov lr {steps['lr']:g} "
             f"{steps['schedule']}, label smoothing {steps['label_smoothing']:g}, batch {steps['batch_size']}, "
             f"{args.precision}; raykit's recipe from {config}, the plain baseline's the same{differs}. A = the plain "
             f"baseline's validation (= test set) accuracy after {runs['epochs']} epochs; raykit trains the same "
             "schedule and stops at the first epoch >= A (`train.stop_at`). Wall: launch to exit of each command "
             "(imports, decoding, Ray's start and raykit's end-of-run work included).", "",
             "| side | wall, s | epochs | accuracy reached | notes |", "|---|---|---|---|---|",
             f"| plain PyTorch (benchmarks/baselines/cifar_torch.py) | {plain['wall_s']:.1f} | {runs['epochs']} | "
             f"{plain['target']:.4f} (= A) | decoding {plain['decode_s']:.1f} s, epochs "
             f"{sum(plain['epoch_seconds']):.1f} s |"]
    ours = runs.get("raykit")
    if ours:
        best = max(ours["val_acc"])
        timings = ours["timings"]
        notes = ", ".join(f"{label} {timings[key]:.1f} s" for key, label in
                          (("ray_start_s", "Ray start"), ("to_worker_process_s", "to worker"),
                           ("worker_setup_s", "worker set-up"), ("data_s", "data"), ("epochs_s", "epochs"))
                          if key in timings)
        lines.append(f"| raykit, 1 Ray Train worker | {ours['wall_s']:.1f} | {ours['epochs']} | {best:.4f} "
                     f"({'reached A' if best >= plain['target'] else 'A not reached'}) | {notes} |")
        ratio = ours["wall_s"] / plain["wall_s"]
        lines += ["", verdict("Wall to A, raykit / plain", [ratio], 1.15, at_least=False) if best >= plain["target"]
                  else f"Wall to A, raykit / plain: not judged: raykit's best validation accuracy {best:.4f} stayed "
                       f"below A = {plain['target']:.4f} in the same {ours['epochs']} epochs (wall ratio for those "
                       f"epochs {ratio:.2f})."]
    return "\n".join(lines + [""])


def digits(args, work: Path) -> dict:
    sets = [f"scaling.use_gpu={str(args.device == 'cuda').lower()}", "scaling.num_workers=1",
            f"storage={work / 'runs'}", "name=digits-gpu"] + ([f"train.epochs={args.digits_epochs}"]
                                                              if args.digits_epochs else [])
    seconds, _ = timed(raykit_command("jobs/configs/digits_cnn_torch.yaml", sets), args.timeout)
    record = run_record(str(work / "runs"), "digits-gpu")
    runs = {"wall_s": seconds, "epochs": len(record["history"]), "timings": record["timings"],
            "train_val_s": sum(row["epoch_time_s"] for row in record["history"]),
            "test_acc": record["test_metrics"].get("test_acc")}
    print(f"digits: {runs}", flush=True)
    publish(DIGITS_SECTION, render_digits(runs, args), runs, args)
    return runs


def render_digits(runs: dict, args) -> str:
    from raykit.timing import PHASES

    lines = [DIGITS_SECTION, "", f"{machine_line()} `raykit train jobs/configs/digits_cnn_torch.yaml --set "
             f"scaling.use_gpu={str(args.device == 'cuda').lower()} --set scaling.num_workers=1"
             f"{f' --set train.epochs={args.digits_epochs}' if args.digits_epochs else ''}`, timed from launch to "
             "exit; phases from the run's result.json.", "",
             "| measure | seconds |", "|---|---|", f"| wall, launch to exit | {runs['wall_s']:.1f} |",
             f"| training + validation ({runs['epochs']} epochs, sum of epoch_time_s) | {runs['train_val_s']:.1f} |"]
    lines += [f"| {label} | {runs['timings'][key]:.1f} |" for key, _, label in PHASES if key in runs["timings"]]
    return "\n".join(lines + ["", f"Test accuracy {runs['test_acc']:.4f}.", ""])


def publish(section: str, table: str, runs: dict, args) -> None:
    """The table so far, written after every measurement: a part cut short by its timeout keeps its rows."""
    write_section(section, table, args.results)
    if args.json:
        name = "cifar" if section == CIFAR_SECTION else "digits"
        path = args.json.with_name(f"{args.json.stem}-{name}{args.json.suffix}")
        path.write_text(json.dumps(runs, indent=1, default=str))
    print(table, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("cifar", "digits"), default=["cifar", "digits"])
    parser.add_argument("--data", type=Path, default=REPO / ".gpu" / "cifar10",
                        help="folder with train.parquet and test.parquet (benchmarks/gpu_data.sh writes .gpu/cifar10)")
    parser.add_argument("--train-rows", type=int, default=0, help="use only the first N training rows (0: all)")
    parser.add_argument("--test-rows", type=int, default=0, help="use only the first N test rows (0: all)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=0, help="0: the config's")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--digits-epochs", type=int, default=0, help="0: the config's")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed to each command")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the measurements as NAME-cifar.json / NAME-digits.json beside this path")
    args = parser.parse_args()
    if "cifar" in args.parts and not (args.data / "train.parquet").is_file():
        raise SystemExit(f"no CIFAR-10 Parquet files in {args.data} (bash benchmarks/gpu_data.sh writes them)")
    with tempfile.TemporaryDirectory(prefix="raykit-gpu-wall-") as work:
        for part in args.parts:
            (cifar if part == "cifar" else digits)(args, Path(work))


if __name__ == "__main__":
    main()
