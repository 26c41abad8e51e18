"""``raykit predict``: Ray Data read tasks and model actors over a dataset, predictions written as Parquet,
equal to the checkpoint model's own predictions on the same images, for both frameworks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset
import pytest

import raykit
from raykit.engine import fit, reference_logits, softmax
from raykit.data.convert import convert
from raykit.data.images import encode_png
from raykit.data.sources import ReadOptions, open_source
from raykit.inference import load_model
from raykit.session import WorkerSession
from tests import data_factory as make
from tests.backends.test_torch import Recorder, tiny_spec
from tests.conftest import run_cli

pytestmark = pytest.mark.ray


def checkpoint_of(framework: str, root) -> str:
    recorder = Recorder(root)
    fit(tiny_spec("train.epochs=2", "model.name=mlp", f"framework={framework}"),
                                               WorkerSession(report=recorder))
    return str(recorder.checkpoints[-1])


def read_predictions(out: str) -> dict:
    table = pyarrow.dataset.dataset(out, format="parquet").to_table().sort_by("row")
    return {name: table.column(name).to_numpy() for name in table.column_names}


def expected_predictions(framework: str, checkpoint: str, data: str) -> np.ndarray:
    source = open_source(data, "auto", ReadOptions(color_mode="grayscale"), labels_required=False)
    images, _ = source.read_rows(np.arange(len(source)))
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
    spec = raykit.load_spec(json.loads(open(f"{checkpoint}/manifest.json").read())["spec"])
    logits = reference_logits(spec, checkpoint, images, (8, 8, 1), 10)
    return logits.argmax(1)


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_predictions_and_probabilities_match_the_checkpoint(ray_address, tmp_path, framework):
    checkpoint = checkpoint_of(framework, tmp_path / "ckpt")
    data = str(tmp_path / "digits-parquet")
    convert("digits", data, rows_per_file=600, rows_per_group=300, progress=False)
    summary = raykit.predict(checkpoint, data, str(tmp_path / "preds"), batch_size=128, verbose=False)
    out = read_predictions(str(tmp_path / "preds"))
    assert summary["rows"] == 1797 and list(out["row"]) == list(range(1797))
    assert (out["prediction"] == expected_predictions(framework, checkpoint, data)).all()
    probabilities = np.stack([out[f"p_{c}"] for c in range(10)], axis=1)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert (probabilities.argmax(1) == out["prediction"]).all()
    assert (out["prediction"] == out["label"]).mean() > 0.5  # labels travel with their rows (chance: 0.1)
    # raykit.Run.load_model's model (an nn.Module / keras.Model) predicts the same from the same data
    model = load_model(checkpoint)
    images = model.preprocess(data)
    if framework == "torch":
        import torch

        assert not model.training
        with torch.no_grad():
            logits = model(torch.from_numpy(images)).numpy()
    else:
        import keras

        assert isinstance(model, keras.Model)
        logits = np.asarray(model(images, training=False))
    assert (logits.argmax(1) == out["prediction"]).all()
    np.testing.assert_allclose(softmax(logits.astype(np.float64)), probabilities, atol=1e-5)


def test_predict_command_on_an_unlabelled_image_folder(ray_address, tmp_path):
    checkpoint = checkpoint_of("torch", tmp_path / "ckpt")
    folder = tmp_path / "new-images"  # no class folders: images to label
    folder.mkdir()
    for i, image in enumerate(make.images(20, classes=2, channels=1)[0]):
        (folder / f"{i:03d}.png").write_bytes(encode_png(image))
    out = run_cli(["-m", "raykit.cli", "predict", checkpoint, "--data", str(folder), "--out", str(tmp_path / "preds"),
                   "--address", ray_address])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "predicted 20 images" in out.stdout
    predictions = read_predictions(str(tmp_path / "preds"))
    assert (predictions["label"] == -1).all() and len(predictions["prediction"]) == 20
    assert (predictions["prediction"] == expected_predictions("torch", checkpoint, str(folder))).all()
