"""Files and locations a user names are opened and checked before Ray starts: every broken one ends the
command with exit 2 and one message naming the file, what is wrong and what was expected; no traceback,
and Ray is never reached (``raykit.ray`` and ``ray`` cannot even be imported during these tests)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from raykit.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
RANDOM = bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))


@pytest.fixture
def no_ray(monkeypatch):
    """Importing Ray (or raykit's Ray layer) fails: a check that let the run reach Ray would exit 1."""
    monkeypatch.setitem(sys.modules, "raykit.ray", None)
    monkeypatch.setitem(sys.modules, "ray", None)


def refused(capsys, *argv: str) -> str:
    """Run the CLI in this process; assert exit 2 and no traceback; return what it printed."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "rerun with --debug" not in err
    return err


def train(capsys, tmp_path, *overrides: str) -> str:
    args = ["train", "--set", f"storage={tmp_path / 'runs'}", "--set", "name=r", "--set", "model.name=mlp"]
    for override in overrides:
        args += ["--set", override]
    return refused(capsys, *args)


# --- config files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, expected", [
    (RANDOM, "is not text: byte 0x"),
    (b"train:\n  epochs: [1, 2\noptim: {}\n", "line 3 column"),
    (b"- train\n- optim\n", "holds a list"),
])
def test_a_config_that_is_not_text_yaml_or_a_mapping_is_named(no_ray, capsys, tmp_path, content, expected):
    config = tmp_path / "job.yaml"
    config.write_bytes(content)
    err = refused(capsys, "train", str(config))
    assert str(config) in err and expected in err


# --- starting weights ----------------------------------------------------------------------------------------


def _truncated_safetensors(path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"weight": np.zeros((64, 64), np.float32)}, str(path))
    path.write_bytes(path.read_bytes()[:-1000])


def _checkpoint(tmp_path: Path, framework: str = "torch") -> Path:
    directory = tmp_path / f"{framework}_checkpoint"
    shutil.copytree(FIXTURES / f"{framework}_epoch1", directory)
    return directory


@pytest.mark.parametrize("case", ["random_pt", "list_pt", "random_safetensors", "truncated_safetensors",
                                  "truncated_manifest", "truncated_weights", "other_framework"])
def test_a_broken_init_from_is_named_before_ray(no_ray, capsys, tmp_path, case):
    if case == "random_pt":
        location, expected = tmp_path / "w.pt", "neither a zip archive nor a pickle"
        location.write_bytes(RANDOM)
    elif case == "list_pt":
        import torch

        location, expected = tmp_path / "w.pt", "does not hold a state dict of tensors"
        torch.save([1, 2, 3], location)
    elif case == "random_safetensors":
        location, expected = tmp_path / "w.safetensors", "header of"
        location.write_bytes(RANDOM)
    elif case == "truncated_safetensors":
        location, expected = tmp_path / "w.safetensors", "truncated"
        _truncated_safetensors(location)
    elif case == "truncated_manifest":
        location, expected = _checkpoint(tmp_path), "manifest.json: not valid JSON"
        manifest = location / "manifest.json"
        manifest.write_text(manifest.read_text()[:120])
    elif case == "truncated_weights":
        location, expected = _checkpoint(tmp_path), "model.pt: "
        weights = location / "model.pt"
        weights.write_bytes(weights.read_bytes()[:-100])
    else:
        location, expected = _checkpoint(tmp_path, "tf"), "a tf checkpoint; expected a torch one"
    err = train(capsys, tmp_path, f"finetune.init_from={location}")
    assert "finetune.init_from" in err and str(location) in err and expected in err
    assert "expected" in err or "accepted" in err


def test_a_truncated_keras_weights_file_is_named_for_tf(no_ray, capsys, tmp_path):
    location = tmp_path / "model.weights.h5"
    location.write_bytes((FIXTURES / "tf_epoch1" / "model.weights.h5").read_bytes()[:5000])
    err = train(capsys, tmp_path, "framework=tf", f"finetune.init_from={location}")
    assert str(location) in err and "do not open as HDF5" in err and "truncated" in err


# --- resuming a run -------------------------------------------------------------------------------------------


def test_a_run_whose_only_checkpoint_is_truncated_cannot_resume_and_says_so(no_ray, capsys, tmp_path):
    checkpoint = tmp_path / "runs" / "r" / "checkpoint_epoch=0001"
    shutil.copytree(FIXTURES / "torch_epoch1", checkpoint)
    (checkpoint / "manifest.json").write_text((checkpoint / "manifest.json").read_text()[:50])
    err = train(capsys, tmp_path)
    assert "cannot be resumed" in err and str(checkpoint / "manifest.json") in err


def test_a_run_whose_spec_file_is_not_text_is_named(no_ray, capsys, tmp_path):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "spec.yaml").write_bytes(RANDOM)
    err = train(capsys, tmp_path)
    assert str(tmp_path / "runs" / "r" / "spec.yaml") in err and "not UTF-8 text" in err


def test_the_checks_know_the_run_directory_s_file_names():
    from raykit.checks import RESUME_PREFIX, RUN_SPEC_FILE
    from raykit.resume import CHECKPOINT_PREFIX
    from raykit.run import SPEC_FILE

    assert (RUN_SPEC_FILE, RESUME_PREFIX) == (SPEC_FILE, CHECKPOINT_PREFIX)


def test_a_damaged_latest_checkpoint_with_an_intact_earlier_one_still_resumes(tmp_path):
    from raykit.checks import resume_problems

    run_dir = tmp_path / "r"
    shutil.copytree(FIXTURES / "torch_epoch1", run_dir / "checkpoint_epoch=0001")
    shutil.copytree(FIXTURES / "torch_epoch1", run_dir / "checkpoint_epoch=0002")
    (run_dir / "checkpoint_epoch=0002" / "model.pt").write_bytes(b"")
    assert resume_problems(str(run_dir)) == []  # the worker falls back to epoch 1, as it always did


# --- data ----------------------------------------------------------------------------------------------------


def _image_folder(root: Path, broken: bool = False) -> Path:
    from raykit.data.images import encode_png

    for label in ("ant", "bee"):
        (root / label).mkdir(parents=True)
        for index in range(3):
            (root / label / f"{index}.png").write_bytes(encode_png(np.full((8, 8, 1), 40 * index, np.uint8)))
    if broken:  # the first file listed: the one image a check decodes
        (root / "ant" / "0.png").write_bytes(RANDOM)
    return root


@pytest.mark.parametrize("case", ["random_parquet", "random_npz", "truncated_npz", "broken_val_image"])
def test_a_broken_data_file_is_named_before_ray(no_ray, capsys, tmp_path, case):
    if case == "broken_val_image":
        named = _image_folder(tmp_path / "val", broken=True) / "ant" / "0.png"
        overrides = [f"data.uri={_image_folder(tmp_path / 'train')}", f"data.val_uri={tmp_path / 'val'}"]
        expected = "not an image file Pillow can identify"
    elif case == "truncated_npz":
        named = tmp_path / "d.npz"
        np.savez(named, x=np.zeros((20, 8, 8), np.uint8), y=np.arange(20) % 2)
        named.write_bytes(named.read_bytes()[:-200])
        overrides, expected = [f"data.uri={named}"], "cannot read"
    else:
        named = tmp_path / ("d.parquet" if case == "random_parquet" else "d.npz")
        named.write_bytes(RANDOM)
        overrides = [f"data.uri={named}"]
        expected = "not a readable Parquet file" if case == "random_parquet" else "is not an .npz archive"
    err = train(capsys, tmp_path, *overrides)
    assert str(named) in err and expected in err and "accepted" in err


# --- evaluate, export, predict ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["evaluate"], ["export"], ["predict", "--data", "digits", "--out", "preds"]])
def test_a_checkpoint_with_a_truncated_manifest_is_named_by_every_command(no_ray, capsys, tmp_path, command):
    checkpoint = _checkpoint(tmp_path)
    (checkpoint / "manifest.json").write_text((checkpoint / "manifest.json").read_text()[:200])
    err = refused(capsys, command[0], str(checkpoint), *command[1:])
    assert f"{checkpoint / 'manifest.json'}: not valid JSON" in err and "truncated" in err


# --- storage -------------------------------------------------------------------------------------------------


def test_a_missing_bucket_is_named_before_ray(no_ray, capsys, tmp_path, monkeypatch):
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        code = main(["train", "--set", "storage=s3://no-such-bucket-raykit/runs", "--set", "model.name=mlp"])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert code == 2 and "storage" in err and "'no-such-bucket-raykit' does not exist" in err


@pytest.mark.parametrize("ops, field, value", [
    ("[{op: normalize, mean: imagenet}]", "augment.ops[0].mean", "[0.485, 0.456, 0.406] (3 values)"),
    ("[{op: hflip}, {op: normalize, mean: [0.5], std: [0.2, 0.3]}]", "augment.ops[1].std", "[0.2, 0.3] (2 values)"),
    ("[{op: color_jitter, hue: 0.1}]", "augment.ops[0].hue", "got 0.1"),
])
def test_an_augmentation_that_does_not_suit_the_images_channels_is_named_before_ray(no_ray, capsys, tmp_path, ops,
                                                                                     field, value):
    """digits are 1-channel: ImageNet's RGB statistics or a hue jitter would fail on every worker."""
    err = train(capsys, tmp_path, f"augment.ops={ops}")
    assert field in err and value in err and "1 channel(s)" in err, err


@pytest.mark.parametrize("framework, name", [("tf", "weights.pt"), ("tf", "model.safetensors"),
                                             ("torch", "model.keras"), ("torch", "model.weights.h5")])
def test_a_weights_file_of_the_other_framework_is_named_before_ray(no_ray, capsys, tmp_path, framework, name):
    """Each backend reads its own framework's files: the other's failed on every worker."""
    path = tmp_path / name
    path.write_bytes(b"not read: the name says whose it is")
    err = train(capsys, tmp_path, f"framework={framework}", f"finetune.init_from={path}")
    other = "torch" if framework == "tf" else "tf"
    assert "finetune.init_from" in err and f"a {other} weights file" in err and f"with framework {framework}:" in err


def test_images_too_small_for_a_keras_application_are_named_before_ray(no_ray, capsys, tmp_path):
    err = train(capsys, tmp_path, "framework=tf", "model.name=keras:Xception")
    assert "data.resize" in err and "8x8" in err and "at least 71x71" in err, err
    # What the error advises works on the digits too (held as arrays, resized as files are).
    from raykit.backends.tf.zoo import input_problems
    from raykit.data import plan_data
    from raykit.spec import load_spec

    spec = load_spec(None, ["framework=tf", "model.name=keras:Xception", "data.resize=[71,71]"])
    assert input_problems(spec.model.name, plan_data(spec.data).info.input_shape) == []
