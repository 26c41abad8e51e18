"""Checkpoint cost: raykit's torch checkpoint save/restore vs bare torch.save/torch.load, and the training
time lost to checkpointing every epoch.

(a) A ResNet-50-sized state (torchvision ``--arch`` + Adam after one step + a LambdaLR schedule, CPU) is
saved and loaded into the same objects through ``raykit.backends.torch.checkpoint.save``/``restore`` and
through bare ``torch.save``/``torch.load`` + ``load_state_dict`` of the same dicts, in the same temp dir,
alternating. raykit also writes RNG states and a manifest, and SHA-256s every file on save and on
restore; hashing the files is timed on its own to say how much of the gap it is.
(b) raykit's in-process loop (``fit``) with ``checkpoint.every_n_epochs=1`` vs only the last epoch, the
report callback copying each checkpoint directory away as Ray does. Over the middle epochs (no checkpoint
in the last-only run), the time between reports beyond the epoch's own train + validation seconds is what
checkpointing adds; time lost = (that with checkpoints - that without) / epoch seconds. Measuring within
each epoch keeps run-to-run drift in training speed out of the difference.

    .venv/bin/python benchmarks/checkpoint_io.py [--repeats 5] [--loop-repeats 2] [--epochs 4] [--results FILE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import RESULTS, machine_line, spread, synthetic_npz, verdict, write_section  # noqa: E402
from raykit.backends.torch import checkpoint as ckpt  # noqa: E402
from raykit.engine import fit  # noqa: E402
from raykit.checkpoint import read_manifest  # noqa: E402
from raykit.session import WorkerSession  # noqa: E402
from raykit.spec import load_spec  # noqa: E402

SECTION = "## Checkpoint I/O: raykit vs bare torch.save/torch.load"
LOOP_MODELS = {"cnn": 20_000, "resnet18": 3_000}  # model.name -> synthetic 8x8x1 images (70% train)


def model_state(arch: str):
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # Adam's moment buffers now exist: twice the weights again
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False)


def raykit_round_trip(directory: Path, model, optimizer, scheduler, scaler) -> tuple[float, float]:
    started = time.perf_counter()
    ckpt.save(str(directory), model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
              state={"epoch": 1, "global_step": 1}, metrics={}, rng_states=[ckpt.capture_rng()], spec={})
    saved = time.perf_counter()
    ckpt.restore(str(directory), model, optimizer, scheduler, scaler)
    return saved - started, time.perf_counter() - saved


def bare_round_trip(directory: Path, model, optimizer, scheduler, scaler) -> tuple[float, float]:
    objects = {"model.pt": model, "optimizer.pt": optimizer, "scheduler.pt": scheduler}
    started = time.perf_counter()
    for name, obj in objects.items():
        torch.save(obj.state_dict(), directory / name)
    saved = time.perf_counter()
    for name, obj in objects.items():
        obj.load_state_dict(torch.load(directory / name))
    return saved - started, time.perf_counter() - saved


def hash_seconds(directory: Path) -> float:
    """Seconds raykit spends checksumming the files once: verifying the manifest minus only reading it."""
    started = time.perf_counter()
    read_manifest(directory, verify=False)
    unverified = time.perf_counter()
    read_manifest(directory)
    return (time.perf_counter() - unverified) - (unverified - started)


def file_io(arch: str, repeats: int, work: Path) -> dict:
    objects = model_state(arch)
    runs: dict[str, list] = {"raykit": [], "bare": [], "hash": []}
    for repeat in range(repeats):  # alternate, so drift on a shared machine hits both
        for name, round_trip in (("raykit", raykit_round_trip), ("bare", bare_round_trip)):
            directory = work / f"{name}-{repeat}"
            directory.mkdir()
            save_s, load_s = round_trip(directory, *objects)
            size = sum(p.stat().st_size for p in directory.iterdir())
            runs[name].append({"save": save_s, "load": load_s, "mb": size / 1e6})
            if name == "raykit":
                runs["hash"].append(hash_seconds(directory))
            shutil.rmtree(directory)
    return runs


def loop_run(uri: str, model: str, epochs: int, every: int, work: Path) -> dict:
    """One ``fit``: over the middle epochs (2 .. epochs - 1), the mean epoch seconds (train + validation) and
    the mean seconds between reports beyond them (checkpoint, copy, bookkeeping); the checkpoint's MB."""
    stamps: list[float] = []
    epoch_seconds: list[float] = []

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir:
            shutil.copytree(checkpoint_dir, work / f"{model}-{every}-epoch{metrics['epoch']}")
        stamps.append(time.perf_counter())
        epoch_seconds.append(metrics["epoch_time_s"])

    spec = load_spec(None, [f"data.uri={uri}", f"model.name={model}", "scaling.num_workers=1",
                            f"train.epochs={epochs}", f"checkpoint.every_n_epochs={every}"])
    fit(spec, WorkerSession(report=report))
    size = sum(p.stat().st_size for p in (work / f"{model}-{every}-epoch{epochs}").iterdir())
    for directory in work.glob(f"{model}-{every}-epoch*"):
        shutil.rmtree(directory)
    middle = range(1, epochs - 1)  # indices of epochs 2 .. epochs - 1; stamps[i] - stamps[i - 1] is epoch i + 1
    return {"epoch": statistics.mean(epoch_seconds[i] for i in middle),
            "beyond": statistics.mean(stamps[i] - stamps[i - 1] - epoch_seconds[i] for i in middle),
            "mb": size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50", help="(a) the torchvision model whose state is saved")
    parser.add_argument("--repeats", type=int, default=5, help="(a) save + load round trips per side")
    parser.add_argument("--loop-repeats", type=int, default=2, help="(b) runs per model and mode")
    parser.add_argument("--epochs", type=int, default=4, help="(b) epochs per run (at least 3)")
    parser.add_argument("--loop-rows", type=int, nargs=2, default=list(LOOP_MODELS.values()),
                        metavar=("CNN", "RESNET18"), help="(b) synthetic images for each model")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs: at least 3 (epochs 2 to epochs - 1 are compared)")
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="raykit-bench-ckpt-"))
    io_runs = file_io(args.arch, args.repeats, work)
    loop: dict[str, dict] = {}
    for model, rows in zip(LOOP_MODELS, args.loop_rows):
        uri = synthetic_npz(work / f"{model}.npz", rows, (8, 8, 1))
        loop[model] = {1: [], args.epochs: []}
        for _ in range(args.loop_repeats):  # alternate the modes
            for every in (1, args.epochs):
                loop[model][every].append(loop_run(uri, model, args.epochs, every, work))
    shutil.rmtree(work)
    table = render(io_runs, loop, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(io_runs: dict, loop: dict, args) -> str:
    hashing = [2 * h for h in io_runs["hash"]]  # once on save (manifest), once on restore (verify)
    hash_mb_s = statistics.median(2 * r["mb"] / h for r, h in zip(io_runs["raykit"], hashing))
    return "\n".join([SECTION, "", *render_io(io_runs, hashing, hash_mb_s, args), "",
                      *render_loop(loop, hash_mb_s, args), ""])


def render_io(io_runs: dict, hashing: list[float], hash_mb_s: float, args) -> list[str]:
    def rate(name, key):
        return [r["mb"] / (r["save"] + r["load"] if key == "both" else r[key]) for r in io_runs[name]]

    ratio = [r / b for r, b in zip(rate("raykit", "both"), rate("bare", "both"))]
    gap = [(r["save"] + r["load"]) - (b["save"] + b["load"]) for r, b in zip(io_runs["raykit"], io_runs["bare"])]
    lines = [machine_line() + f" (a) torchvision {args.arch} + Adam state after one step "
             f"({statistics.median(r['mb'] for r in io_runs['raykit']):.0f} MB in raykit's checkpoint) saved and "
             f"loaded {args.repeats} times per side, alternating, in one temp dir (page cache; no fsync on either "
             "side). MB/s = checkpoint MB / seconds.", "",
             f"| (a) checkpoint of {args.arch} + Adam | save MB/s | load MB/s | save + load MB/s |",
             "|---|---|---|---|"]
    for name, label in (("raykit", "raykit `save` / `restore` (SHA-256 manifest)"),
                        ("bare", "bare `torch.save` / `torch.load`")):
        lines.append(f"| {label} | {spread(rate(name, 'save'), 0)} | {spread(rate(name, 'load'), 0)} | "
                     f"{spread(rate(name, 'both'), 0)} |")
    bare = statistics.median(b["save"] + b["load"] for b in io_runs["bare"])
    hash_share = statistics.median(hashing) / bare
    unreachable = hash_share > 1 / 0.9 - 1
    summary = verdict("Save + load MB/s ratio raykit / bare, per repeat", ratio, 0.9)
    return lines + ["", f"{summary} raykit's round trip takes {spread(gap, 2)} s longer; checksumming its files twice "
                    f"(on save and on restore) takes {spread(hashing, 2)} s (SHA-256 of the files read back from the "
                    f"page cache: {hash_mb_s:.0f} MB/s), {hash_share:.1f}x the whole bare round trip. Those checksums "
                    "are what catches a truncated or altered checkpoint" + (", and at this disk speed the target "
                    "cannot be met while both stay." if unreachable else ".")]


def render_loop(loop: dict, hash_mb_s: float, args) -> list[str]:
    lines = [f"(b) raykit's in-process loop on synthetic 8x8x1 images, {args.epochs} epochs, {args.loop_repeats} "
             "runs per mode alternating; the report callback copies each checkpoint (`shutil.copytree`). Means over "
             f"epochs 2 to {args.epochs - 1}: epoch s = train + validation (`epoch_time_s`); beyond = seconds between "
             "reports minus that. Time lost = (beyond with a checkpoint every epoch - beyond with none) / epoch s.",
             "", "| (b) model | checkpoint MB | epoch s | beyond, checkpoint every epoch | beyond, last epoch only | "
             "time lost |", "|---|---|---|---|---|---|"]
    verdicts = []
    for model, runs in loop.items():
        every, last = runs[1], runs[args.epochs]
        cost = [e["beyond"] - n["beyond"] for e, n in zip(every, last)]
        lost = [100 * c / e["epoch"] for c, e in zip(cost, every)]
        lines.append(f"| {model} | {every[0]['mb']:.1f} | {spread([e['epoch'] for e in every], 2)} | "
                     f"{spread([e['beyond'] for e in every], 3)} | {spread([n['beyond'] for n in last], 3)} | "
                     f"{spread(lost, 1, '%')} |")
        median_cost = statistics.median(cost)
        verdicts.append(verdict(f"Time lost to checkpointing every epoch, {model}, %", lost, 5, at_least=False,
                                digits=1) + f" At {median_cost:.2f} s per checkpoint ({every[0]['mb'] / hash_mb_s:.2f} "
                        f"s of it SHA-256 at (a)'s rate), epochs of {median_cost / 0.05:.1f} s or more lose under 5%.")
    return lines + ["", *verdicts]


if __name__ == "__main__":
    main()
