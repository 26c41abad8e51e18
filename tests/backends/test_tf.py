"""The TensorFlow / Keras 3 backend without Ray: models match torch's, augmentation ops match torch's
ops parameter for parameter, and the loop trains, checkpoints, resumes, freezes and stops early."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import raykit.backends.tf  # noqa: F401  (sets the Keras backend before TensorFlow loads)
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from raykit.augment import resolve_ops  # noqa: E402
from raykit.backends.tf import augment as tfa  # noqa: E402
from raykit.backends.tf import checkpoint as tf_ckpt  # noqa: E402
from raykit.backends.tf import finetune as tf_finetune  # noqa: E402
from raykit.engine import evaluate_checkpoint, fit  # noqa: E402
from raykit.backends.tf.models import MODELS, build_model, trainable_parameter_count  # noqa: E402
from raykit.backends.torch import augment as tha  # noqa: E402
from raykit.backends.torch.models import build_model as build_torch_model  # noqa: E402
from raykit.checkpoint import read_manifest  # noqa: E402
from raykit.session import WorkerSession  # noqa: E402
from raykit.spec import load_spec  # noqa: E402
from raykit.backends.tf import INFO as tf_info  # noqa: E402
from tests.backends.test_torch import Recorder  # noqa: E402  (the same stub report serves both backends)


def tiny_spec(*overrides: str):
    return load_spec(None, ["framework=tf", "scaling.num_workers=1", "train.epochs=2", *overrides])


def weights_of(directory: Path, spec) -> list[np.ndarray]:
    model = build_model(spec.model, (8, 8, 1), 10)
    tf_ckpt.load_weights(str(directory), model)
    return [np.asarray(v) for v in model.weights]


# ---- models


def test_registry_implements_the_tf_model_names():
    assert set(MODELS.names()) == set(tf_info.model_names)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_same_spec_same_architecture_as_torch(name):
    spec = load_spec(None, [f"model.name={name}"]).model
    keras_model = build_model(spec, (8, 8, 1), 10)
    torch_model = build_torch_model(spec, (8, 8, 1), 10)
    assert trainable_parameter_count(keras_model) == sum(p.numel() for p in torch_model.parameters())
    assert keras_model(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)
    keras_shapes = [tuple(v.shape) for v in keras_model.trainable_weights]
    torch_counts = [p.numel() for p in torch_model.parameters()]
    assert [math.prod(s) for s in keras_shapes] == torch_counts  # layer for layer, in the same order


def test_cnn_batchnorm_means_the_same_momentum_as_torch():
    model = build_model(load_spec().model, (8, 8, 1), 10)
    norms = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    assert len(norms) == 3 and all(abs(n.momentum - 0.9) < 1e-9 and n.epsilon == 1e-5 for n in norms)


def test_resnet50_builds_for_32px_and_refuses_8px_clearly():
    model = build_model(load_spec(None, ["model.name=resnet50"]).model, (32, 32, 3), 10)
    assert model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 10)
    with pytest.raises(ValueError, match="at least 32x32"):
        build_model(load_spec(None, ["model.name=resnet50"]).model, (8, 8, 1), 10)


def test_the_keras_zoo_lists_every_classification_model_of_keras_applications():
    import keras

    from raykit.backends.tf.zoo import KERAS_APPLICATIONS

    constructors = {name for name in dir(keras.applications) if name[0].isupper()
                    and callable(getattr(keras.applications, name))}
    assert set(KERAS_APPLICATIONS) == constructors


def test_the_keras_zoo_knows_each_constructor_s_smallest_input():
    """Each constructor in MIN_INPUT_SIZE refuses one pixel less (Keras checks before building anything);
    the driver then names data.resize before Ray starts (raykit.backends.tf.zoo.input_problems)."""
    import keras

    from raykit.backends.tf.zoo import MIN_INPUT_SIZE, input_problems

    for name, smallest in MIN_INPUT_SIZE.items():
        with pytest.raises(ValueError, match=f"at least {smallest}"):
            getattr(keras.applications, name)(include_top=False, weights=None,
                                              input_shape=(smallest - 1, smallest - 1, 3))
    assert input_problems("keras:InceptionV3", (32, 32, 3))[0][0] == "data.resize"
    assert "at least 75x75" in input_problems("keras:InceptionV3", (74, 80, 3))[0][1]
    assert input_problems("keras:InceptionV3", (75, 75, 3)) == input_problems("keras:MobileNetV3Small", (8, 8, 3)) == []


def test_a_keras_zoo_model_takes_its_kwargs_gets_raykits_head_and_loads_only_from_the_cache(tmp_path, monkeypatch):
    from raykit.backends.tf.models import application_base, cache_only_downloads

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = load_spec(None, ["framework=tf", "model.name=keras:MobileNet", "model.kwargs={alpha: 0.25, pooling: avg}",
                            "model.hidden=[16]", "model.dropout=0"]).model
    model = build_model(spec, (32, 32, 3), 5)
    assert model.layers[1].name == "mobilenet_0.25_32" and model.layers[1].output.shape == (None, 256)  # pooled
    assert [tuple(layer.kernel.shape) for layer in model.layers[2:] if layer.weights] == [(256, 16), (16, 5)]
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 5)
    # The file Keras names for these arguments (alpha 0.25, 128 px), where it was looked for, how to fetch it.
    with pytest.raises(FileNotFoundError) as caught, cache_only_downloads(spec.name):
        application_base(spec, (128, 128, 3), weights="imagenet")
    message = str(caught.value)
    assert f"keras:MobileNet needs mobilenet_2_5_128_tf_no_top.h5 in {tmp_path / 'models'}" in message
    assert "never downloads" in message and "keras.applications.MobileNet(weights='imagenet'" in message


# ---- augmentation: the same op with the same parameters gives the same images as in torch


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def as_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("case", ["rotate", "shift", "shear", "zoom"])
def test_geometric_ops_match_torch(case):
    images = np.random.default_rng(0).random((3, 9, 7, 2), dtype=np.float32)
    size = np.array([7.0, 9.0])
    torch_matrix, tf_matrix = {
        "rotate": (tha.rotation_matrix(torch.tensor([30.0, -75.0, 90.0])), tfa.rotation_matrix([30.0, -75.0, 90.0])),
        "shift": (tha.shift_matrix(torch.tensor([2.0, -1.0, 0.0]), torch.tensor([0.0, 3.0, -2.0])),
                  tfa.shift_fraction_matrix([2.0 / size[0], -1.0 / size[0], 0.0], [0.0, 3.0 / size[1], -2.0 / size[1]])),
        "shear": (tha.shear_matrix(torch.tensor([10.0, -20.0, 35.0])), tfa.shear_matrix([10.0, -20.0, 35.0])),
        "zoom": (tha.zoom_matrix(torch.tensor([0.8, 1.0, 1.5])), tfa.zoom_matrix([0.8, 1.0, 1.5])),
    }[case]
    expected = as_nhwc(tha.warp(nchw(images), torch_matrix))
    got = tfa.warp(tf.constant(images), tf_matrix).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_pixel_ops_match_torch():
    images = np.random.default_rng(1).random((4, 6, 6, 3), dtype=np.float32)
    offsets = np.array([[0, 4], [2, 2], [4, 0], [1, 3]])
    np.testing.assert_allclose(tfa.crop(tf.constant(images), 2, tf.constant(offsets, tf.int32)).numpy(),
                               as_nhwc(tha.crop(nchw(images), 2, torch.tensor(offsets))), atol=0)
    mask = np.array([True, False, True, False])
    np.testing.assert_array_equal(tfa.flip(tf.constant(images), tf.constant(mask), axis=2).numpy(),
                                  as_nhwc(tha.flip(nchw(images), torch.tensor(mask), dim=-1)))
    np.testing.assert_array_equal(tfa.flip(tf.constant(images), tf.constant(mask), axis=1).numpy(),
                                  as_nhwc(tha.flip(nchw(images), torch.tensor(mask), dim=-2)))
    factor = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
    np.testing.assert_allclose(tfa.adjust_contrast(tf.constant(images), tf.constant(factor)).numpy(),
                               as_nhwc(tha.adjust_contrast(nchw(images), torch.tensor(factor))), atol=1e-6)
    np.testing.assert_allclose(tfa.adjust_brightness(tf.constant(images), tf.constant(factor)).numpy(),
                               as_nhwc(tha.adjust_brightness(nchw(images), torch.tensor(factor))), atol=1e-6)
    np.testing.assert_allclose(tfa.normalize(tf.constant(images), [0.1, 0.2, 0.3], [0.5, 1.0, 2.0]).numpy(),
                               as_nhwc(tha.normalize(nchw(images), [0.1, 0.2, 0.3], [0.5, 1.0, 2.0])), atol=1e-6)


def test_mixup_and_cutmix_with_the_same_partners_and_box_match_torch():
    images = np.random.default_rng(5).random((4, 6, 8, 2), dtype=np.float32)
    perm = np.array([2, 0, 3, 1])
    box = (1, 4, 2, 7)  # (top, bottom, left, right) in both backends
    tf_mixed, tf_lam = tfa.cutmix(tf.constant(images), tf.constant(perm), tf.constant(box))
    torch_mixed, torch_lam = tha.cutmix(nchw(images), torch.tensor(perm), box)
    np.testing.assert_array_equal(tf_mixed.numpy(), as_nhwc(torch_mixed))
    assert abs(float(tf_lam) - torch_lam) < 1e-6 and torch_lam == 1 - 15 / 48
    np.testing.assert_allclose(tfa.mixup(tf.constant(images), tf.constant(perm), 0.3).numpy(),
                               as_nhwc(tha.mixup(nchw(images), torch.tensor(perm), 0.3)), atol=1e-6)


def run_ops(ops, images, seed=0, step=0, num_classes=10, labels=None):
    augmenter = tfa.build_augmenter(resolve_ops("none", ops), num_classes)
    labels = tf.zeros([len(images)], tf.int32) if labels is None else labels
    return augmenter.train_batch(tf.constant(images), labels, tfa.step_seed(seed, 1, 0, step))


def same_images(n=16, size=8, channels=1):
    return np.repeat(np.random.default_rng(2).random((1, size, size, channels), dtype=np.float32), n, axis=0)


@pytest.mark.parametrize("op", [{"op": "random_crop", "padding": 2}, {"op": "hflip"}, {"op": "vflip"},
                                {"op": "rotate", "degrees": 30}, {"op": "shift"}, {"op": "shear"},
                                {"op": "zoom"}, {"op": "brightness"}, {"op": "contrast"}])
def test_random_parameters_are_drawn_per_sample_and_reproducible(op):
    images = same_images(32)
    out, _ = run_ops([op], images)
    outcomes = 2 if op["op"].endswith("flip") else 3  # a flip has only two outcomes
    assert len({o.tobytes() for o in out.numpy()}) >= outcomes  # samples got different parameters
    np.testing.assert_array_equal(out.numpy(), run_ops([op], images)[0].numpy())  # same seed, same output
    assert not np.array_equal(out.numpy(), run_ops([op], images, step=1)[0].numpy())  # another step differs


def test_flip_probabilities_and_normalize_at_eval():
    images = np.random.default_rng(3).random((4, 5, 6, 1), dtype=np.float32)
    np.testing.assert_array_equal(run_ops([{"op": "hflip", "p": 1.0}], images)[0].numpy(), images[:, :, ::-1])
    np.testing.assert_array_equal(run_ops([{"op": "hflip", "p": 0.0}], images)[0].numpy(), images)
    augmenter = tfa.build_augmenter(resolve_ops("standard", []), 10)
    np.testing.assert_allclose(augmenter.eval_batch(tf.constant(images)).numpy(), (images - 0.5) / 0.5, atol=1e-6)


def test_mixup_and_cutmix_targets_are_consistent():
    images = np.random.default_rng(4).random((8, 8, 8, 1), dtype=np.float32)
    labels = tf.range(8, dtype=tf.int32)
    for op in ({"op": "mixup", "alpha": 0.4, "p": 1.0}, {"op": "cutmix", "alpha": 1.0, "p": 1.0}):
        out, targets = run_ops([op], images, labels=labels)
        targets = targets.numpy()
        np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)
        lam = targets[np.arange(8), np.arange(8)].max()  # weight kept by a sample whose partner is another
        partner = np.argsort(-targets, axis=1)[:, 1]
        if op["op"] == "mixup":
            i = int(np.argmax(targets[np.arange(8), np.arange(8)] < 1))
            np.testing.assert_allclose(out.numpy()[i], lam * images[i] + (1 - lam) * images[partner[i]], atol=1e-5)
        else:  # the pasted area is exactly 1 - lam
            changed = np.mean(np.any(out.numpy() != images, axis=-1), axis=(1, 2))
            moved = changed[changed > 0]
            assert moved.size and np.all(moved <= 1 - lam + 1e-6)
    _, unmixed = run_ops([{"op": "mixup", "p": 0.0}], images, labels=labels)
    np.testing.assert_array_equal(unmixed.numpy(), np.eye(10)[:8])


def test_an_op_that_skipped_validation_is_refused_naming_the_op_and_the_backend():
    augmenter = tfa.build_augmenter(resolve_ops("light", []), 10)
    augmenter.ops.append({"op": "solarize"})  # built by hand, never resolved; once fell into normalize: KeyError
    with pytest.raises(ValueError, match="augment: op 'solarize' has no tf kernel; accepted by the tf backend: "
                                         "random_crop, hflip"):
        augmenter.train_batch(tf.constant(same_images(2)), tf.zeros([2], tf.int32), tfa.step_seed(0, 1, 0, 0))


def test_preview_png():
    png = tfa.preview_png(same_images(3), resolve_ops("light", []), seed=0, rows=3)
    assert png[:4] == b"\x89PNG"


# ---- the loop


def test_fit_learns_reports_every_epoch_and_checkpoints(tmp_path):
    recorder = Recorder(tmp_path)
    out = fit(tiny_spec("train.epochs=4"), WorkerSession(report=recorder, run_dir=str(tmp_path / "run")))
    assert [m["epoch"] for m in recorder.metrics] == [1, 2, 3, 4] and len(out["history"]) == 4
    assert recorder.metrics[-1]["val_acc"] > 0.5 and all(m["weights_in_sync"] for m in recorder.metrics)
    manifest = read_manifest(recorder.checkpoints[-1])
    assert manifest["framework"] == "tf" and set(manifest["files"]) == {"model.weights.h5", "state.npz"}
    metrics = evaluate_checkpoint(tiny_spec(), str(recorder.checkpoints[-1]), "test")
    assert metrics["test_samples"] == 269 and metrics["test_acc"] > 0.5


def test_resume_equals_an_uninterrupted_run(tmp_path):
    straight = Recorder(tmp_path / "a")
    fit(tiny_spec("train.epochs=4"), WorkerSession(report=straight))
    first = Recorder(tmp_path / "b")
    fit(tiny_spec("train.epochs=2"), WorkerSession(report=first))
    resumed = Recorder(tmp_path / "c")
    out = fit(tiny_spec("train.epochs=4"), WorkerSession(report=resumed, resume_dir=str(first.checkpoints[-1])))
    assert [m["epoch"] for m in resumed.metrics] == [3, 4] and [h["epoch"] for h in out["history"]] == [1, 2, 3, 4]
    for ours, theirs in zip(weights_of(resumed.checkpoints[-1], tiny_spec()), weights_of(straight.checkpoints[-1], tiny_spec())):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_freezing_first_n_from_a_checkpoint_keeps_those_layers(tmp_path):
    source = Recorder(tmp_path / "src")
    fit(tiny_spec("train.epochs=1"), WorkerSession(report=source))
    spec = tiny_spec(f"finetune.init_from={source.checkpoints[-1]}", "finetune.freeze_first_n=4")
    tuned = Recorder(tmp_path / "tuned")
    fit(spec, WorkerSession(report=tuned))
    before = build_model(spec.model, (8, 8, 1), 10)
    tf_ckpt.load_weights(str(source.checkpoints[-1]), before)
    after = build_model(spec.model, (8, 8, 1), 10)
    tf_ckpt.load_weights(str(tuned.checkpoints[-1]), after)
    layers_before = tf_finetune.parameterised_layers(before)
    layers_after = tf_finetune.parameterised_layers(after)
    for index, (old, new) in enumerate(zip(layers_before, layers_after)):
        same = all(np.array_equal(a, b) for a, b in zip(old.get_weights(), new.get_weights()))
        assert same == (index < 4), (index, old.name)  # BN moving statistics of frozen layers included


def test_init_from_a_torch_checkpoint_is_refused_clearly(tmp_path):
    from raykit.checkpoint import write_manifest

    (tmp_path / "model.pt").write_bytes(b"weights")
    write_manifest(tmp_path, framework="torch", state={}, metrics={}, spec={}, weights="model.pt")
    spec = tiny_spec(f"finetune.init_from={tmp_path}")
    with pytest.raises(ValueError, match="torch checkpoint"):
        tf_finetune.load_initial_weights(spec, build_model(spec.model, (8, 8, 1), 10))


def test_init_from_a_keras_file_loads_in_safe_mode_with_a_new_head(tmp_path):
    spec = tiny_spec()
    source = build_model(spec.model, (8, 8, 1), 7)
    path = tmp_path / "model.keras"
    source.save(path)
    target = build_model(spec.model, (8, 8, 1), 10)
    report = tf_finetune.load_initial_weights(tiny_spec(f"finetune.init_from={path}"), target)
    assert report.mismatched == ["head"] and len(report.loaded) == len(tf_finetune.parameterised_layers(target)) - 1
    np.testing.assert_array_equal(target.layers[1].get_weights()[0], source.layers[1].get_weights()[0])


def test_early_stopping(tmp_path):
    recorder = Recorder(tmp_path)
    # Nothing can improve: everything but the head is frozen (batch-norm statistics too) and lr is ~0.
    out = fit(tiny_spec("train.epochs=10", "optim.lr=1e-9", "train.early_stopping_patience=2",
                        "finetune.freeze_first_n=100"), WorkerSession(report=recorder))
    assert out["stopped_early"] and len(out["history"]) == 3 and recorder.checkpoints[-1].name == "epoch3"


def test_schedule_backbone_multiplier_and_clipping_run(tmp_path):
    recorder = Recorder(tmp_path)
    spec = tiny_spec("train.epochs=3", "optim.schedule=step", "optim.step_size=1", "optim.gamma=0.5",
                     "finetune.backbone_lr_mult=0.1", "optim.grad_clip_norm=1.0", "train.label_smoothing=0.1",
                     "augment.preset=light", "augment.ops=[{op: mixup, p: 0.5}]")
    fit(spec, WorkerSession(report=recorder))
    assert [m["lr"] for m in recorder.metrics] == pytest.approx([5e-4, 2.5e-4, 1.25e-4], rel=1e-5)
    assert recorder.metrics[-1]["val_acc"] > 0.3


def test_init_from_a_weights_file_with_another_head(tmp_path):
    spec = tiny_spec()
    source = build_model(spec.model, (8, 8, 1), 7)
    path = tmp_path / "exported.weights.h5"
    source.save_weights(path)
    target = build_model(spec.model, (8, 8, 1), 10)
    report = tf_finetune.load_initial_weights(tiny_spec(f"finetune.init_from={path}"), target)
    assert report.mismatched == ["head"] and len(report.loaded) == len(tf_finetune.parameterised_layers(target)) - 1
    np.testing.assert_array_equal(target.layers[1].get_weights()[0], source.layers[1].get_weights()[0])


def test_user_model_factory_returns_a_keras_model():
    model = build_model(load_spec(None, ["framework=tf", "model.name=tests.backends.user_models:tiny_keras"]).model,
                        (8, 8, 1), 10)
    assert model(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)
    with pytest.raises(TypeError, match="keras.Model"):
        build_model(load_spec(None, ["model.name=tests.backends.user_models:tiny_linear"]).model, (8, 8, 1), 10)


# ---- the data path and XLA


def test_uint8_pixels_are_scaled_in_the_step_to_the_hosts_values():
    from raykit.backends.tf.backend import unit_float
    from raykit.data import to_float

    pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(unit_float(tf.constant(pixels)).numpy(), to_float(pixels))


def test_compile_runs_the_steps_with_xla_reports_compile_time_apart_and_learns():
    reported = []
    out = fit(tiny_spec("model.name=mlp", "train.compile=default", "train.batch_size=64"),
              WorkerSession(report=lambda metrics, _: reported.append(metrics)))
    first, second = out["history"]
    assert second["train_loss"] < first["train_loss"] and second["val_acc"] > 0.5
    # Tracing and XLA compilation (seconds) are kept out of the first epoch's time (a fraction of one).
    assert first["compile_s"] > 0 and first["epoch_time_s"] < first["compile_s"]
    assert second["compile_s"] == 0

    from raykit.data import DataInfo
    from tests.test_parity import built_backend

    backend = built_backend(tiny_spec("model.name=mlp", "train.compile=default"), DataInfo((8, 8, 1), 10, {}))
    assert backend.eval_logits._jit_compile is True  # XLA, not only a traced graph
