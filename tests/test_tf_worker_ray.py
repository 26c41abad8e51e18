"""The TensorFlow worker under TensorflowTrainer: 2 workers in sync, a run whose workers are killed
at seeded points ends as an uninterrupted run. (Parity with the torch worker, step by step from the same weights and batches:
tests/test_parity.py; on CIFAR-10: benchmarks/parity_cifar.py. Resuming by name is the same
Ray path for every framework: tests/test_torch_worker_ray.py; exact resume of the TF state through the
engine: tests/test_backend_contract.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import raykit
from raykit import faults
from tests.conftest import evaluated_on_rank_zero

DEFAULT_JOB = "jobs/configs/digits_cnn_torch.yaml"
TF = ["framework=tf"]
pytestmark = pytest.mark.ray


def final_weights(run_dir: Path) -> list[np.ndarray]:
    import h5py

    latest = max(Path(run_dir).glob("checkpoint_epoch=*"))
    arrays = []
    with h5py.File(latest / "model.weights.h5", "r") as handle:
        handle.visititems(lambda name, item: arrays.append(np.asarray(item)) if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.fixture(scope="module")
def straight(ray_address, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tf-straight")
    with pytest.MonkeyPatch.context() as monkeypatch:
        evaluated_on_rank_zero(monkeypatch)  # TF's rank 0 evaluates the test split beside its strategy
        return raykit.train(DEFAULT_JOB, [*TF, "train.epochs=4", f"storage={storage}", "checkpoint.keep_best=1",
                                          "name=straight"])


def assert_same_run(resumed, straight) -> None:
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    for ours, theirs in zip(resumed.history, straight.history):
        assert ours["val_acc"] == pytest.approx(theirs["val_acc"], abs=1e-9)
    for ours, theirs in zip(final_weights(resumed.run_dir), final_weights(straight.run_dir)):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_two_workers_hold_identical_weights_after_every_epoch(straight):
    assert straight.spec.scaling.num_workers == 2
    assert [row["weights_in_sync"] for row in straight.history] == [True] * 4
    assert straight.history[-1]["val_acc"] > 0.8 and straight.test_accuracy > 0.8
    manifest = json.loads((Path(straight.best_checkpoint) / "manifest.json").read_text())
    assert manifest["framework"] == "tf"
    assert Path(straight.exported_model).name.endswith(".weights.h5")
    best_epoch = max(straight.history, key=lambda row: (row["val_acc"], -row["epoch"]))["epoch"]
    kept = sorted(p.name for p in Path(straight.run_dir).glob("checkpoint_epoch=*"))
    assert kept == sorted({f"checkpoint_epoch={best_epoch:04d}", "checkpoint_epoch=0004"})


def test_workers_killed_at_seeded_points_restart_to_the_same_weights(straight, storage, tmp_path, monkeypatch):
    # Two kills (a TF restart costs ~15 s on 2 cores; the five-kill chaos run is torch's, and the restart
    # logic is the same Ray path): seed 5 kills rank 0 between the files of epoch 3's checkpoint (TF's own
    # writer) and rank 1 mid-epoch 2. Replay another plan with RAYKIT_CHAOS_SEED.
    seed = int(os.environ.get("RAYKIT_CHAOS_SEED", "5"))
    plan = faults.chaos_plan(seed, kills=2, epochs=4, world_size=2, marker_dir=str(tmp_path))
    monkeypatch.setenv("RAYKIT_FAULTS", json.dumps(plan))
    resumed = raykit.train(DEFAULT_JOB, [*TF, "train.epochs=4", f"storage={storage}", "checkpoint.keep_best=1",
                                         "scaling.max_failures=-1", "name=tf-chaos"])
    assert faults.kills_fired(plan) == 2, f"seed {seed}: {plan}"
    assert_same_run(resumed, straight)
