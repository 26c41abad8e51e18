"""The baseline a user would write by hand: a minimal Ray Train script for the default digits CNN job.

A TorchTrainer whose `train_loop_per_worker` builds the same CNN as raykit's `cnn` model (written out as
an `nn.Sequential`), takes its shard of the same digits training split, wraps the model for DDP with
`ray.train.torch.prepare_model`, trains with Adam (lr 1e-3) at 32 samples per worker per step, validates
on its shard of the validation split (summed over workers), and reports metrics with a checkpoint (the
model's and the optimizer's state dicts) every epoch. No test evaluation, export, metric files or plots.
Epoch time covers training and validation, as raykit's `epoch_time_s` does.

    from benchmarks.baselines.ray_train_minimal import train_digits_cnn
    history = train_digits_cnn(num_workers=2, epochs=5, storage_path="/tmp/runs", name="baseline")

As a command (a fresh process, as benchmarks/first_epoch.py times it), rank 0 prints one line per epoch;
``--empty`` runs a training function that only prints its first epoch line: Ray Train's own start-up
(connect or start Ray, controller, placement group, worker processes with torch imported, the process
group), the floor under any Ray Train job's first epoch on the machine:

    python benchmarks/baselines/ray_train_minimal.py --workers 2 --epochs 2 --storage /tmp/runs [--empty]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import ray.train
import torch
from ray.train.torch import TorchTrainer, prepare_model
from torch import nn


def digits_cnn() -> nn.Sequential:
    """Three conv 3x3 -> ReLU -> batch norm -> max-pool blocks (32, 64, 128 filters; 8x8 -> 4 -> 2 -> 1),
    then dense 128 + ReLU, dropout 0.5 and a 10-way head."""
    layers, channels = [], 1
    for filters in (32, 64, 128):
        layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(filters),
                   nn.MaxPool2d(2, ceil_mode=True)]
        channels = filters
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128, 128), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(128, 10))


def _shard(split, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's every ``world_size``-th sample (of a length every rank shares: DDP needs equal step
    counts), as NCHW float images and int64 labels."""
    n = len(split.y) - len(split.y) % world_size
    x, y = split.x[rank:n:world_size], split.y[rank:n:world_size]
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)


def train_loop_per_worker(config: dict) -> list[dict]:
    from raykit.data import load_splits  # the same digits split (70/15/15, seed 0) as the default job
    from raykit.spec import DataSpec

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(0)
    splits = load_splits(DataSpec())
    x, y = _shard(splits.train, rank, world_size)
    val_x, val_y = _shard(splits.val, rank, world_size)
    model = prepare_model(digits_cnn())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for epoch in range(1, config["epochs"] + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(order), config["batch_per_worker"]):
            batch = order[i:i + config["batch_per_worker"]]
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            totals = torch.tensor([(model(val_x).argmax(1) == val_y).sum().item(), len(val_y)], dtype=torch.float64)
        torch.distributed.all_reduce(totals)
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "val_acc": float(totals[0] / totals[1]), "epoch_time_s": seconds})
        if rank == 0:
            print_line(f"epoch {epoch}/{config['epochs']} val_acc {history[-1]['val_acc']:.4f}")
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if rank == 0:
                plain = getattr(model, "module", model)  # prepare_model wraps in DDP only with 2+ workers
                torch.save({"model": plain.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                           os.path.join(directory, "checkpoint.pt"))
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(history[-1], checkpoint=checkpoint)
    return history


def empty_loop_per_worker(config: dict) -> list[dict]:
    """Nothing but rank 0's first epoch line: what remains is Ray Train's start-up."""
    if ray.train.get_context().get_world_rank() == 0:
        print_line(f"epoch 1/{config['epochs']} (empty training function)")
    return []


def print_line(text: str) -> None:
    sys.stdout.write(text + "\n")  # as raykit's rank 0 writes its epoch lines (Ray forwards them to the driver)
    sys.stdout.flush()


def train_digits_cnn(num_workers: int, epochs: int, storage_path: str, name: str,
                     batch_per_worker: int = 32, empty: bool = False) -> list[dict]:
    """Train and return rank 0's per-epoch metrics (``epoch``, ``val_acc``, ``epoch_time_s``); ``empty``:
    run :func:`empty_loop_per_worker` instead (returns [])."""
    trainer = TorchTrainer(empty_loop_per_worker if empty else train_loop_per_worker,
                           train_loop_config={"epochs": epochs, "batch_per_worker": batch_per_worker},
                           scaling_config=ray.train.ScalingConfig(num_workers=num_workers),
                           run_config=ray.train.RunConfig(name=name, storage_path=storage_path))
    return trainer.fit().return_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--storage", default=os.path.join(tempfile.gettempdir(), "ray-train-minimal"))
    parser.add_argument("--name", default="minimal")
    parser.add_argument("--empty", action="store_true", help="an empty training function: Ray Train's start-up")
    args = parser.parse_args()
    ray.init()  # RAY_ADDRESS joins a running Ray; without it, a local Ray of this process's own
    train_digits_cnn(args.workers, args.epochs, args.storage, args.name, empty=args.empty)


if __name__ == "__main__":
    main()
