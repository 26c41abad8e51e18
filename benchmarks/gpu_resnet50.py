"""ResNet-50 on synthetic 224x224 images: raykit (1 Ray Train worker, one GPU, bf16) vs a plain PyTorch loop
on the same GPU, side by side: images/s (steady state) and peak GPU memory. Run through benchmarks/gpu.sh.

raykit's side trains on a synthetic .npz written first (uint8 noise, `--images` of them, `--classes`) held
in GPU memory; the plain loop trains on random tensors already on the GPU, same model (torchvision's
resnet50, as raykit's `resnet50` with the imagenet stem), batch size, optimizer (SGD momentum 0.9) and
bf16 autocast. Without a GPU, `--device cpu` runs both at tiny size (a smoke test of the script).

    .venv/bin/python benchmarks/gpu_resnet50.py [--images 4096] [--batch 128] [--epochs 4] [--device cuda]
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

from benchmarks.common import RESULTS, machine_line, shared_ray_address, write_section  # noqa: E402

SECTION = "## GPU: ResNet-50, raykit vs plain PyTorch"


def synthetic_npz(path: str, images: int, size: int, classes: int) -> str:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8), y=np.arange(images) % classes)
    return path


def raykit_side(npz: str, args) -> dict:
    import raykit

    gpu = args.device == "cuda"
    result = raykit.train(None, {
        "data.uri": npz, "data.val_fraction": 0.02, "data.test_fraction": 0.02, "model.name": "resnet50",
        "model.stem": "imagenet", "model.dropout": 0.0, "optim.name": "sgd", "optim.lr": 0.1,
        "train.batch_size": args.batch, "train.epochs": args.epochs, "train.precision": args.precision,
        "scaling.num_workers": 1, "scaling.use_gpu": gpu, "checkpoint.every_n_epochs": args.epochs,
        "storage": tempfile.mkdtemp(prefix="raykit-gpu-bench-"), "name": "resnet50"}, verbose=False,
        address=shared_ray_address())
    steady = result.history[1:] or result.history
    return {"images_per_s": float(np.median([row["samples_per_s"] for row in steady])),
            "gpu_mb": max(row.get("peak_gpu_mb", 0.0) for row in result.history), "wall": result.seconds}


def plain_side(args) -> dict:
    import torch
    import torchvision

    device = torch.device(args.device)
    model = torchvision.models.resnet50(num_classes=args.classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    steps = max(1, int(args.images * 0.96) // args.batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def epoch() -> float:
        started = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return steps * args.batch / (time.perf_counter() - started)

    rates = [epoch() for _ in range(args.epochs)]
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return {"images_per_s": float(np.median(rates[1:] or rates)), "gpu_mb": gpu_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"),
                        help="fp32 for the CPU smoke test: bf16 autocast on CPUs without bf16 units is slow")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    with tempfile.TemporaryDirectory(prefix="raykit-gpu-data-") as work:
        npz = synthetic_npz(os.path.join(work, "synthetic.npz"), args.images, args.size, args.classes)
        plain = plain_side(args)  # first: it frees its GPU memory before raykit's worker starts
        import torch

        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        ours = raykit_side(npz, args)
    table = render(ours, plain, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(ours: dict, plain: dict, args) -> str:
    ratio = ours["images_per_s"] / plain["images_per_s"]
    return "\n".join([
        SECTION, "", machine_line() + f" ResNet-50 (torchvision layout, {args.classes} classes), {args.size}x{args.size} "
        f"synthetic images, batch {args.batch}, {args.precision}, SGD; {args.epochs} epochs of {args.images} images, "
        "median of the epochs after the first.", "",
        "| side | images/s | peak GPU memory, MiB |", "|---|---|---|",
        f"| raykit, 1 Ray Train worker | {ours['images_per_s']:,.0f} | {ours['gpu_mb']:,.0f} |",
        f"| plain PyTorch loop | {plain['images_per_s']:,.0f} | {plain['gpu_mb']:,.0f} |",
        "", f"Ratio raykit / plain: {ratio:.2f} ({args.device}).", ""])


if __name__ == "__main__":
    main()
