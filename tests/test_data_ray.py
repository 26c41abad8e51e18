"""Streamed data through Ray Data, and runs stored on a real S3-compatible server (moto, over HTTP)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import raykit
from raykit.data import plan_data, stratified_split
from raykit.data.convert import convert
from raykit.engine import fit
from raykit.session import WorkerSession
from raykit.spec import load_spec
from tests import data_factory as make
from tests.conftest import evaluated_on_rank_zero

pytestmark = pytest.mark.ray

# Two workers at half a CPU each leave one of CI's two CPUs to the Ray Data read tasks.
STREAMED = {"data.loader": "stream", "data.read_cpus": 0.5, "scaling.num_workers": 2,
            "scaling.resources_per_worker": {"CPU": 0.5}}


def numbered_parquet(uri: str, n: int) -> str:
    """Row i's 4x4 image holds i in pixels (0, 0) and (0, 1), so a reader's output names its rows."""
    x = np.zeros((n, 4, 4, 1), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    return make.write_parquet(uri, x, np.arange(n) % 3, layout="tensor", files=3, rows_per_group=20)


def test_streamed_shards_are_disjoint_and_cover_the_split_once_per_epoch(ray_address, tmp_path):
    import ray.train

    from raykit.ray.data import datasets, decode_once, worker_streams
    from raykit.ray.trainer import trainer_class

    spec = load_spec(None, {"data.uri": numbered_parquet(str(tmp_path / "pq"), 300), **STREAMED,
                            "train.batch_size": 16})
    plan = plan_data(spec.data)
    assert decode_once(plan, "auto")  # small: the shards below come from blocks decoded once
    seen_dir = tmp_path / "seen"
    seen_dir.mkdir()

    def loop(config):
        streams = worker_streams(load_spec(config["spec"]))
        rank = ray.train.get_context().get_world_rank()
        for epoch in (1, 2):
            ids = [int(i) for batch in streams["train"]() for i in
                   batch["x"][:, 0, 0, 0].astype(int) * 256 + batch["x"][:, 0, 1, 0]]
            Path(config["out"], f"rank{rank}-epoch{epoch}.json").write_text(json.dumps(ids))

    # The loop only reads its shards: a plain data-parallel trainer, no framework to import in the workers.
    trainer = trainer_class("data_parallel")(
        loop, train_loop_config={"spec": spec.to_dict(), "out": str(seen_dir)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        datasets=datasets(plan, spec), run_config=ray.train.RunConfig(storage_path=str(tmp_path / "runs")))
    trainer.fit()
    train_rows = set(plan.splits["train"].rows.tolist())
    for epoch in (1, 2):
        shards = [json.loads((seen_dir / f"rank{r}-epoch{epoch}.json").read_text()) for r in (0, 1)]
        assert len(shards[0]) == len(shards[1])  # equal shards: DDP steps in lockstep
        assert not set(shards[0]) & set(shards[1])
        together = shards[0] + shards[1]
        assert len(together) == len(set(together))  # nothing twice in an epoch
        assert set(together) <= train_rows and len(train_rows) - len(together) <= 1  # equal split drops <= 1

    # Every epoch (execution) reads the training chunks in a new seeded order: row groups of 20 rows.
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the block order, not task completion, decides
    try:
        train = datasets(plan, spec)["train"]
        orders = [[int(rows[0]) // 20 for rows in (b["row"] for b in train.iter_batches(batch_size=None))]
                  for _ in range(2)]
    finally:
        context.execution_options.preserve_order = False
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])


def test_a_streamed_run_trains_and_evaluates(ray_address, storage, tmp_path):
    convert("digits", str(tmp_path / "digits-parquet"), rows_per_group=200, progress=False)
    # Decoded every epoch (the other streamed tests decode once into the object store: stream_cache auto).
    result = raykit.train(None, {"data.uri": str(tmp_path / "digits-parquet"), **STREAMED, "train.epochs": 3,
                                 "data.stream_cache": "off", "storage": storage, "name": "streamed",
                                 "checkpoint.every_n_epochs": 3})
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    assert result.history[-1]["val_acc"] > 0.8
    assert result.test_metrics["test_samples"] == 269 and result.test_accuracy > 0.8


def test_a_streamed_tf_run_trains_with_two_workers(ray_address, storage, tmp_path):
    convert("digits", str(tmp_path / "digits-parquet"), rows_per_group=200, progress=False)
    result = raykit.train(None, {"data.uri": str(tmp_path / "digits-parquet"), **STREAMED, "framework": "tf",
                                 "train.epochs": 3, "storage": storage, "name": "streamed-tf",
                                 "checkpoint.every_n_epochs": 3})
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    assert all(m["weights_in_sync"] for m in result.history)  # both workers stepped in lockstep on their shards
    # Keras's batch-norm statistics lag in the first epochs (in memory too: 0.21, 0.19, 0.86 measured).
    assert result.history[-1]["train_acc"] > 0.9 and result.history[-1]["val_acc"] > 0.6
    assert result.test_metrics["test_samples"] == 269


# --- data given from Python: NumPy arrays, Ray Datasets, py: factories --------------------------------------


def test_numpy_arrays_from_python_train_and_rank_zero_evaluates_them(ray_address, storage, monkeypatch):
    evaluated_on_rank_zero(monkeypatch)  # the test split given from Python reached rank 0
    parts = make.digits_splits()
    result = raykit.train(None, {"storage": storage, "name": "from-numpy", "train.epochs": 1, "model.name": "mlp",
                                 "scaling.num_workers": 1}, datasets=parts)
    assert [m["epoch"] for m in result.history] == [1] and result.history[0]["val_acc"] > 0.5
    assert result.test_metrics["test_samples"] == 270 and result.test_accuracy > 0.5
    assert result.data["sizes"] == {"train": 1257, "val": 270, "test": 270}
    recorded = load_spec(str(Path(result.run_dir) / "spec.yaml")).data.uri
    assert recorded == result.data["uri"] and recorded.startswith("python:")
    fingerprint = json.loads((Path(result.run_dir) / "data-fingerprint.json").read_text())
    assert fingerprint["train"] == {"kind": "NumPy arrays", "rows": 1257, "columns": {"x": "uint8[8, 8]", "y": "int64[]"}}
    with pytest.raises(raykit.SpecError, match="train rows 1257 before, 1000 now"):  # refused before Ray: no run
        raykit.train(None, {"storage": storage, "name": "from-numpy", "train.epochs": 2, "model.name": "mlp",
                            "scaling.num_workers": 1}, datasets={**parts, "train": tuple(a[:1000] for a in parts["train"])})


def test_a_py_factory_of_ray_datasets_streams_to_two_workers_and_evaluates_again(ray_address, storage, monkeypatch,
                                                                                 tmp_path):
    evaluated_on_rank_zero(monkeypatch)
    spec = {"storage": storage, "name": "from-factory", "train.epochs": 1, "model.name": "mlp",
            "data.uri": "py:tests.data_factory:digits_splits", "data.kwargs": {"as_ray": True},
            **STREAMED, "data.loader": "stream"}
    result = raykit.train(None, spec)
    assert [m["epoch"] for m in result.history] == [1] and result.history[0]["val_acc"] > 0.3
    assert result.data["uri"] == "py:tests.data_factory:digits_splits"
    assert result.test_metrics["test_samples"] == 270  # rank 0 read the whole test Dataset
    # `raykit evaluate` calls the factory again (a Ray task reads its test Dataset)
    report = raykit.evaluate(result.best_checkpoint, out_dir=str(tmp_path / "evaluation"), verbose=False)
    assert report["samples"] == 270 and report["accuracy"] == pytest.approx(result.test_accuracy)
    with pytest.raises(raykit.SpecError, match=r"data.uri: .*train rows 1257 before, 700 now"):
        raykit.train(None, {**spec, "data.kwargs": {"as_ray": True, "rows": 1000}})


def test_ray_datasets_are_planned_from_one_row_and_the_row_count(ray_address):
    import ray.data

    from raykit.data import DataError
    from raykit.data.from_python import given_datasets
    from raykit.ray.given import plan_datasets

    parts = make.digits_splits(rows=200, as_ray=True, columns=("x", "y"))
    spec = load_spec(None)
    plan = plan_datasets({"train": parts["train"], "val": parts["val"]}, spec)  # small: held in memory
    assert plan.loader == "memory" and plan.info.input_shape == (8, 8, 1) and plan.arrays.train.x.dtype == np.uint8
    carved = stratified_split(make.digits_splits(rows=200)["train"][1], 0.0, 0.15, seed=0)  # out of train's 140
    assert plan.info.sizes == {"train": len(carved[0]), "val": 30, "test": len(carved[2])}
    assert plan.fingerprint["train"] == {"kind": "ray.data.Dataset", "rows": 140,
                                         "columns": {"x": "uint8[8, 8]", "y": "int64[]"}}
    assert plan_datasets({"train": parts["train"], "val": parts["val"]}, spec).uri == plan.uri  # same split again
    streamed = load_spec(None, {"data.loader": "stream"}, data_from_python=True)
    with pytest.raises(DataError, match="no 'test' for streamed Ray Datasets"):
        plan_datasets({"train": parts["train"], "val": parts["val"]}, streamed)
    assert plan_datasets(parts, streamed).info.num_classes == 10  # from one read of the label column
    x, y = make.digits_splits(rows=50)["train"]
    with pytest.raises(DataError, match=r"no column 'image' \(data.image_column\) or 'x'; its columns: data"):
        plan_datasets({"train": ray.data.from_numpy(x)}, spec)
    with pytest.raises(DataError, match=r"datasets: mixes kinds \(train ray.data.Dataset, val NumPy arrays\)"):
        given_datasets({"train": parts["train"], "val": (x, y)}, spec.data)
    floats = ray.data.from_items([{"image": image, "label": float(label)} for image, label in zip(x, y)])
    with pytest.raises(DataError, match="column 'label': labels of dtype float64"):
        plan_datasets({"train": floats}, spec)


def test_a_streamed_ray_dataset_given_from_python_comes_in_a_new_block_order_every_epoch(ray_address):
    import ray.data

    from raykit.ray.given import hold, plan_datasets

    def numbered(count: int, blocks: int, first: int):  # pixel (0, 0) holds the row's number
        images = np.zeros((count, 8, 8), np.uint8)
        images[:, 0, 0] = np.arange(first, first + count)
        return ray.data.from_items([{"image": image, "label": row % 10} for row, image in enumerate(images)],
                                   override_num_blocks=blocks)

    spec = load_spec(None, {"data.loader": "stream"}, data_from_python=True)
    given = {"train": numbered(80, 8, 0), "val": numbered(20, 2, 100), "test": numbered(20, 2, 150)}
    held = hold(plan_datasets(given, spec), spec)

    def block_order(name: str) -> list[int]:  # each block's first row number // its 10 rows
        return [int(block["x"].reshape(len(block["x"]), -1)[0, 0]) // 10
                for block in held.datasets[name].iter_batches(batch_size=None)]

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the block order, not task completion, decides
    try:
        train = [block_order("train") for _ in range(3)]  # an execution per epoch
        val = [block_order("val") for _ in range(2)]
    finally:
        context.execution_options.preserve_order = False
    assert all(sorted(order) == list(range(8)) for order in train)
    assert len({tuple(order) for order in train}) > 1  # 1 in 8! ** 2 that three seeded orders are all one
    assert val[0] == val[1] == [10, 11]  # validation is read as given


# --- S3-compatible storage: a moto server on 127.0.0.1, the bytes cross HTTP --------------------------------


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch) -> str:
    """A fresh bucket; the AWS settings exist only in this (driver) process, after Ray started: raykit must
    carry them to the Train controller, the workers and its tasks."""
    import uuid

    import boto3

    for key, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    name = f"raykit-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def objects(bucket: str, prefix: str) -> list[str]:
    import boto3

    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_s3_storage_train_resume_finetune_and_parquet_data(ray_address, bucket, monkeypatch):
    evaluated_on_rank_zero(monkeypatch)  # rank 0 reads the best checkpoint back from S3
    data_uri = f"s3://{bucket}/data/digits"
    convert("digits", data_uri, rows_per_group=300, progress=False)
    runs = f"s3://{bucket}/runs"
    common = {"data.uri": data_uri, "storage": runs, "scaling.num_workers": 1, "train.batch_size": 64}

    first = raykit.train(None, {**common, "name": "base", "train.epochs": 2})
    keys = objects(bucket, "runs/base/")
    for expected in ("runs/base/spec.yaml", "runs/base/metrics.csv", "runs/base/curves.png",
                     "runs/base/result.json", "runs/base/checkpoint_epoch=0002/manifest.json"):
        assert expected in keys
    assert first.best_checkpoint.startswith(f"s3://{bucket}/runs/base/checkpoint_epoch=")

    resumed = raykit.train(None, {**common, "name": "base", "train.epochs": 3})
    assert [m["epoch"] for m in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history  # epochs 1-2 come from the first run, not a retrain
    assert "runs/base/checkpoint_epoch=0003/manifest.json" in objects(bucket, "runs/base/")

    # The finished run reopens from its URI; its best model loads from there and reads the S3 data.
    opened = raykit.Run.open(f"{runs}/base")
    assert opened.spec == resumed.spec and opened.test_metrics == resumed.test_metrics
    assert opened.best_checkpoint == resumed.best_checkpoint
    assert list(opened.metrics_dataframe["epoch"]) == [1, 2, 3]
    assert 3 in [c.epoch for c in opened.checkpoints]
    assert all(c.path.startswith(f"{runs}/base/checkpoint_epoch=") for c in opened.checkpoints)
    model = opened.load_model()
    with torch.no_grad():
        predicted = model(torch.from_numpy(model.preprocess(data_uri))).argmax(1).numpy()
    assert (predicted == model.preprocess.open(data_uri).labels).mean() > 0.5  # chance: 0.1

    # Fine-tuning from that S3 checkpoint is the worker code reading it (a Train run's workers reach S3 as
    # shown above): run here in one process, it saves a third Ray Train run.
    scratch_epoch1 = first.history[0]["val_acc"]
    tuned = fit(load_spec(None, {**common, "name": "tuned", "train.epochs": 1,
                                 "finetune.init_from": resumed.best_checkpoint}), WorkerSession())
    assert tuned["history"][0]["val_acc"] > scratch_epoch1  # it started from the trained weights
