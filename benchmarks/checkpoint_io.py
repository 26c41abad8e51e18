"""Checkpoint cost: raykit's torch checkpoint save/restore vs bare torch.save/torch.load, and the training
time lost to checkpointing every epoch.

(a) A ResNet-50-sized state (torchvision ``--arch`` + Adam after one step + a LambdaLR schedule, CPU) is
saved and loaded into the same objects through ``raykit.backends.torch.checkpoint.save``/``restore`` and
through bare ``torch.save``/``torch.load`` + ``load_state_dict`` of the same dicts, in the same temp dir,
alternating. raykit also writes RNG states and a manifest; it hashes every file (BLAKE3) as it writes it (on a
helper thread, overlapping the write) and verifies every file once on restore; that verification is timed
on its own to say how much of the gap it is.
(b) raykit's in-process loop (``fit``, torch on 2 threads) on 32x32x3 images, ResNet-18: synthetic ones, or with
``--loop-data`` a slice of CIFAR-10 (the JPEG Parquet copy: the first 80% of ``--loop-rows`` training images
for training, the next 20% for validation), with
``checkpoint.every_n_epochs=1`` vs only after the last epoch, alternating runs. The report does what rank 0's
report does under Ray Train (raykit.ray.worker): it hands each checkpoint to one upload thread that copies it
to a storage directory as Ray's does (``pyarrow.fs.copy_files``, 64 MiB chunks) and deletes it, one upload
in flight, while training goes on. Over the middle epochs (2 .. epochs - 1; no checkpoint in the last-only
run) the time from one report to the next is compared: time lost = (with checkpoints - without) / without.
On a shared 2-core machine that run-to-run comparison is noisier than the effect, so each checkpoint's cost
is also bounded from what is measured within a run: the training thread's own stall (seconds between
reports beyond the epoch's train + validation) plus the background upload's duration, during which training
shares the cores (so it loses at most that), over the same run's epoch seconds; the verdict is on
that bound.

    .venv/bin/python benchmarks/checkpoint_io.py [--repeats 5] [--loop-repeats 3] [--epochs 4]
        [--loop-data ../shared/data/cifar10 --loop-rows 2000] [--results FILE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import RESULTS, machine_line, spread, synthetic_npz, verdict, write_section  # noqa: E402
from raykit.backends.torch import checkpoint as ckpt  # noqa: E402
from raykit.checkpoint import DIGEST, read_manifest  # noqa: E402
from raykit.engine import fit  # noqa: E402
from raykit.session import WorkerSession  # noqa: E402
from raykit.spec import load_spec  # noqa: E402

SECTION = "## Checkpoint I/O: raykit vs bare torch.save/torch.load"
LOOP_MODEL, LOOP_SHAPE = "resnet18", (32, 32, 3)
CIFAR10_TRAIN = 50_000  # images in one CIFAR-10 training epoch


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


class Upload:
    """A ``report`` that does with a checkpoint what rank 0's does under Ray Train: one upload thread copies
    it to ``storage`` the way Ray's does, then deletes it (the report has taken it over); a checkpoint waits
    while the previous one still uploads; ``finish()`` waits for the last. ``background=False`` copies it
    within the report instead (Ray's synchronous upload). Records each report's time."""

    def __init__(self, storage: Path, background: bool = True):
        self.storage, self.thread = storage, ThreadPoolExecutor(1, thread_name_prefix="upload")
        self.background = background
        self.pending: Future | None = None
        self.stamps: list[float] = []
        self.upload_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self.mb = 0.0
        self.train_images = 0

    def __call__(self, metrics: dict, checkpoint_dir: str | None) -> bool:
        taken = checkpoint_dir is not None
        if taken:
            self.mb = sum(p.stat().st_size for p in Path(checkpoint_dir).iterdir()) / 1e6
            if self.pending:
                self.pending.result()
            self.pending = self.thread.submit(self._upload, checkpoint_dir, self.storage / f"epoch{metrics['epoch']}")
            if not self.background:
                self.pending.result()
        self.stamps.append(time.perf_counter())
        self.epoch_seconds.append(metrics["epoch_time_s"])
        self.train_images = round(metrics["samples_per_s"] * metrics["epoch_time_s"])
        return taken

    def _upload(self, local: str, target: Path) -> None:
        import pyarrow.fs

        started = time.perf_counter()
        target.mkdir(parents=True)
        pyarrow.fs.copy_files(local, str(target), chunk_size=64 * 1024 * 1024)  # as Ray's storage does
        shutil.rmtree(local)
        self.upload_seconds.append(time.perf_counter() - started)

    def finish(self) -> None:
        if self.pending:
            self.pending.result()
        self.thread.shutdown()


def loop_run(data: list[str], epochs: int, every: int, work: Path, background: bool) -> dict:
    """One ``fit``, means over the middle epochs (2 .. epochs - 1): seconds from one report to the next
    (``interval``), the epoch's train + validation (``epoch``), the rest (``stall``: checkpoint save, report);
    and each upload's seconds (``upload``; in the background, or within ``stall``)."""
    storage = work / f"storage-{every}"
    upload = Upload(storage, background)
    spec = load_spec(None, [*data, f"model.name={LOOP_MODEL}", "scaling.num_workers=1",
                            f"train.epochs={epochs}", f"checkpoint.every_n_epochs={every}",
                            "train.tensorboard=false"])
    fit(spec, WorkerSession(report=upload))
    upload.finish()
    shutil.rmtree(storage)
    middle = range(1, epochs - 1)  # indices of epochs 2 .. epochs - 1; stamps[i] - stamps[i - 1] is epoch i + 1
    intervals = [upload.stamps[i] - upload.stamps[i - 1] for i in middle]
    return {"interval": statistics.mean(intervals), "epoch": statistics.mean(upload.epoch_seconds[i] for i in middle),
            "stall": statistics.mean(t - upload.epoch_seconds[i] for t, i in zip(intervals, middle)),
            "upload": statistics.mean(upload.upload_seconds), "mb": upload.mb, "train_images": upload.train_images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50", help="(a) the torchvision model whose state is saved")
    parser.add_argument("--repeats", type=int, default=5, help="(a) save + load round trips per side")
    parser.add_argument("--loop-repeats", type=int, default=3, help="(b) runs per mode")
    parser.add_argument("--epochs", type=int, default=4, help="(b) epochs per run (at least 3)")
    parser.add_argument("--loop-rows", type=int, default=600, help="(b) images (synthetic: 70%% train; CIFAR-10: "
                                                                   "80%% train, 20%% validation)")
    parser.add_argument("--loop-data", type=Path, help="(b) a CIFAR-10 Parquet folder (train.parquet) to train on "
                                                       "instead of synthetic images")
    parser.add_argument("--upload", choices=("background", "in-report"), default="background",
                        help="(b) how a checkpoint reaches storage: Ray's asynchronous upload (raykit's) or a "
                             "synchronous one, within the report")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs: at least 3 (epochs 2 to epochs - 1 are compared)")
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="raykit-bench-ckpt-"))
    io_runs = file_io(args.arch, args.repeats, work)
    data = loop_data(args, work)
    loop: dict[int, list] = {1: [], args.epochs: []}
    for _ in range(args.loop_repeats):  # alternate the modes
        for every in loop:
            loop[every].append(loop_run(data, args.epochs, every, work, args.upload == "background"))
    shutil.rmtree(work)
    table = render(io_runs, loop, args)
    print(table)
    write_section(SECTION, table, args.results)


