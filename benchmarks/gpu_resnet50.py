"""ResNet-50 on synthetic 224x224 images: raykit (1 Ray Train worker, one GPU, bf16) vs plain PyTorch loops
on the same GPU, side by side: images/s (steady state) and peak GPU memory. Run through benchmarks/gpu.sh.

Both sides train on the same data held the same way: `--images` uint8 NHWC noise images (labels cycling
over `--classes`) on the GPU, each batch gathered there, scaled to float and laid out for the model, and
`--val-images` more evaluated after every epoch (raykit's epoch is training + validation; so is the plain
loop's). Same model (torchvision's resnet50, which raykit's `resnet50` with the imagenet stem is), batch,
optimizer (SGD momentum 0.9, lr 0.1, torch's fused kernel), bf16 autocast, cuDNN autotuning.

Contenders: plain PyTorch written three ways (NCHW eager; channels-last eager; channels-last +
`torch.compile(model)`) and raykit with `train.compile` set to each of `--raykit-compile` (channels-last is
raykit's default for conv nets), in the order of :func:`schedule`; raykit's runs after the first only while
`--budget-s` allows. Images/s: training
images / (training + validation seconds) of an epoch, median over epochs 2+; epoch 1 holds the one-off
costs (cuDNN autotuning, compilation; raykit also subtracts the seconds it spent compiling, `compile_s`, from
every epoch). Peak memory: `torch.cuda.max_memory_allocated` over the run (raykit: its `peak_gpu_mb`).
Without a GPU, `--device cpu` runs it all at tiny size (a smoke test of the script).

    python3 benchmarks/gpu_resnet50.py [--images 4096] [--batch 128] [--epochs 4] [--device cuda]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, machine_line, shared_ray_address, verdict, write_section  # noqa: E402

SECTION = "## GPU: ResNet-50, raykit vs plain PyTorch"
PLAIN = {"nchw": "plain PyTorch, NCHW, eager", "channels_last": "plain PyTorch, channels-last, eager",
         "channels_last+compile": "plain PyTorch, channels-last + torch.compile"}


def synthetic_npz(path: str, images: int, size: int, classes: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8), y=np.arange(images) % classes)
    return path


def raykit_side(files: dict, compile_mode: str, args) -> dict:
    import raykit

    result = raykit.train(None, {
        "data.train_uri": files["train"], "data.val_uri": files["val"], "data.test_uri": files["val"],
        "model.name": "resnet50", "model.stem": "imagenet", "model.dropout": 0.0, "optim.name": "sgd",
        "optim.lr": 0.1, "optim.momentum": 0.9, "train.batch_size": args.batch, "train.epochs": args.epochs,
        "train.precision": args.precision, "train.compile": compile_mode, "train.tensorboard": False,
        "scaling.num_workers": 1, "scaling.use_gpu": args.device == "cuda", "checkpoint.every_n_epochs": args.epochs,
        "storage": tempfile.mkdtemp(prefix="raykit-gpu-bench-"), "name": f"resnet50-compile-{compile_mode}"},
        verbose=False, address=shared_ray_address())
    history = result.history
    steady = history[1:] or history
    return {"images_per_s": statistics.median(row["samples_per_s"] for row in steady),
            "gpu_mb": max(row.get("peak_gpu_mb", 0.0) for row in history),
            "compile_s": sum(row.get("compile_s", 0.0) for row in history),
            "graph_breaks": history[-1].get("graph_breaks", 0), "wall_s": result.seconds}


def plain_side(variant: str, data: dict, args) -> dict:
    """One plain loop: the model built, then ``--epochs`` epochs of training + validation on ``data``."""
    import torch
    import torchvision

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    layout = torch.contiguous_format if variant == "nchw" else torch.channels_last
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = torchvision.models.resnet50(num_classes=args.classes).to(device, memory_format=layout)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    forward = torch.compile(model) if variant.endswith("+compile") else model
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    x, y, val_x, val_y = data["x"], data["y"], data["val_x"], data["val_y"]

    def to_input(pixels):  # uint8 NHWC -> float NCHW in [0, 1] with the variant's strides, one copy
        return pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=layout).div_(255)

    def epoch() -> float:
        started = time.perf_counter()
        model.train()
        correct = torch.zeros((), device=device)
        for rows in torch.randperm(len(y), device=device).split(args.batch):
            with torch.autocast(**autocast):
                logits = forward(to_input(x[rows]))
            loss = torch.nn.functional.cross_entropy(logits.float(), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += (logits.argmax(1) == y[rows]).sum()  # on the device, as raykit keeps its totals
        model.eval()
        with torch.no_grad(), torch.autocast(**autocast):
            correct += (forward(to_input(val_x)).argmax(1) == val_y).sum()
        correct.item()  # waits for the GPU
        return time.perf_counter() - started

    seconds = [epoch() for _ in range(args.epochs)]
    steady = seconds[1:] or seconds
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    del forward, model, optimizer
    return {"images_per_s": statistics.median(len(y) / s for s in steady), "gpu_mb": gpu_mb,
            "first_epoch_s": seconds[0], "steady_epoch_s": statistics.median(steady)}


def plain_data(files: dict, device: str) -> dict:
    import torch

    train, val = np.load(files["train"]), np.load(files["val"])
    to = dict(device=device)
    return {"x": torch.from_numpy(train["x"]).to(**to), "y": torch.from_numpy(train["y"]).long().to(**to),
            "val_x": torch.from_numpy(val["x"]).to(**to), "val_y": torch.from_numpy(val["y"]).long().to(**to)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096, help="training images (a multiple of --batch keeps "
                                                                 "every batch the same shape)")
    parser.add_argument("--val-images", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"),
                        help="fp32 for the CPU smoke test: bf16 autocast on CPUs without bf16 units is slow")
    parser.add_argument("--plain", nargs="+", choices=list(PLAIN), default=list(PLAIN), help="plain loops to run")
    parser.add_argument("--raykit-compile", nargs="+", choices=("off", "default", "max-autotune"),
                        default=["default", "off"], help="raykit runs, by train.compile, the first first")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="start another raykit run only if the script's time so far plus the last raykit "
                             "run's wall stays under this")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    runs: dict = {}
    with tempfile.TemporaryDirectory(prefix="raykit-gpu-data-") as work:
        files = {name: synthetic_npz(os.path.join(work, f"{name}.npz"), count, args.size, args.classes, seed)
                 for name, count, seed in (("train", args.images, 0), ("val", args.val_images, 1))}
        try:
            measure(files, args, runs)
        finally:
            import ray

            ray.shutdown()  # a Ray raykit started (or the shared one: disconnects only)
    print(json.dumps(runs, indent=1))


def schedule(args) -> list[tuple[str, str]]:
    """The contenders in the order they run: the eager plain loops, raykit's first run, the compiled plain
    loops, raykit's other runs. A run cut short by the time limit then costs the least: raykit has a row
    before the longest plain measurement (compilation) starts, and whichever of raykit and the plain loop
    compiles second finds torch's compile caches warm (compile time is kept out of both sides' images/s)."""
    eager = [("plain", v) for v in args.plain if not v.endswith("+compile")]
    compiled = [("plain", v) for v in args.plain if v.endswith("+compile")]
    ours = [("raykit", mode) for mode in args.raykit_compile]
    return eager + ours[:1] + compiled + ours[1:]


def measure(files: dict, args, runs: dict) -> None:
    """Every contender of :func:`schedule`, the table rewritten after each; raykit runs after the first only
    while ``--budget-s`` allows (the script's time so far plus the last raykit run's wall)."""
    started, last_wall, data = time.perf_counter(), 0.0, plain_data(files, args.device)
    for side, name in schedule(args):
        if side == "plain":
            runs[name] = attempt(plain_side, name, data, args)
            gc.collect()  # the variant's model, optimizer state and compiled graphs, before the next one's peak
        elif last_wall and time.perf_counter() - started + last_wall > args.budget_s:
            print(f"raykit, train.compile={name}: skipped, over --budget-s {args.budget_s:g}", flush=True)
            continue
        else:
            began = time.perf_counter()
            runs[f"raykit:{name}"] = attempt(raykit_side, files, name, args)
            last_wall = time.perf_counter() - began
        print(f"{side} {name}: {runs.get(name) or runs.get(f'raykit:{name}')}", flush=True)
        publish(runs, args)


def attempt(measure, *args) -> dict:
    """``measure(*args)``, or ``{"error": ...}`` when it raises: one failing contender (a compiler missing on
    the machine, memory) leaves the others' rows."""
    try:
        return measure(*args)
    except Exception as exc:  # noqa: BLE001 -- reported in the table and on stderr
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"}


