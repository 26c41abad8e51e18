"""The seed's two fine-tuning recipes, as shipped configs, on the CIFAR-10 slice (32x32), in-process without
Ray, one step each: the weights they start from (files the tests write in the real layouts, loaded
through the real code), what they freeze, and their new heads, checked tensor by tensor.

* jobs/configs/finetune_resnet50_keras.yaml: keras.applications' ResNet50 without its top from
  ``$KERAS_HOME/models``, ``base_model.layers[:10]`` frozen, Flatten -> Dense 512 -> 10-class head.
* jobs/configs/finetune_resnet18_torch.yaml: a ResNet-18 state dict saved from ``nn.DataParallel``
  (``module.`` keys), every tensor but the head loaded, a new 10-class head.

The "ImageNet" weights are random (nothing downloads in tests): what is checked is where they go. On 2 cores
the Keras test takes about 30 s (most of it tracing ResNet50's training step), the torch one about 3 s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from raykit.engine import fit
from raykit.session import WorkerSession
from raykit.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "tests" / "data" / "cifar10_slice"
CONFIGS = REPO / "jobs" / "configs"
QUICK = ["train.epochs=1", "train.max_steps_per_epoch=1", "data.val_fraction=0.05", "train.tensorboard=false"]


@pytest.fixture
def cifar10_home(tmp_path, monkeypatch) -> Path:
    shutil.copytree(SLICE, tmp_path / "data" / "cifar10")
    monkeypatch.setenv("RAYKIT_DATA_HOME", str(tmp_path / "data"))
    return tmp_path


def run_keeping_the_backend(spec, backend_class, monkeypatch) -> tuple[object, dict]:
    """Fit ``spec`` in-process; return the backend (its model after training) and a snapshot taken right
    after the initial weights were loaded: {"report": str, "weights": {name: array}}."""
    kept, original = {}, backend_class.load_initial_weights

    def load_and_keep(self):
        kept["backend"], kept["report"] = self, original(self)
        kept["weights"] = weights_of(self)
        return kept["report"]

    monkeypatch.setattr(backend_class, "load_initial_weights", load_and_keep)
    reported = []
    fit(spec, WorkerSession(report=lambda metrics, checkpoint_dir: reported.append(metrics)))
    assert len(reported) == 1 and np.isfinite(reported[0]["train_loss"])
    return kept["backend"], kept


def weights_of(backend) -> dict[str, np.ndarray]:
    model = backend.model
    if backend.info.name == "torch":
        return {key: value.detach().cpu().numpy().copy() for key, value in model.state_dict().items()}
    return {variable.path: np.array(variable.numpy()) for variable in model.weights}


def test_the_keras_recipe_loads_imagenet_resnet50_and_freezes_what_the_seed_freezes(cifar10_home, monkeypatch):
    import keras

    from raykit.backends.tf.backend import TFBackend
    from raykit.backends.tf.zoo import KERAS_APPLICATIONS

    # The seed, in plain Keras, with its weights written where keras.applications caches ResNet50's no-top
    # file, under that file's name (random weights, in the legacy HDF5 layout of the real file).
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    keras.utils.set_random_seed(7)
    base_model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    for layer in base_model.layers[:10]:
        layer.trainable = False
    monkeypatch.setenv("KERAS_HOME", str(cifar10_home / "keras"))
    weights_file = cifar10_home / "keras" / "models" / KERAS_APPLICATIONS["ResNet50"]
    weights_file.parent.mkdir(parents=True)
    with h5py.File(weights_file, "w") as handle:
        save_weights_to_hdf5_group(handle, base_model)
    seed_frozen = [w.path for layer in base_model.layers[:10] for w in layer.weights]
    assert [layer.__class__.__name__ for layer in base_model.layers[:10]].count("ZeroPadding2D") == 2
    from_file = {w.path: np.array(w.numpy()) for w in base_model.weights}

    spec = load_spec(str(CONFIGS / "finetune_resnet50_keras.yaml"), QUICK)
    backend, loaded = run_keeping_the_backend(spec, TFBackend, monkeypatch)
    model = backend.model
    base = model.layers[1]
    assert isinstance(base, keras.Model) and str(weights_file) in loaded["report"]

    # Every base tensor came from the file.
    assert [w.path for w in base.weights] == list(from_file)
    for path, value in from_file.items():
        np.testing.assert_array_equal(loaded["weights"][path], value, err_msg=path)
    # Frozen exactly as the seed: the same trainable and non-trainable tensors, by name.
    assert [w.path for w in base.trainable_weights] == [w.path for w in base_model.trainable_weights]
    assert [w.path for w in base.non_trainable_weights] == [w.path for w in base_model.non_trainable_weights]
    frozen_now = [w.path for layer in base.layers if not layer.trainable for w in layer.weights]
    assert frozen_now == seed_frozen and len(seed_frozen) == 12  # conv1 conv + bn, conv2_block1_1 conv + bn
    # ...and the training step left the frozen tensors as loaded while it moved the others.
    after = weights_of(backend)
    for path in seed_frozen:
        np.testing.assert_array_equal(after[path], from_file[path], err_msg=path)
    assert not np.array_equal(after["conv5_block3_3_conv/kernel"], from_file["conv5_block3_3_conv/kernel"])

    # The head: Flatten (1x1x2048 at 32x32) -> Dense 512 + ReLU -> (dropout 0) -> Dense 10, logits.
    head = [layer for layer in model.layers[2:] if layer.weights]
    assert [tuple(layer.kernel.shape) for layer in head] == [(2048, 512), (512, 10)]
    assert isinstance(model.layers[2], keras.layers.Flatten) and head[0].activation.__name__ == "relu"
    assert head[1].name == "head" and head[1].activation.__name__ == "linear"  # softmax lives in the loss
    assert all(layer.trainable for layer in head)


def test_the_torch_recipe_loads_a_dataparallel_resnet18_and_puts_a_new_10_class_head_on_it(cifar10_home,
                                                                                            monkeypatch):
    import torch
    import torchvision
    from torch import nn

    from raykit.backends.torch.backend import TorchBackend

    torch.manual_seed(3)
    saved = nn.DataParallel(torchvision.models.resnet18()).state_dict()
    assert all(key.startswith("module.") for key in saved)
    weights_file = cifar10_home / "resnet18_dataparallel.pt"
    torch.save(saved, weights_file)
    from_file = {key.removeprefix("module."): value.numpy() for key, value in saved.items()}

    spec = load_spec(str(CONFIGS / "finetune_resnet18_torch.yaml"), [f"finetune.init_from={weights_file}", *QUICK])
    backend, loaded = run_keeping_the_backend(spec, TorchBackend, monkeypatch)

    body = [key for key in from_file if not key.startswith("fc.")]
    assert len(body) == len(from_file) - 2 and set(loaded["weights"]) == set(from_file)
    for key in body:  # every tensor but the head: the file's, batch-norm statistics included
        np.testing.assert_array_equal(loaded["weights"][key], from_file[key], err_msg=key)
    assert loaded["weights"]["fc.weight"].shape == (10, 512) and loaded["weights"]["fc.bias"].shape == (10,)
    assert from_file["fc.weight"].shape == (1000, 512)
    assert f"loaded {len(body)} tensors" in loaded["report"] and "re-initialised" in loaded["report"] \
        and "fc.weight, fc.bias" in loaded["report"]
    assert backend.model.fc.out_features == 10
    assert all(p.requires_grad for p in backend.model.parameters())  # the recipe freezes nothing