def loop_data(args, work: Path) -> list[str]:
    """The ``data.*`` overrides of the loop's runs: a slice of ``--loop-data`` (CIFAR-10) or synthetic images."""
    if args.loop_data is None:
        return [f"data.uri={synthetic_npz(work / 'images.npz', args.loop_rows, LOOP_SHAPE)}"]
    from benchmarks.parity_cifar import write_slices

    if not (args.loop_data / "train.parquet").is_file():
        raise SystemExit(f"--loop-data: no train.parquet in {args.loop_data} (see ../shared/data/cifar10/README.md)")
    train = args.loop_rows * 4 // 5
    # A test file of its own (100 images, evaluated once after the loop), or a test split is carved from train.
    uris = write_slices(args.loop_data, work, train, args.loop_rows - train, 100)
    return [f"{key}={uri}" for key, uri in uris.items()]


def render(io_runs: dict, loop: dict, args) -> str:
    return "\n".join([SECTION, "", *render_io(io_runs, args), "", *render_loop(loop, args), ""])


def render_io(io_runs: dict, args) -> list[str]:
    def rate(name, key):
        return [r["mb"] / (r["save"] + r["load"] if key == "both" else r[key]) for r in io_runs[name]]

    ratio = [r / b for r, b in zip(rate("raykit", "both"), rate("bare", "both"))]
    gap = [(r["save"] + r["load"]) - (b["save"] + b["load"]) for r, b in zip(io_runs["raykit"], io_runs["bare"])]
    hashing = io_runs["hash"]
    hash_mb_s = statistics.median(r["mb"] / h for r, h in zip(io_runs["raykit"], hashing))
    lines = [machine_line() + f" (a) torchvision {args.arch} + Adam state after one step "
             f"({statistics.median(r['mb'] for r in io_runs['raykit']):.0f} MB in raykit's checkpoint) saved and "
             f"loaded {args.repeats} times per side, alternating, in one temp dir (page cache; no fsync on either "
             "side). MB/s = checkpoint MB / seconds.", "",
             f"| (a) checkpoint of {args.arch} + Adam | save MB/s | load MB/s | save + load MB/s |",
             "|---|---|---|---|"]
    for name, label in (("raykit", f"raykit `save` / `restore` ({DIGEST} while writing, verified while restoring)"),
                        ("bare", "bare `torch.save` / `torch.load`")):
        lines.append(f"| {label} | {spread(rate(name, 'save'), 0)} | {spread(rate(name, 'load'), 0)} | "
                     f"{spread(rate(name, 'both'), 0)} |")
    bare = statistics.median(b["save"] + b["load"] for b in io_runs["bare"])
    summary = verdict("Save + load MB/s ratio raykit / bare, per repeat", ratio, 0.9)
    return lines + ["", f"{summary} raykit's round trip takes {spread(gap, 2)} s longer. Verifying the files "
                    f"alone takes {spread(hashing, 2)} s ({DIGEST} of the files read back from the page cache: "
                    f"{hash_mb_s:.0f} MB/s), {statistics.median(hashing) / bare:.1f}x the whole bare round trip; "
                    "it runs on a helper thread while restore loads the files, as hashing on save overlaps the "
                    "write. Those checksums are what catches a truncated or altered checkpoint."]