def publish(runs: dict, args) -> None:
    """The table so far, written after every measurement: a run cut short by its timeout keeps its rows."""
    table = render(runs, args)
    write_section(SECTION, table, args.results)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=1))
    print(table, flush=True)


def render(runs: dict, args) -> str:
    lines = [SECTION, "", f"{machine_line()} ResNet-50 (torchvision layout, {args.classes} classes), "
             f"{args.size}x{args.size} synthetic uint8 images held on the {'GPU' if args.device == 'cuda' else 'CPU'} "
             f"by both sides, batch {args.batch}, {args.precision}, SGD momentum 0.9 (fused), cuDNN autotuning; "
             f"{args.epochs} epochs of "
             f"{args.images} training images + {args.val_images} validation images. Images/s = training images / "
             "(training + validation seconds) of an epoch, median over epochs 2+, on both sides (raykit's "
             "`samples_per_s`): epoch 1 holds cuDNN autotuning and compilation, and raykit also subtracts its "
             "`compile_s` from every epoch. Peak memory: `torch.cuda.max_memory_allocated` (raykit: `peak_gpu_mb`), "
             "the data on the device included on both sides.", "",
             "| loop | images/s | peak GPU memory, MiB | one-off |", "|---|---|---|---|"]
    for variant, label in PLAIN.items():
        if variant in runs:
            run = runs[variant]
            if "error" in run:
                lines.append(f"| {label} | failed: {run['error']} | | |")
                continue
            lines.append(f"| {label} | {run['images_per_s']:,.0f} | {run['gpu_mb']:,.0f} | first epoch "
                         f"{run['first_epoch_s']:.1f} s vs {run['steady_epoch_s']:.2f} s steady |")
    for mode in ("off", "default", "max-autotune"):
        if f"raykit:{mode}" in runs:
            run, label = runs[f"raykit:{mode}"], f"raykit, 1 Ray Train worker, train.compile={mode}"
            if "error" in run:
                lines.append(f"| {label} | failed: {run['error']} | | |")
                continue
            eager = " (no compile time: did it fall back to eager? see the log)" if mode != "off" and \
                not run["compile_s"] else ""
            lines.append(f"| {label} | {run['images_per_s']:,.0f} | {run['gpu_mb']:,.0f} | compile_s "
                         f"{run['compile_s']:.1f}{eager}, graph breaks {run['graph_breaks']}; whole run "
                         f"{run['wall_s']:.0f} s |")
    return "\n".join(lines + [""] + verdicts(runs) + [""])


