"""Time to accuracy, by hand in Keras 3: the seed's CNN on digits with `model.fit`, Adam 1e-3, batch 64, stopped
by a callback once the validation accuracy reaches the target; prints one JSON line (epochs, test accuracy).
The split is raykit's (the same rows for every contender); everything else is plain Keras.

    python benchmarks/baselines/tta_keras.py [--target 0.98] [--max-epochs 40]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import keras  # noqa: E402

from benchmarks.baselines.plain_keras import build_cnn  # noqa: E402
from raykit.data import load_splits  # noqa: E402
from raykit.spec import DataSpec  # noqa: E402


class StopAt(keras.callbacks.Callback):
    def __init__(self, target: float):
        super().__init__()
        self.target, self.epochs = target, 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = epoch + 1
        if logs["val_accuracy"] >= self.target:
            self.model.stop_training = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--max-epochs", type=int, default=40)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    splits = load_splits(DataSpec())
    model = build_cnn(splits.input_shape, splits.num_classes)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    stop = StopAt(args.target)
    model.fit(splits.train.x, splits.train.y, batch_size=64, epochs=args.max_epochs, verbose=0,
              validation_data=(splits.val.x, splits.val.y), callbacks=[stop])
    _, test_acc = model.evaluate(splits.test.x, splits.test.y, verbose=0)
    print(json.dumps({"epochs": stop.epochs, "test_acc": float(test_acc)}))


if __name__ == "__main__":
    main()
