"""Exports reload and predict what their checkpoint predicts: TorchScript and ONNX (onnxruntime) for torch,
.keras (safe mode) and SavedModel for Keras. No Ray: the checkpoints come from the backends' own loops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import raykit
from raykit.backends import load_backend_module
from raykit.engine import fit, reference_logits
from raykit.cli import main as cli_main
from raykit.data import load_splits
from raykit.session import WorkerSession
from raykit.spec import SpecError
from tests.backends.test_torch import Recorder, tiny_spec

def load_for_test(framework: str, location: str):
    """Logits of an export as a deployment would load it (TorchScript through torch.jit.load: the test
    trusts the file it just wrote; raykit itself never loads TorchScript)."""
    if location.endswith(".torchscript.pt"):
        import torch

        module = torch.jit.load(location)
        return lambda images: module(torch.from_numpy(np.asarray(images, np.float32))).detach().numpy()
    return load_backend_module(framework, "export").load_exported(location)


# normalize is evaluation-time preprocessing: the exports must carry it to predict like the checkpoint.
NORMALIZED = ["train.epochs=1", "augment.ops=[{op: normalize, mean: [0.3], std: [0.4]}]"]


@pytest.fixture(scope="module", params=["torch", "tf"])
def trained(request, tmp_path_factory):
    """(framework, checkpoint directory, test images and labels) of a 1-epoch digits run."""
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    spec = tiny_spec(*NORMALIZED, f"framework={request.param}")
    recorder = Recorder(root)
    fit(spec, WorkerSession(report=recorder))
    test = load_splits(spec.data).test
    return request.param, recorder.checkpoints[-1], test.x[:64], test.y[:64]


def test_every_export_reproduces_the_checkpoints_logits(trained, tmp_path):
    framework, checkpoint, images, _ = trained
    written = raykit.export(str(checkpoint), out_dir=str(tmp_path), verbose=False)
    assert sorted(written) == sorted({"torch": ["torchscript", "onnx"], "tf": ["keras", "saved_model"]}[framework])
    spec = raykit.load_spec(json.loads((checkpoint / "manifest.json").read_text())["spec"])
    expected = reference_logits(spec, str(checkpoint), images, (8, 8, 1), 10)
    for fmt, location in written.items():
        logits = load_for_test(framework, location)(images)
        np.testing.assert_allclose(logits, expected, atol=1e-4, err_msg=fmt)
        assert (logits.argmax(1) == expected.argmax(1)).all()


def test_exports_include_the_normalize_preprocessing(trained, tmp_path):
    framework, checkpoint, images, _ = trained
    location = raykit.export(str(checkpoint), out_dir=str(tmp_path), verbose=False)[
        "torchscript" if framework == "torch" else "keras"]
    plain = raykit.load_spec(json.loads((checkpoint / "manifest.json").read_text())["spec"], ["augment.ops=[]"])
    without_normalize = reference_logits(plain, str(checkpoint), images, (8, 8, 1), 10)
    assert np.abs(load_for_test(framework, location)(images) - without_normalize).max() > 1e-2


def test_export_record_and_names(trained, tmp_path):
    framework, checkpoint, _, _ = trained
    raykit.export(str(checkpoint), out_dir=str(tmp_path), verbose=False)
    records = list(Path(tmp_path).glob("*.export.json"))
    assert len(records) == 1 and records[0].name.startswith("01-")  # checkpoint.export_template: {epoch:02d}-...
    record = json.loads(records[0].read_text())
    assert record["framework"] == framework and max(record["max_abs_logit_difference"].values()) < 1e-4


def test_a_format_of_the_other_framework_is_refused(trained, tmp_path):
    framework, checkpoint, _, _ = trained
    wrong = "keras" if framework == "torch" else "onnx"
    with pytest.raises(SpecError, match=f"--format: got '{wrong}' for a {framework} checkpoint"):
        raykit.export(str(checkpoint), [wrong], out_dir=str(tmp_path), verbose=False)


def test_export_command(trained, tmp_path, capsys):
    framework, checkpoint, _, _ = trained
    fmt = "torchscript" if framework == "torch" else "keras"
    assert cli_main(["export", str(checkpoint), "--format", fmt, "--out", str(tmp_path)]) == 0
    assert fmt in capsys.readouterr().out and len(list(tmp_path.glob("01-*"))) == 2  # the model and its record
    assert cli_main(["export", str(tmp_path / "nowhere")]) == 2


def test_an_export_that_does_not_compute_the_checkpoints_logits_is_refused_and_nothing_is_written(
        trained, tmp_path, monkeypatch):
    framework, checkpoint, _, _ = trained
    if framework != "torch":
        pytest.skip("the check is framework-neutral (raykit.inference): one framework shows it")
    backend = raykit.inference.load_backend(framework)
    real_export = backend.export

    def off_by_one(*args, **kwargs):
        return {fmt: (path, lambda images, run=run: run(images) + 1.0)
                for fmt, (path, run) in real_export(*args, **kwargs).items()}

    monkeypatch.setattr(backend, "export", off_by_one)
    with pytest.raises(RuntimeError, match=r"export: the exported program's logits differ from the checkpoint's "
                                           r"\(torchscript by 1, onnx by 1; accepted: at most"):
        raykit.export(str(checkpoint), out_dir=str(tmp_path / "out"), verbose=False)
    assert not (tmp_path / "out").exists()
