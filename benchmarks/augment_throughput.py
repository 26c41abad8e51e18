"""raykit's batched augmentation vs torchvision transforms per image in a DataLoader, on the CPU.

Both turn 32x32 RGB uint8 images held in memory into shuffled, augmented float batches with the classic
CIFAR recipe (random crop with 4 px zero padding, horizontal flip at p=0.5, normalize 0.5/0.5):
- raykit: gather a batch, ``to_float`` + NCHW, then ``build_augmenter(resolve_ops("standard", []))
  .train_batch`` on the whole batch, in the main process with ``torch.set_num_threads(--workers)``;
  also timed alone on float batches already in memory, which is what raykit's loop does every step.
- torchvision: ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize`` on
  every PIL image, in a ``DataLoader`` with ``--workers`` worker processes (persistent).
Each side runs one untimed warm-up pass, then a timed pass over the same images; they alternate.

    .venv/bin/python benchmarks/augment_throughput.py [--images 20480] [--batch-size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import RESULTS, machine_line, spread, verdict, write_section  # noqa: E402
from raykit.augment import resolve_ops  # noqa: E402
from raykit.backends.torch.augment import build_augmenter  # noqa: E402
from raykit.backends.torch.models import to_model_layout  # noqa: E402
from raykit.data import to_float  # noqa: E402

SECTION = "## Augmentation throughput: raykit vs torchvision DataLoader"


class Images(torch.utils.data.Dataset):
    """uint8 NHWC images as PIL images through a torchvision transform, as torchvision's CIFAR10 does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def torchvision_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int):
    from torchvision import transforms

    recipe = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    return torch.utils.data.DataLoader(Images(images, labels, recipe), batch_size=batch_size, shuffle=True,
                                       num_workers=workers, persistent_workers=workers > 0)


def raykit_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, epoch: int, from_uint8: bool):
    """Shuffled augmented batches; ``from_uint8=False`` takes ``images`` as float NCHW already."""
    augmenter = build_augmenter(resolve_ops("standard", []), num_classes=10, seed=0)
    generator = augmenter.generator("cpu", epoch, rank=0)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
    y = torch.from_numpy(labels)
    for chosen in order.split(batch_size):
        x = to_model_layout(torch.from_numpy(to_float(images[chosen.numpy()]))) if from_uint8 else images[chosen]
        yield augmenter.train_batch(x, y[chosen], generator)


def images_per_s(batches) -> float:
    started, count = time.perf_counter(), 0
    for x, _ in batches:
        count += len(x)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_480)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers; raykit's torch threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    torch.set_num_threads(args.workers)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images)
    floats = to_model_layout(torch.from_numpy(to_float(images)))
    loader = torchvision_loader(images, labels, args.batch_size, args.workers)
    images_per_s(loader)  # warm-up: starts the persistent workers
    rates: dict[str, list[float]] = {"uint8": [], "float": [], "torchvision": []}
    for repeat in range(args.repeats):  # alternate, so drift on a shared machine hits all
        for name, source in (("uint8", images), ("float", floats)):
            images_per_s(raykit_batches(source, labels, args.batch_size, 2 * repeat, name == "uint8"))
            rates[name].append(images_per_s(raykit_batches(source, labels, args.batch_size, 2 * repeat + 1,
                                                           name == "uint8")))
        rates["torchvision"].append(images_per_s(loader))
    table = render(rates, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(rates: dict, args) -> str:
    ratio = {name: [r / t for r, t in zip(rates[name], rates["torchvision"])] for name in ("uint8", "float")}
    lines = [SECTION, "", machine_line() + f" {args.images:,} random 32x32 RGB uint8 images in memory, batches of "
             f"{args.batch_size}, recipe random crop (pad 4) + horizontal flip + normalize 0.5/0.5; raykit in the "
             f"main process with `torch.set_num_threads({args.workers})`, torchvision per PIL image in a DataLoader "
             f"with {args.workers} persistent workers. {args.repeats} repeats alternating the three, each after an "
             "untimed warm-up pass.", "",
             "| pipeline | images/s |", "|---|---|",
             "| raykit `standard` preset, from uint8 (gather, to float, NCHW, augment) | "
             f"{spread(rates['uint8'], 0)} |",
             f"| raykit `standard` preset on float NCHW already in memory (what the loop does per step) | "
             f"{spread(rates['float'], 0)} |",
             f"| torchvision transforms per image, DataLoader ({args.workers} workers) | "
             f"{spread(rates['torchvision'], 0)} |", "",
             verdict("Ratio raykit (from uint8) / torchvision, per repeat", ratio["uint8"], 3),
             verdict("Ratio raykit (float in memory) / torchvision, per repeat", ratio["float"], 3), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
