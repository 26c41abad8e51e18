"""The torch fast path without Ray: uint8 batches converted on the device, channels-last, fused optimizers,
``train.compile`` (real inductor on the CPU) with its fallback, graph breaks and compile time kept apart."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from raykit.backends.torch import fast
from raykit.backends.torch.backend import TorchBackend
from raykit.backends.torch.models import to_model_layout
from raykit.data import DataInfo, to_float
from raykit.engine import fit
from raykit.session import WorkerSession
from raykit.spec import SpecError, load_spec


def built(*overrides: str, shape=(32, 32, 3)) -> TorchBackend:
    spec = load_spec(None, ["scaling.num_workers=1", "model.name=cnn", "model.filters=[8,16]", "model.hidden=[32]",
                            "model.dropout=0", "augment.preset=standard", *overrides])
    backend = TorchBackend(spec, WorkerSession())
    backend.seed(0)
    backend.build(DataInfo(shape, 10, {"train": 64}), 1)
    backend.set_frozen([])
    return backend


def test_uint8_on_the_device_and_channels_last_give_the_old_paths_loss_and_gradients():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    labels = torch.from_numpy(rng.integers(0, 10, 16))
    old, new = built("train.channels_last=off"), built("train.channels_last=auto")
    assert new.memory_format == torch.channels_last and old.memory_format == torch.contiguous_format
    assert new.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    reference = to_model_layout(torch.from_numpy(to_float(pixels)))  # the old path: float on the host, NCHW

    # Every way a batch reaches the model gives the same float32 values, bit for bit, in the model's layout:
    # a streamed batch, and rows of a split held as stored (a GPU's way) or converted once (the CPU's).
    rows = torch.arange(16)
    for backend in (old, new):
        layout = backend.memory_format
        fed = [backend.batch(pixels, labels.numpy())[0],
               fast.gather(fast.hold_split(pixels, torch.device("cpu"), layout, convert=False), rows),
               fast.gather(fast.hold_split(pixels, torch.device("cpu"), layout, convert=True), rows)]
        assert fast.hold_split(pixels, torch.device("cpu"), layout, convert=False).images.dtype == torch.uint8
        for images in fed:
            assert images.is_contiguous(memory_format=layout) and torch.equal(images, reference)

    def loss_and_grads(backend, images):
        backend.model.zero_grad()
        loss = nn.functional.cross_entropy(backend.model(backend.augmenter.eval_batch(images)), labels)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in backend.model.parameters()]

    old_loss, old_grads = loss_and_grads(old, reference)
    new_loss, new_grads = loss_and_grads(new, new.batch(pixels, labels.numpy())[0])
    assert new_loss == pytest.approx(old_loss, rel=1e-5)
    for a, b in zip(old_grads, new_grads):
        # Channels-last kernels sum in another order: equal up to float rounding at the gradients' scale.
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4 * float(a.abs().max()))


def test_auto_layout_is_channels_last_for_conv_nets_only_and_the_optimizer_is_fused():
    assert fast.memory_format("auto", nn.Sequential(nn.Flatten(), nn.Linear(4, 2))) == torch.contiguous_format
    assert fast.memory_format("on", nn.Linear(4, 2)) == torch.channels_last
    assert fast.memory_format("off", nn.Conv2d(1, 2, 3)) == torch.contiguous_format
    backend = built("model.name=mlp", "optim.name=adamw")
    assert backend.memory_format == torch.contiguous_format
    assert backend.optimizer.defaults["fused"] is True
    assert built("optim.name=rmsprop").optimizer.defaults["foreach"] is None  # no fused kernel: torch's default


@pytest.mark.parametrize("layout", ["auto", "off"])
def test_the_inference_model_runs_in_the_layout_training_used_and_gives_the_same_logits(tmp_path, layout):
    backend = built(f"train.channels_last={layout}")
    backend.save_checkpoint(str(tmp_path), state={"epoch": 1}, metrics={}, spec=backend.spec.to_dict(),
                            rng_states=[backend.capture_rng()])
    model = TorchBackend.inference_model(backend.spec, str(tmp_path), (32, 32, 3), 10)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == (layout == "auto")
    images = np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32)
    backend.model.eval()
    with torch.no_grad():
        expected = backend.model(backend.augmenter.eval_batch(to_model_layout(torch.from_numpy(images))))
    np.testing.assert_allclose(TorchBackend.logits(model, images), expected.numpy(), atol=1e-5)


def test_a_streamed_read_only_batch_is_used_without_a_host_copy():
    pixels = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    pixels.setflags(write=False)  # as Ray Data hands them out
    with _no_warnings():
        tensor = fast.to_device(pixels, torch.device("cpu"))
    assert tensor.data_ptr() == pixels.ctypes.data  # shared, not copied
    assert torch.equal(fast.model_input(tensor, torch.contiguous_format)[0, 2],
                       torch.from_numpy(pixels[0, :, :, 2].astype(np.float32) / 255))


class _no_warnings:
    def __enter__(self):
        import warnings

        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)
        assert not self.caught, [str(w.message) for w in self.caught]


def test_deterministic_with_max_autotune_is_refused_naming_both():
    with pytest.raises(SpecError) as error:
        load_spec(None, ["train.deterministic=true", "train.compile=max-autotune"])
    assert "train.compile" in str(error.value) and "deterministic" in str(error.value)


class BranchyNet(nn.Module):
    """A small MLP whose forward has a data-dependent Python branch: one graph break under torch.compile."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(features, 32), nn.ReLU())
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        hidden = self.body(x)
        if hidden.mean() > -1.0:  # always true; dynamo cannot know: it breaks the graph here
            hidden = hidden * 1.0
        return self.head(hidden)