def render_loop(loop: dict, args) -> list[str]:
    every, last = loop[1], loop[args.epochs]
    background = args.upload == "background"
    lost = [100 * (e["interval"] - n["interval"]) / n["interval"] for e, n in zip(every, last)]
    # What a checkpoint can cost at most: the training thread's stall, plus the background upload's whole
    # duration (training shares the cores with it meanwhile, so it loses at most that); per run, against that
    # run's own epochs, so run-to-run drift stays out of it.
    cost = [e["stall"] + (e["upload"] if background else 0.0) for e in every]
    bound = [100 * c / e["epoch"] for c, e in zip(cost, every)]
    epoch = statistics.median(e["epoch"] for e in every)
    cifar_epoch = epoch * CIFAR10_TRAIN / last[0]["train_images"]
    images = ("synthetic " if args.loop_data is None else "CIFAR-10 (JPEG copy) ") + "x".join(map(str, LOOP_SHAPE))
    lines = [f"(b) raykit's in-process loop (torch, 2 threads), {LOOP_MODEL} on {args.loop_rows} {images} images "
             f"({last[0]['train_images']} training), {args.epochs} epochs, "
             f"{args.loop_repeats} runs per mode alternating. Each checkpoint is uploaded as under Ray Train "
             "(`pyarrow.fs.copy_files` to a storage directory, then deleted) "
             + ("in one background thread while training goes on (raykit's asynchronous upload)."
                if background else "within the report (a synchronous upload).")
             + f" Means over epochs 2 to {args.epochs - 1}: interval = seconds from one report to the next; "
             "stall = interval minus the epoch's train + validation (`epoch_time_s`): the training thread's own "
             "wait; upload = one upload's seconds. Time lost, runs compared = (interval with a checkpoint every "
             "epoch - interval with none) / interval with none, per run pair; at most = (stall + background upload) "
             "/ the same run's train + validation seconds.", "",
             "| (b) model | checkpoint MB | interval, checkpoint every epoch | interval, none | stall | upload | "
             "time lost, runs compared | time lost, at most |", "|---|---|---|---|---|---|---|---|",
             f"| {LOOP_MODEL} | {every[0]['mb']:.1f} | {spread([e['interval'] for e in every], 2)} | "
             f"{spread([n['interval'] for n in last], 2)} | {spread([e['stall'] for e in every], 3)} | "
             f"{spread([e['upload'] for e in every], 3)}{'' if background else ' (within the stall)'} | "
             f"{spread(lost, 1, '%')} | {spread(bound, 1, '%')} |"]
    summary = verdict(f"Time lost to checkpointing every epoch, {LOOP_MODEL} {images}, at most, %", bound, 2,
                      at_least=False, digits=1)
    seconds = statistics.median(cost)
    return lines + ["", f"{summary} Runs compared directly: {spread(lost, 1, '%')}, within the run-to-run spread of "
                    f"the epoch interval itself on this machine. A checkpoint costs at most {seconds:.2f} s here "
                    f"(epochs of {epoch:.1f} s); a full CIFAR-10 epoch ({CIFAR10_TRAIN:,} images) at this rate takes "
                    f"about {cifar_epoch:.0f} s, where it is {100 * seconds / cifar_epoch:.2f}%."]


if __name__ == "__main__":
    main()