def verdicts(runs: dict) -> list[str]:
    """raykit's best vs the best plain loop (images/s), and each raykit run's memory vs the plain loop
    written the same way (channels-last, compiled or not)."""
    plain = {k: v for k, v in runs.items() if k in PLAIN and "error" not in v}
    ours = {k.split(":")[1]: v for k, v in runs.items() if k.startswith("raykit:") and "error" not in v}
    if not plain or not ours:
        return ["Ratios: not yet measured (a side is missing)."]
    best_plain = max(plain, key=lambda k: plain[k]["images_per_s"])
    best_ours = max(ours, key=lambda k: ours[k]["images_per_s"])
    lines = [verdict(f"Images/s raykit (train.compile={best_ours}) / best plain ({PLAIN[best_plain]})",
                     [ours[best_ours]["images_per_s"] / plain[best_plain]["images_per_s"]], 0.95)]
    for mode, run in ours.items():
        same = "channels_last+compile" if mode != "off" else "channels_last"
        if same in plain and plain[same]["gpu_mb"] > 0:
            lines.append(verdict(f"Peak GPU memory raykit (train.compile={mode}) / {PLAIN[same]}",
                                 [run["gpu_mb"] / plain[same]["gpu_mb"]], 1.1, at_least=False))
    return lines


if __name__ == "__main__":
    main()