def branchy(spec, input_shape, num_classes):
    return BranchyNet(math.prod(input_shape), num_classes)


def compile_spec(*overrides: str):
    # 1,152 training digits in batches of 64 (18 full batches: no odd-sized last batch to recompile for).
    return load_spec(None, ["scaling.num_workers=1", "train.epochs=2", "train.batch_size=64",
                            "model.name=tests.backends.test_torch_fast:branchy", "data.val_fraction=0.2",
                            "data.test_fraction=0.16", "optim.lr=0.01", "train.compile=default", *overrides])


def test_compile_on_the_cpu_trains_reports_compile_time_apart_and_graph_breaks(capsys):
    torch._dynamo.reset()
    reported = []
    out = fit(compile_spec(), WorkerSession(report=lambda metrics, _: reported.append(metrics)))
    first, second = out["history"]
    assert second["train_loss"] < first["train_loss"] and second["val_acc"] > 0.5  # it learns (chance: 0.1)
    assert first["compile_s"] > 0 and second["compile_s"] < first["compile_s"]
    # Compilation is kept out of the epoch's time: epoch 1 is not slower by the compile seconds.
    assert first["epoch_time_s"] < first["compile_s"]
    assert first["graph_breaks"] >= 1
    assert "graph break" in capsys.readouterr().out


def test_a_model_that_fails_to_compile_trains_eagerly_after_one_warning(monkeypatch):
    def failing_backend(graph, example_inputs):
        raise RuntimeError("no kernel for this op")

    real_compile = torch.compile
    monkeypatch.setattr(fast.torch, "compile", lambda module, mode=None: real_compile(module, backend=failing_backend))
    torch._dynamo.reset()
    with pytest.warns(RuntimeWarning, match="torch.compile failed") as warned:
        out = fit(compile_spec("train.epochs=1", "model.name=mlp", "model.hidden=[32]"), WorkerSession())
    assert len([w for w in warned if "torch.compile" in str(w.message)]) == 1
    assert out["history"][0]["val_acc"] > 0.5
