"""Data given from Python (raykit.train(datasets=...), data.uri: py:...): checks, planning and resume
fingerprints, without Ray. The Ray runs are in test_data_ray.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import raykit
from raykit.api import _data_plan, resolve
from raykit.data import DataError, plan_data, stratified_split
from raykit.data.from_python import FINGERPRINT_FILE, given_datasets, plan_arrays
from raykit.spec import DataSpec, SpecError, load_spec
from tests.data_factory import digits_splits


def returns_a_list():
    """A ``py:`` factory returning the wrong type."""
    return [1, 2, 3]


@pytest.fixture
def no_ray(monkeypatch):
    """Reaching Ray is a failure: every problem below must be found before."""
    def connect(*args, **kwargs):
        raise AssertionError("Ray was reached before the bad input was refused")

    monkeypatch.setattr("raykit.ray.cluster.connect", connect)


DIGITS = digits_splits()
X, Y = DIGITS["train"]


@pytest.mark.parametrize("datasets, expected", [
    ({"training": (X, Y)}, "datasets: unknown split 'training'; accepted keys: train (required), val, test"),
    ({"val": (X, Y)}, "datasets: no 'train' dataset (got 'val')"),
    ({"train": [X, Y, Y]}, "datasets['train']: got a list of 3 items; accepted: an (x, y) pair of NumPy arrays"),
    ({"train": "digits"}, "datasets['train']: got a str; accepted: an (x, y) pair"),
    ("digits", "datasets: got a str; accepted: a mapping {'train': ..., 'val': ..., 'test': ...}"),
    ({"train": (X, Y[:-1])}, "datasets['train']: x has 1257 rows (shape (1257, 8, 8)) and y 1256"),
    ({"train": (X, Y.astype(float))}, "datasets['train'] y: labels of dtype float64; accepted: integer class"),
    ({"train": (X, Y - 1)}, "datasets['train'] y: label -1 is negative"),
    ({"train": (X, np.eye(10, dtype=np.int64)[Y])}, "y: labels of shape (1257, 10); accepted: class indices"),
    ({"train": (X.astype(np.float32), Y)}, "x: float images range 0..255; accepted: floats in [0, 1]"),
    ({"train": (X.astype(np.int32) * 2, Y)}, "x: integer pixels range 0..510"),
    ({"train": (X[:, :, :, None, None], Y)}, "x: rows of shape (8, 8, 1, 1); accepted: images (H, W, C)"),
    ({"train": (X[:0], Y[:0])}, "datasets['train']: no rows"),
    ({"train": (X, Y), "test": (X[:5, :4], Y[:5])}, "the splits' rows differ in shape"),
])
def test_bad_datasets_are_refused_before_ray_naming_what_is_accepted(no_ray, storage, datasets, expected):
    with pytest.raises(DataError) as failure:
        raykit.train(None, {"storage": storage}, datasets=datasets, verbose=False)
    assert expected in str(failure.value)


@pytest.mark.parametrize("overrides, field", [({"data.uri": "cifar10"}, "data.uri"),
                                               ({"data.uri": "py:tests.data_factory:digits_splits"}, "data.uri"),
                                               ({"data.val_uri": "tests"}, "data.val_uri")])
def test_a_spec_naming_its_own_data_beside_datasets_is_refused(no_ray, storage, overrides, field):
    with pytest.raises(SpecError) as failure:
        raykit.train(None, {"storage": storage, **overrides}, datasets={"train": (X, Y)}, verbose=False)
    (path, message), = failure.value.problems
    assert path == field and "with datasets passed from Python; accepted: one source of data" in message


@pytest.mark.parametrize("overrides, expected", [
    ({"data.val_fraction": 0}, "the val split is empty (data.val_fraction is 0.0"),
    ({"model.num_classes": 5}, "model.num_classes: got 5, but the datasets have label 9"),
    ({"data.loader": "stream"}, "data.loader: got 'stream' for NumPy arrays"),
])
def test_datasets_that_do_not_fit_the_spec_are_refused_before_ray(no_ray, storage, overrides, expected):
    with pytest.raises(DataError) as failure:
        raykit.train(None, {"storage": storage, **overrides}, datasets={"train": (X, Y)}, verbose=False)
    assert expected in str(failure.value)


@pytest.mark.parametrize("uri, kwargs, expected", [
    ("py:tests.no_such_module:digits", {}, "data.uri: cannot import module 'tests.no_such_module'"),
    ("py:tests.data_factory:no_such_function", {}, "module 'tests.data_factory' has no callable 'no_such_function'"),
    ("py:tests.test_data_from_python:returns_a_list", {},
     "data.uri 'py:tests.test_data_from_python:returns_a_list' returned: got a list; accepted: a mapping"),
    ("py:tests.data_factory:digits_splits", {"no_such_argument": 1},
     "the factory 'py:tests.data_factory:digits_splits' called with data.kwargs {'no_such_argument': 1} raised "
     "TypeError"),
])
def test_a_py_factory_that_cannot_be_used_is_refused_before_ray(no_ray, storage, uri, kwargs, expected):
    with pytest.raises(DataError) as failure:
        raykit.train(None, {"storage": storage, "data.uri": uri, "data.kwargs": kwargs}, verbose=False)
    assert expected in str(failure.value)


@pytest.mark.parametrize("overrides, field, expected", [
    ({"data.uri": "py:not a factory"}, "data.uri", "accepted: 'py:package.module:function'"),
    ({"data.uri": "python:abc"}, "data.uri", "'python:<12 hex digits>'"),
    ({"data.kwargs": {"rows": 5}}, "data.kwargs", "for a data.uri 'py:package.module:function' factory only"),
    ({"data.uri": "py:tests.data_factory:digits_splits", "data.test_uri": "tests"}, "data.test_uri",
     "which gives every split; accepted: null"),
    ({"data.uri": "py:tests.data_factory:digits_splits", "data.resize": [4, 4]}, "data.resize",
     "for data from Python, which is used as given"),
])
def test_spec_rules_for_data_from_python(overrides, field, expected):
    with pytest.raises(SpecError) as failure:
        load_spec(None, overrides)
    assert [(path, message) for path, message in failure.value.problems if path == field and expected in message]


def test_val_given_from_python_needs_no_val_fraction_and_ray_datasets_may_stream(no_ray, storage):
    # What the spec rules refuse for its own default data (digits) is fine with datasets from Python.
    spec = load_spec(None, {"data.val_fraction": 0, "data.loader": "stream"}, data_from_python=True)
    assert spec.data.uri == "python:" and spec.data.loader == "stream"
    with pytest.raises(DataError, match="data.loader: got 'stream' for NumPy arrays"):  # NumPy: held in memory
        raykit.train(None, {"storage": storage, "data.val_fraction": 0, "data.loader": "stream"}, datasets=DIGITS)
    assert _data_plan(resolve(load_spec(None, {"storage": storage, "data.val_fraction": 0}, data_from_python=True)),
                      DIGITS, f"{storage}/x")[1].info.sizes["val"] == 270


def test_a_py_factory_is_only_checked_for_its_form_by_the_spec_and_a_record_is_accepted():
    # Workers validate the spec too, and need not import the factory (it is called in the driver only).
    assert load_spec(None, {"data.uri": "py:somewhere_else.module:make", "data.kwargs": {"n": 1}}).data.kwargs == {"n": 1}
    assert load_spec(None, {"data.uri": "python:0123456789ab"}).data.uri == "python:0123456789ab"


def test_numpy_arrays_are_planned_as_the_workers_hold_them():
    spec = DataSpec()
    plan = plan_arrays(given_datasets({"train": (X, Y), "test": DIGITS["test"]}, spec), spec, None)
    splits = plan.arrays
    assert plan.loader == "memory" and plan.info.input_shape == (8, 8, 1) and plan.info.num_classes == 10
    assert splits.train.x.dtype == np.uint8 and splits.train.x.shape[1:] == (8, 8, 1)  # (N, H, W) -> one channel
    assert np.array_equal(splits.test.x[..., 0], DIGITS["test"][0])  # given: kept as it is
    # The missing val split is carved out of train (stratified, seeded), nothing lost or repeated.
    assert len(splits.val) == len(stratified_split(Y, 0.15, 0.0, seed=0)[1])
    assert len(splits.train) + len(splits.val) == len(Y)
    assert sorted(np.concatenate([splits.train.y, splits.val.y])) == sorted(Y)
    assert plan.fingerprint == {
        "train": {"kind": "NumPy arrays", "rows": 1257, "columns": {"x": "uint8[8, 8]", "y": "int64[]"}},
        "test": {"kind": "NumPy arrays", "rows": 270, "columns": {"x": "uint8[8, 8]", "y": "int64[]"}}}
    assert plan.uri.startswith("python:") and len(plan.uri) == len("python:") + 12
    again = plan_arrays(given_datasets({"train": (X, Y), "test": DIGITS["test"]}, spec), spec, None)
    assert again.uri == plan.uri and np.array_equal(again.arrays.val.y, splits.val.y)  # a resume splits the same


def test_features_and_column_labels_are_taken_as_one_pixel_images_and_class_indices():
    features = np.random.default_rng(0).normal(size=(60, 5))  # standardized: any range
    labels = (np.arange(60) % 3)[:, None].astype(np.int32)  # a column vector, as keras.datasets gives
    plan = plan_arrays(given_datasets((features, labels), DataSpec()), DataSpec(), None)
    assert plan.info.input_shape == (1, 1, 5) and plan.arrays.train.x.dtype == np.float32
    assert plan.arrays.train.y.dtype == np.int64 and plan.info.num_classes == 3
    with pytest.raises(DataError, match="holds NaN or infinite values"):
        given_datasets((np.full((4, 5), np.nan), np.arange(4)), DataSpec())


def test_a_run_fed_from_python_resumes_only_on_the_same_data(no_ray, storage):
    spec = resolve(load_spec(None, {"storage": storage, "name": "fed"}))
    run_dir = f"{storage}/fed"
    first, plan = _data_plan(spec, DIGITS, run_dir)
    Path(run_dir).mkdir(parents=True)  # what a first run leaves
    (Path(run_dir) / FINGERPRINT_FILE).write_text(json.dumps(plan.fingerprint))
    (Path(run_dir) / "spec.yaml").write_text(first.to_yaml())
    assert _data_plan(spec, digits_splits(), run_dir)[0] == first  # the same data again: fine
    other = {**DIGITS, "train": (X[:1000].astype(np.float32) / 255, Y[:1000])}
    with pytest.raises(SpecError) as failure:
        raykit.train(None, {"storage": storage, "name": "fed"}, datasets=other, verbose=False)
    (field, message), = failure.value.problems
    assert field == "datasets" and f"the run in {run_dir} was trained on other data" in message
    assert "train rows 1257 before, 1000 now" in message
    assert "train column 'x' uint8[8, 8] before, float32[8, 8] now" in message
    with pytest.raises(SpecError, match="test given before, missing now"):
        raykit.train(None, {"storage": storage, "name": "fed"}, datasets={"train": (X, Y), "val": DIGITS["val"]},
                     verbose=False)


def test_a_run_fed_from_python_is_not_evaluated_without_its_data(no_ray, tmp_path):
    spec = load_spec(None, {"data.uri": "python:0123456789ab"})
    (tmp_path / "model.pt").write_bytes(b"weights")  # a manifest that passes the driver's checks
    manifest = {"format": "raykit-checkpoint", "framework": "torch", "weights": "model.pt", "spec": spec.to_dict(),
                "files": {"model.pt": {"sha256": "0" * 64, "bytes": 7}}, "state": {"num_classes": 10}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"the record of datasets passed from Python .* accepted: the same datasets "
                                        r"passed again \(raykit.train, raykit.tune or raykit.evaluate"):
        raykit.evaluate(str(tmp_path), verbose=False)
    with pytest.raises(DataError, match="this command reads stored data only"):
        plan_data(load_spec(None, {"data.uri": "py:tests.data_factory:digits_splits"}).data)
