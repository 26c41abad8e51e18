"""Streamed Parquet (Ray Data) vs in-memory data: worker memory as the dataset grows, and feed throughput.

Writes synthetic 32x32 RGB PNG datasets as Parquet (a small one and a large one, whose decoded float32
training split is several times what a worker should hold), then trains `--epochs` epochs of a small MLP
on each with 2 workers, side by side in one Ray instance: `data.loader: memory`, `data.loader: stream`
decoding once into the object store (`data.stream_cache: on`; auto picks it for both sets here) and
streaming decoding every epoch (`stream_cache: off`). Reports each worker's peak RSS (rank 0's
`peak_rss_mb`) and samples/s (median over epochs 2+: the steady state), and the ratio stream / memory of
samples/s on the small set (median of `--repeats`). The MLP is tiny on purpose: the feed (read, decode,
hand to the worker), not the model, decides the time, as on a GPU.

    .venv/bin/python benchmarks/data_streaming.py [--small-rows 16000] [--large-rows 130000] [--repeats 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402

import raykit  # noqa: E402
from benchmarks.common import RESULTS, machine_line, spread, start_ray, verdict, write_section  # noqa: E402

SECTION = "## Streamed Parquet vs in-memory data"
IMAGE = (32, 32, 3)


def write_dataset(root: str, rows: int, rows_per_file: int = 10_000) -> float:
    """Synthetic PNGs in Parquet (class in the mean brightness, noise on top); returns seconds taken."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from raykit.data.images import encode_png

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    for part, start in enumerate(range(0, rows, rows_per_file)):
        n = min(rows_per_file, rows - start)
        labels = rng.integers(0, 10, n)
        images = np.clip(rng.normal(labels[:, None, None, None] * 20 + 40, 30, (n, *IMAGE)), 0, 255).astype(np.uint8)
        table = pa.table({"image": [encode_png(im) for im in images], "label": labels})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=1000)
        Path(root, f"part-{part:05d}.parquet").write_bytes(buffer.getvalue())
    return time.perf_counter() - started


LOADERS = {"stream": ("stream", "on"), "stream, decoded every epoch": ("stream", "off"), "memory": ("memory", "auto")}


def run(uri: str, loader: str, storage: str, name: str, epochs: int, workers: int) -> dict:
    kind, cache = LOADERS[loader]
    result = raykit.train(None, {
        "data.uri": uri, "data.loader": kind, "data.stream_cache": cache, "data.read_cpus": 0.5,
        "data.val_fraction": 0.02, "data.test_fraction": 0.01, "model.name": "mlp", "model.hidden": [64],
        "train.epochs": epochs, "train.batch_size": 512, "scaling.num_workers": workers,
        "scaling.resources_per_worker": {"CPU": 0.5}, "storage": storage, "name": name,
        "checkpoint.every_n_epochs": epochs}, verbose=False)
    steady = result.history[1:] or result.history
    return {"rss": max(row["peak_rss_mb"] for row in result.history),
            "samples_per_s": float(np.median([row["samples_per_s"] for row in steady])), "wall": result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-rows", type=int, default=16_000)
    parser.add_argument("--large-rows", type=int, default=130_000, help="0: no large set (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers per run (0.5 CPU each)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (samples/s: median of epochs 2+)")
    parser.add_argument("--skip-large-memory", action="store_true",
                        help="do not load the large set in memory (it needs ~4x its decoded size in RAM)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    work = tempfile.mkdtemp(prefix="raykit-bench-data-")
    sets = {"small": args.small_rows, **({"large": args.large_rows} if args.large_rows else {})}
    for name, rows in sets.items():
        seconds = write_dataset(f"{work}/{name}", rows)
        print(f"wrote {name}: {rows} rows in {seconds:.0f}s", flush=True)
    start_ray(2)
    runs: dict = {}
    for repeat in range(args.repeats):  # alternate, so drift on a shared machine hits both
        for index, loader in enumerate(LOADERS):
            runs.setdefault(("small", loader), []).append(
                run(f"{work}/small", loader, f"{work}/runs", f"small-{index}-{repeat}", args.epochs,
                    args.workers))
    if "large" in sets:
        for index, loader in enumerate(LOADERS):
            if loader != "memory" or not args.skip_large_memory:
                runs[("large", loader)] = [run(f"{work}/large", loader, f"{work}/runs", f"large-{index}", args.epochs,
                                                  args.workers)]
    ray.shutdown()
    table = render(runs, sets, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(runs: dict, sets: dict, args) -> str:
    decoded = {name: rows * int(np.prod(IMAGE)) * 4 / 2**20 for name, rows in sets.items()}
    lines = [SECTION, "", machine_line() + f" Synthetic {IMAGE[0]}x{IMAGE[1]} RGB PNGs in Parquet (row groups of "
             f"1,000), {args.epochs} epochs of a small MLP with {args.workers} workers (0.5 CPU each; Ray Data read tasks get 0.5 CPU), "
             f"{args.repeats} repeats on the small set alternating the loaders"
             f"{', one run on the large set' if 'large' in sets else ''}. Peak RSS is "
             "rank 0's whole process (Python, torch and Ray included; pages of the object store it read count "
             "too, though shared), from `peak_rss_mb`. Samples/s: median over epochs 2+.", "",
             "| dataset | decoded float32 | loader | worker peak RSS, MiB | samples/s |", "|---|---|---|---|---|"]
    for (name, loader), values in runs.items():
        lines.append(f"| {name} ({sets[name]:,} images) | {decoded[name]:,.0f} MiB | {loader} | "
                     f"{spread([v['rss'] for v in values], 0)} | {spread([v['samples_per_s'] for v in values], 0)} |")
    memory = runs[("small", "memory")]

    def ratio(loader: str) -> list[float]:
        return [s["samples_per_s"] / m["samples_per_s"] for s, m in zip(runs[("small", loader)], memory)]

    every = "stream, decoded every epoch"
    growth = (f" Peak RSS growth from small to large, streamed and decoded every epoch: "
              f"{runs[('large', every)][0]['rss'] - min(v['rss'] for v in runs[('small', every)]):+.0f} MiB for "
              f"{decoded['large'] - decoded['small']:,.0f} MiB more decoded data." if "large" in sets else "")
    lines += ["", verdict("Throughput ratio stream / memory (small set)", ratio("stream"), 0.5),
              f"Decoding every epoch instead: {spread(ratio(every), 2)}.{growth}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
