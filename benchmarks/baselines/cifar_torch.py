"""CIFAR-10 in plain single-process PyTorch, written as a careful user writes it: no Ray, no raykit.

The data is decoded once into one uint8 NHWC array; every batch is gathered as uint8, converted to float
on the training device, augmented there as a batch (random crop with 4 pixels of zero padding, horizontal
flip, normalize by CIFAR-10's mean and std) and fed channels-last to a channels-last model. The model is
the seed's CNN (:func:`benchmarks.baselines.plain_torch.build_cnn`) or a ResNet-18 with a 3x3 stem; Adam
(CPU) or SGD nesterov (GPU recipe) with a cosine or one-cycle schedule stepped per batch, optional label
smoothing and bf16 autocast. Each epoch trains on a new shuffle and then evaluates the validation split; the
test split is evaluated after the last epoch.

    .venv/bin/python benchmarks/baselines/cifar_torch.py --data ../shared/data/cifar10 --epochs 3 --train-rows 20000
    python3 benchmarks/baselines/cifar_torch.py --data .gpu/cifar10 --device cuda --model resnet18 --optimizer sgd \
        --lr 0.2 --schedule onecycle --label-smoothing 0.1 --batch-size 512 --precision bf16 --val-split test --json
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.baselines.plain_torch import build_cnn  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def decode_parquet(path: Path, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC images and int64 labels of ``rows`` of a CIFAR-10 Parquet file (JPEG or PNG bytes)."""
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(path, columns=["image", "label"])
    table = table.slice(rows.start or 0, (rows.stop or table.num_rows) - (rows.start or 0))
    images = [cell["bytes"] if isinstance(cell, dict) else cell for cell in table.column("image").to_pylist()]
    x = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in images])
    return x, np.asarray(table.column("label").to_numpy(), np.int64)



def decode_slices(directory: Path, train_rows: int, val_rows: int, test_rows: int,
                  val_from_test: bool = False) -> dict:
    """``{"train", "val", "test"}`` -> (uint8 images, labels): the first ``train_rows`` of train.parquet, the
    next ``val_rows`` for validation (or the test slice itself with ``val_from_test``), the first ``test_rows``
    of test.parquet. train.parquet is read and decoded once."""
    head = decode_parquet(directory / "train.parquet", slice(0, train_rows + (0 if val_from_test else val_rows)))
    test = decode_parquet(directory / "test.parquet", slice(0, test_rows))
    train = tuple(a[:train_rows] for a in head)
    return {"train": train, "val": test if val_from_test else tuple(a[train_rows:] for a in head), "test": test}

def augment(batch: torch.Tensor, generator: torch.Generator, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Float NCHW (channels-last) batch in [0, 1] -> random crop (pad 4) + horizontal flip + normalize."""
    n, _, height, width = batch.shape
    padded = nn.functional.pad(batch, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, n), generator=generator, device=batch.device)
    rows = dy[:, None] + torch.arange(height, device=batch.device)
    cols = dx[:, None] + torch.arange(width, device=batch.device)
    cropped = padded[torch.arange(n, device=batch.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    cropped = cropped.permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator, device=batch.device) < 0.5
    cropped = torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)
    return ((cropped - mean) / std).contiguous(memory_format=torch.channels_last)


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC on the device -> float NCHW in [0, 1], channels-last (one copy)."""
    return pixels.permute(0, 3, 1, 2).float().div_(255).contiguous(memory_format=torch.channels_last)


def build_model(name: str) -> nn.Module:
    if name == "cnn":
        return build_cnn((32, 32, 3), 10)
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def train(data: dict, *, model_name: str = "cnn", epochs: int = 3, batch_size: int = 64, lr: float = 1e-3,
          seed: int = 0, device: str = "cpu", optimizer: str = "adam", schedule: str = "cosine",
          label_smoothing: float = 0.0, precision: str = "fp32") -> dict:
    """Train on ``data`` (``{"train": (x, y), "val": (x, y), "test": (x, y)}``, uint8 NHWC); returns each
    epoch's seconds (training + validation) and accuracies. ``schedule``: cosine (to 0) or onecycle (as
    raykit's ``optim.schedule: onecycle``); ``precision``: fp32 or bf16 (autocast)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    bf16 = precision == "bf16"
    model = build_model(model_name).to(device, memory_format=torch.channels_last)
    x, y = (torch.from_numpy(a).to(device) for a in data["train"])
    mean = torch.tensor(MEAN, device=device)[None, :, None, None]
    std = torch.tensor(STD, device=device)[None, :, None, None]
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * math.ceil(len(y) / batch_size)
    multiplier = onecycle(steps) if schedule == "onecycle" else \
        (lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, multiplier)
    generator = torch.Generator(device=device).manual_seed(seed)
    seconds, val_acc = [], []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for batch in torch.randperm(len(y), generator=generator, device=device).split(batch_size):
            images = augment(to_input(x[batch]), generator, mean, std)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(images)
            loss = nn.functional.cross_entropy(logits.float(), y[batch], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        val_acc.append(accuracy(model, data["val"], mean, std, device, bf16))
        seconds.append(time.perf_counter() - started)
    return {"epoch_seconds": seconds, "val_acc": val_acc,
            "test_acc": accuracy(model, data["test"], mean, std, device, bf16)}


def onecycle(total_steps: int):
    """raykit's one-cycle multiplier (raykit/schedules.py): cosine up from 1/25 to 1 over the first 30% of
    the steps, then cosine down to 1/10,000."""
    peak = max(int(0.3 * total_steps), 1)

    def cosine(start: float, end: float, fraction: float) -> float:
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))

    return lambda step: (cosine(1 / 25, 1.0, step / peak) if step < peak
                         else cosine(1.0, 1e-4, (step - peak) / max(total_steps - peak, 1)))


@torch.no_grad()
def accuracy(model: nn.Module, split: tuple[np.ndarray, np.ndarray], mean, std, device, bf16: bool = False) -> float:
    model.eval()
    x, y = split
    correct = 0
    rows = 1024 if torch.device(device).type == "cuda" else 128  # on a CPU large batches outgrow the caches
    for start in range(0, len(y), rows):
        images = torch.from_numpy(x[start:start + rows]).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits = model((to_input(images) - mean) / std)
        correct += int((logits.argmax(1).cpu() == torch.from_numpy(y[start:start + rows])).sum())
    return correct / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="directory with train.parquet and test.parquet")
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--val-rows", type=int, default=5_000)
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="cnn", choices=("cnn", "resnet18"))
    parser.add_argument("--optimizer", default="adam", choices=("adam", "sgd"),
                        help="sgd: momentum 0.9, nesterov, weight decay 5e-4")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "onecycle"))
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--val-split", default="train", choices=("train", "test"),
                        help="validate on --val-rows training rows after the training slice, or on the test slice")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = decode_slices(args.data, args.train_rows, args.val_rows, args.test_rows, args.val_split == "test")
    decode_s = time.perf_counter() - started
    out = train(data, model_name=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                device=args.device, optimizer=args.optimizer, schedule=args.schedule,
                label_smoothing=args.label_smoothing, precision=args.precision)
    out = {**out, "decode_s": decode_s}
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
