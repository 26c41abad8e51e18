"""The default job end to end on the session's Ray: Python API, CLI, resume, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import raykit
from raykit.history import read_history_csv
from raykit.spec import SpecError, load_spec
from tests.conftest import evaluated_on_rank_zero, run_cli

DEFAULT_JOB = "jobs/configs/digits_cnn_torch.yaml"
pytestmark = pytest.mark.ray


def assert_run_directory(run_dir: Path, epochs: list[int]) -> None:
    """The files every run leaves: resolved spec, metrics CSV, curves PNG, result, checkpoints."""
    spec = load_spec(run_dir / "spec.yaml")
    assert spec.name == run_dir.name and Path(spec.storage) == run_dir.parent
    history = read_history_csv((run_dir / "metrics.csv").read_text())
    assert [row["epoch"] for row in history] == epochs
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((run_dir / "result.json").read_text())
    assert Path(result["best_checkpoint"]).parent == run_dir
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint_epoch=*"))
    assert checkpoints and all((run_dir / c / "manifest.json").is_file() for c in checkpoints)


def test_tied_epochs_rank_zero_evaluates_ray_s_pick_and_a_reused_name_is_refused(ray_address, storage,
                                                                                   monkeypatch):
    # A learning rate below float32 resolution leaves the weights as they are: val_acc ties in all three
    # epochs. Ray keeps the best 2 (a tie ranks the later report higher, so epoch 1 goes) and names the
    # first of those best: epoch 2. Rank 0 must replay that choice (the task fallback is an error here).
    evaluated_on_rank_zero(monkeypatch)
    result = raykit.train(None, ["train.epochs=3", f"storage={storage}", "name=taken", "scaling.num_workers=1",
                                 "model.name=mlp", "optim.lr=1e-12", "checkpoint.keep_best=2"])
    assert len({row["val_acc"] for row in result.history}) == 1
    assert Path(result.best_checkpoint).name == "checkpoint_epoch=0002"
    assert sorted(p.name for p in Path(result.run_dir).glob("checkpoint_epoch=*")) == \
        ["checkpoint_epoch=0002", "checkpoint_epoch=0003"]
    from raykit.engine import evaluate_checkpoint

    assert result.test_metrics == evaluate_checkpoint(result.spec, result.best_checkpoint, "test")

    # The name is now taken by an mlp run: a cnn under it is refused before Ray runs.
    with pytest.raises(SpecError) as info:
        raykit.train(None, ["train.epochs=1", f"storage={storage}", "name=taken", "model.name=cnn"])
    assert info.value.fields == ["name"] and "model.name" in str(info.value)


def test_a_timm_zoo_model_with_kwargs_trains_an_epoch_on_two_workers(ray_address, storage):
    result = raykit.train(None, ["train.epochs=1", f"storage={storage}", "name=zoo", "scaling.num_workers=2",
                                 "model.name=timm:test_resnet", "model.kwargs={drop_rate: 0.1}",
                                 "train.max_steps_per_epoch=4", "train.metrics=[top2_acc, macro_f1]",
                                 "checkpoint.monitor=val_macro_f1"])
    assert_metrics_are_scikit_learn_s(result)
    assert [row["epoch"] for row in result.history] == [1] and result.history[0]["train_loss"] > 0
    assert load_spec(Path(result.run_dir) / "spec.yaml").model.kwargs == {"drop_rate": 0.1}
    import torch

    weights = torch.load(Path(result.best_checkpoint) / "model.pt", weights_only=True)
    assert weights["fc.weight"].shape[0] == 10 and weights["conv1.0.weight"].shape[1] == 1  # digits: 10 classes, gray


def assert_metrics_are_scikit_learn_s(result) -> None:
    """train.metrics summed over the ranks' val shards each epoch, and rank 0's test evaluation, equal
    scikit-learn's on the checkpoint's predictions over the whole split."""
    from sklearn.metrics import f1_score, top_k_accuracy_score

    from raykit.data import plan_data, to_float
    from raykit.engine import reference_logits

    plan = plan_data(result.spec.data)
    assert result.best_metrics["val_macro_f1"] == result.history[-1]["val_macro_f1"]  # the monitor ranked it
    for split, values in (("val", result.history[-1]), ("test", result.test_metrics)):
        data = plan.splits[split].read()
        logits = reference_logits(result.spec, result.best_checkpoint, to_float(data.x), plan.info.input_shape, 10)
        assert values[f"{split}_top2_acc"] == pytest.approx(
            top_k_accuracy_score(data.y, logits, k=2, labels=list(range(10))), abs=1e-9)
        assert values[f"{split}_macro_f1"] == pytest.approx(f1_score(data.y, logits.argmax(1), average="macro"),
                                                            abs=1e-9)


def test_a_keras_applications_model_with_kwargs_trains_an_epoch_on_two_workers(ray_address, storage):
    # keras.applications' MobileNet takes 32x32 (the CIFAR slice's size) at alpha 0.25: the smallest of them.
    slice_dir = Path(__file__).resolve().parent / "data" / "cifar10_slice"
    result = raykit.train(None, ["framework=tf", "train.epochs=1", f"storage={storage}", "name=keras-zoo",
                                 "scaling.num_workers=2", f"data.uri={slice_dir / 'train.parquet'}",
                                 "model.name=keras:MobileNet", "model.kwargs={alpha: 0.25, pooling: avg}",
                                 "model.hidden=[16]", "augment.ops=[{op: normalize, mean: imagenet}]",
                                 "train.batch_size=32", "train.max_steps_per_epoch=1", "data.val_fraction=0.05",
                                 "data.test_fraction=0.05"])
    assert [row["epoch"] for row in result.history] == [1] and result.history[0]["train_loss"] > 0
    assert result.history[0]["weights_in_sync"] is True  # both workers stepped in lockstep
    assert result.test_metrics["test_samples"] > 0  # rank 0 evaluated the checkpoint
    model = raykit.Run.open(result.run_dir).load_model()  # the best checkpoint, behind its imagenet normalize
    assert model.layers[-1].layers[1].name == "mobilenet_0.25_32"  # model.kwargs reached the constructor
    assert model(model.preprocess(str(slice_dir / "test.parquet"))[:4]).shape == (4, 10)


def test_a_data_file_broken_after_the_driver_checked_it_is_one_message_not_a_worker_traceback(
        ray_address, storage, tmp_path, monkeypatch, capfd):
    import numpy as np

    from raykit import api
    from raykit.cli import main
    from raykit.data.images import encode_png

    for label in ("ant", "bee"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for index in range(10):
            image = np.full((8, 8, 1), 20 * index, np.uint8)
            (tmp_path / "images" / label / f"{index}.png").write_bytes(encode_png(image))
    described = api.describe_plan

    def break_the_images(plan):  # after the driver's checks, before Ray starts: the workers read them broken
        for path in (tmp_path / "images").rglob("*.png"):
            path.write_bytes(b"not a png any more")
        return described(plan)

    monkeypatch.setattr(api, "describe_plan", break_the_images)
    code = main(["train", "--set", f"storage={storage}", "--set", "name=broken", "--set",
                 f"data.uri={tmp_path / 'images'}", "--set", "scaling.num_workers=1", "--set", "model.name=mlp",
                 "--set", "train.epochs=1", "--address", ray_address])
    err = capfd.readouterr().err
    assert code == 2, err[-3000:]
    assert f"raykit: invalid data: cannot read image {tmp_path / 'images'}" in err
    assert "Traceback" not in err and "TrainingFailedError" not in err


def test_asking_for_more_than_the_cluster_has_fails_before_launch(ray_address, storage):
    from raykit.ray.cluster import ResourceError

    with pytest.raises(ResourceError, match="GPU"):
        raykit.train(None, [f"storage={storage}", "scaling.use_gpu=true"])
    with pytest.raises(ResourceError, match="CPU"):
        raykit.train(None, [f"storage={storage}", "scaling.num_workers=4"])


def test_a_stale_ray_start_address_is_never_joined_and_a_running_one_is(ray_address, tmp_path, monkeypatch):
    import ray

    from raykit.ray import cluster

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where Ray looks for `ray start`'s address file
    (tmp_path / "ray").mkdir()
    address_file = tmp_path / "ray" / "ray_current_cluster"
    joined = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **kwargs: joined.append(address))
    address_file.write_text("127.0.0.1:9")  # left by a Ray that is gone: Ray's own init would wait on it
    cluster.connect(None)
    address_file.write_text(ray_address)  # a Ray that is running on this machine
    cluster.connect(None)
    address_file.unlink()
    cluster.connect(None)
    cluster.connect("10.0.0.1:6379")  # an address given is always the one joined
    assert joined == ["local", ray_address, "local", "10.0.0.1:6379"]


def test_the_preemption_watcher_is_left_out_on_a_single_fixed_node_only(ray_address, monkeypatch):
    import os

    from raykit.ray import cluster, trainer

    monkeypatch.delenv(trainer.PREEMPTION_WATCHER, raising=False)
    monkeypatch.setattr(trainer, "_set_here", set())
    assert cluster.single_fixed_node()  # the session's local Ray: one node, no autoscaler
    trainer.set_controller_environment()
    assert os.environ[trainer.PREEMPTION_WATCHER] == "0"
    monkeypatch.setattr(trainer, "single_fixed_node", lambda: False)  # say a second node joined
    trainer.set_controller_environment()
    assert trainer.PREEMPTION_WATCHER not in os.environ
    monkeypatch.setattr(trainer, "single_fixed_node", lambda: True)
    monkeypatch.setenv(trainer.PREEMPTION_WATCHER, "1")  # the user's own choice is kept
    trainer.set_controller_environment()
    assert os.environ[trainer.PREEMPTION_WATCHER] == "1"


def test_the_autoscaler_is_not_asked_for_resources_on_a_single_fixed_node_only(ray_address, monkeypatch, tmp_path):
    """Ray's fixed scaling policy asks the AutoscalingCoordinator (an actor it creates, waiting up to 5 s)
    for the workers' resources before it starts them; where no autoscaler grows the cluster raykit's
    trainer hands the controller a policy that does not (measured: first epoch line 1.0 s sooner cold)."""
    from types import SimpleNamespace

    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer as RayDataParallelTrainer

    from raykit.ray import cluster, data_parallel, trainer

    spec = load_spec(None, [f"storage={tmp_path}"])
    built = trainer.build_trainer(spec, str(tmp_path / "run"))
    handed = []
    monkeypatch.setattr(RayDataParallelTrainer, "_initialize_and_run_controller",
                        lambda self, **kwargs: handed.append(kwargs["scaling_policy"]))
    assert cluster.single_fixed_node()  # the session's Ray: one node, no autoscaler
    built._initialize_and_run_controller(scaling_policy=FixedScalingPolicy(built.scaling_config))
    monkeypatch.setattr(cluster, "single_fixed_node", lambda: False)  # say a second node joined
    built._initialize_and_run_controller(scaling_policy=FixedScalingPolicy(built.scaling_config))
    assert [type(policy) for policy in handed] == [data_parallel.FixedScalingWithoutAutoscaler, FixedScalingPolicy]

    asked = []

    def coordinator():
        asked.append(True)
        raise RuntimeError("no coordinator here")  # Ray's client logs it and goes on

    monkeypatch.setattr("ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client."
                        "get_or_create_autoscaling_coordinator", coordinator)
    policy = handed[0]
    policy.after_controller_start(SimpleNamespace(run_id="run"))
    assert policy.make_decision_for_non_running_worker_group().num_workers == spec.scaling.num_workers
    policy.before_controller_abort()
    assert asked == []
    handed[1].after_controller_start(SimpleNamespace(run_id="run"))
    assert asked == [True]  # Ray's own policy asks


@pytest.mark.slow
def test_default_job_through_the_cli(ray_address, storage):
    # The whole default job (20 epochs, 2 workers), as `make run` runs it. (jobs/train.py runs the same
    # CLI code under `ray job submit`: tests/test_jobs_ray.py. Resuming by name through the Python API,
    # rank 0 evaluating the best checkpoint after a resume: tests/test_torch_worker_ray.py.)
    out = run_cli(["-m", "raykit.cli", "train", DEFAULT_JOB, "--set", f"storage={storage}", "--set", "name=run",
                   "--address", ray_address])
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = Path(storage) / "run"
    assert "epoch  20/20" in out.stdout and "val_acc" in out.stdout and "eta" in out.stdout
    assert "test accuracy:" in out.stdout and "best checkpoint:" in out.stdout and "where it went:" in out.stdout
    assert f"run directory:   {run_dir}" in out.stdout
    assert_run_directory(run_dir, list(range(1, 21)))
    spec = load_spec(run_dir / "spec.yaml")
    assert spec.train.epochs == 20 and spec.scaling.num_workers == 2
    result = json.loads((run_dir / "result.json").read_text())
    assert result["test_metrics"]["test_acc"] >= 0.97
    history = read_history_csv((run_dir / "metrics.csv").read_text())
    assert result["best_metrics"]["val_acc"] == max(row["val_acc"] for row in history)
    # Where the time went: every phase of a Ray Train run, adding up to the wall time (what is left is
    # the driver's own bookkeeping between phases).
    timings = result["timings"]
    assert {"spec_and_plan_s", "ray_start_s", "to_worker_process_s", "worker_setup_s", "data_s", "model_build_s",
            "epochs_s", "final_evaluation_s", "worker_exit_s", "outputs_s", "total_s"} <= set(timings)
    assert all(value >= 0 for value in timings.values())
    assert timings["epochs_s"] >= history[-1]["epoch_time_s"]
    parts = sum(value for key, value in timings.items() if key != "total_s")
    assert timings["total_s"] - 2.0 < parts <= timings["total_s"] + 0.01
