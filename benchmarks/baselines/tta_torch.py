"""Time to accuracy, by hand in PyTorch: the seed's CNN on digits, one process, Adam 1e-3, batch 64, until the
validation accuracy reaches the target; prints one JSON line (epochs, test accuracy). The split is raykit's
(the same rows for every contender); everything else is plain torch.

    python benchmarks/baselines/tta_torch.py [--target 0.98] [--max-epochs 40]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from benchmarks.baselines.plain_torch import build_cnn  # noqa: E402
from raykit.data import load_splits  # noqa: E402
from raykit.spec import DataSpec  # noqa: E402


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--max-epochs", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    splits = load_splits(DataSpec())
    tensors = {name: (torch.from_numpy(s.x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(s.y))
               for name, s in (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    model = build_cnn(splits.input_shape, splits.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = tensors["train"]
    for epoch in range(1, args.max_epochs + 1):
        model.train()
        for batch in torch.randperm(len(y)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if accuracy(model, *tensors["val"]) >= args.target:
            break
    print(json.dumps({"epochs": epoch, "test_acc": accuracy(model, *tensors["test"])}))


if __name__ == "__main__":
    main()
