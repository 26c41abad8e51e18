"""Fine-tuning for Keras models: initial weights, a new head, freezing and gradual unfreezing.

As in the torch backend, a "layer" is a layer that owns weights (conv, batch norm, dense), found by
walking nested models in order; the head is the last one and is never frozen. A frozen
BatchNormalization layer runs in inference mode (Keras 3 does this for ``trainable = False``).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from raykit import storage
from raykit.backends.tf import INFO, zoo
from raykit.checkpoint import MANIFEST, UnsafeFileError, read_manifest
from raykit.checks import WEIGHTS_FILES
from raykit.spec import FinetuneSpec, RunSpec, load_trained_spec


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)  # layers whose weights were copied
    mismatched: list[str] = field(default_factory=list)  # same position, other shapes (e.g. a new head)
    missing: list[str] = field(default_factory=list)  # layers the source does not have

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} layers from {self.source}"]
        if self.mismatched:
            lines.append(f"  re-initialised (shape differs, e.g. a new head): {', '.join(self.mismatched)}")
        if self.missing:
            lines.append(f"  kept as initialised (not in the source): {', '.join(self.missing[:8])}")
        return "\n".join(lines)

    def record(self, layer: str, loaded: bool) -> None:
        (self.loaded if loaded else self.mismatched).append(layer)

    def checked(self) -> "LoadReport":
        """This report, or the error a load that matched nothing is."""
        if not self.loaded:
            raise ValueError(f"finetune.init_from: no layer of {self.source!r} matches the model")
        return self


def parameterised_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers that own weights, in order, looking inside nested models."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += parameterised_layers(layer)
        elif layer.weights:
            found.append(layer)
    return found


def frozen_layer_names(model: keras.Model, finetune: FinetuneSpec) -> list[str]:
    names = [layer.name for layer in parameterised_layers(model)]
    patterns = [re.compile(p) for p in finetune.freeze_patterns]
    chosen = set(names[: finetune.freeze_first_n]) | {n for n in names if any(p.search(n) for p in patterns)}
    return [name for name in names[:-1] if name in chosen]


def apply_freezing(model: keras.Model, frozen: list[str]) -> None:
    frozen_set = set(frozen)
    for layer in parameterised_layers(model):
        layer.trainable = layer.name not in frozen_set


def head_variables(model: keras.Model) -> list:
    return list(parameterised_layers(model)[-1].trainable_weights)


def load_initial_weights(spec: RunSpec, model: keras.Model) -> LoadReport | None:
    """Copy matching weights from ``model.pretrained`` or ``finetune.init_from`` into ``model``."""
    if spec.model.pretrained == "imagenet":
        return _load_keras_imagenet(spec, model)
    location = spec.finetune.init_from
    if location == "scratch":
        return None
    with _local(location) as path:
        if path.name.endswith(".weights.h5"):
            return _load_weights_file(path, model, location)
        source = _source_model(path, location)
        return copy_matching(source, model, location)


def _load_weights_file(path: Path, model: keras.Model, location: str) -> LoadReport:
    """A bare ``.weights.h5`` (e.g. an exported raykit model) holds no architecture: load it into this
    model's own, skipping layers whose shapes differ (a new head), and report which layers changed."""
    layers = parameterised_layers(model)
    initial = [layer.get_weights() for layer in layers]
    # Fill every weight with NaN first: whatever is still NaN after loading was not in the file.
    for layer, weights in zip(layers, initial):
        layer.set_weights([np.full_like(w, np.nan) for w in weights])
    try:
        model.load_weights(path)
    except ValueError:  # some shapes differ: keep the layers that match
        model.load_weights(path, skip_mismatch=True)
    report = LoadReport(source=location)
    for layer, weights in zip(layers, initial):
        loaded = not any(np.isnan(w).any() for w in layer.get_weights())
        if not loaded:
            layer.set_weights(weights)  # back to its initialisation
        report.record(layer.name, loaded)
    return report.checked()


class _local:
    """A local path for ``location`` (downloading a remote raykit checkpoint directory)."""

    def __init__(self, location: str):
        self.location = location
        self._tmp = None

    def __enter__(self) -> Path:
        if "://" not in self.location:
            return Path(self.location).expanduser()
        self._tmp = tempfile.TemporaryDirectory(prefix="raykit-init-")
        if storage.exists(storage.join(self.location, MANIFEST)):
            return Path(storage.download_dir(self.location, self._tmp.name))
        target = Path(self._tmp.name) / Path(self.location).name
        target.write_bytes(storage.read_bytes(self.location))
        return target

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _source_model(path: Path, location: str) -> keras.Model:
    """The model the weights were saved from: a raykit TF checkpoint (rebuilt from its own spec) or a
    ``.keras`` file (loaded in safe mode: no code runs)."""
    from raykit.backends.tf.models import build_model

    if path.is_dir():
        manifest = read_manifest(path)
        if manifest["framework"] != "tf":
            raise ValueError(f"finetune.init_from: {location!r} is a {manifest['framework']} checkpoint; accepted "
                             "with framework tf: a raykit tf checkpoint, .keras or .weights.h5 file")
        source_spec = load_trained_spec(manifest["spec"])
        shape, classes = manifest["state"]["input_shape"], manifest["state"]["num_classes"]
        source = build_model(source_spec.model, tuple(shape), classes)
        source.load_weights(path / manifest["weights"])
        return source
    if path.suffix == ".keras":
        try:
            return keras.models.load_model(path, safe_mode=True, compile=False)
        except ValueError as exc:
            if "safe_mode" not in str(exc):  # Keras's safe-mode refusals all point at safe_mode=False
                raise
            raise UnsafeFileError(f"finetune.init_from: {location!r} refused: the .keras file holds Python code "
                                  f"that loading it would run ({str(exc).split('. ')[0]}); raykit loads .keras "
                                  "files in Keras's safe mode only. Accepted: a .keras file without Lambda layers "
                                  "or custom code, or the model's .weights.h5") from None
    raise ValueError(f"finetune.init_from: got {location!r}; accepted with framework tf: {WEIGHTS_FILES['tf']}")


def copy_matching(source: keras.Model, target: keras.Model, location: str) -> LoadReport:
    """Copy weights layer by layer, in order, where every weight shape matches."""
    report = LoadReport(source=location)
    source_layers = parameterised_layers(source)
    for index, layer in enumerate(parameterised_layers(target)):
        if index >= len(source_layers):
            report.missing.append(layer.name)
            continue
        weights = source_layers[index].get_weights()
        matches = [w.shape for w in weights] == [tuple(v.shape) for v in layer.weights]
        if matches:
            layer.set_weights(weights)
        report.record(layer.name, matches)
    return report.checked()


def _load_keras_imagenet(spec: RunSpec, model: keras.Model) -> LoadReport:
    if spec.model.name.startswith(zoo.PREFIX):
        return _load_zoo_imagenet(spec, model)
    path = INFO.imagenet_weights_file(spec.model.name)
    if path is None:
        raise FileNotFoundError("model.pretrained: Keras's ImageNet weights are not in this node's cache")
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    backbone.load_weights(path)
    return LoadReport(source=str(path), loaded=[layer.name for layer in parameterised_layers(backbone)],
                      mismatched=[parameterised_layers(model)[-1].name])


def _load_zoo_imagenet(spec: RunSpec, model: keras.Model) -> LoadReport:
    """A keras: model's ImageNet weights, loaded by Keras's own code: the same base is built again with
    ``weights="imagenet"`` (the file keras.applications names for these arguments, from the local cache
    only), and its weights are copied into the model's base; the head stays new."""
    from raykit.backends.tf.models import application_base, cache_only_downloads

    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    with cache_only_downloads(spec.model.name) as cache:
        reference = application_base(spec.model, tuple(model.input_shape[1:]), weights="imagenet")
    backbone.set_weights(reference.get_weights())
    head = [layer.name for layer in parameterised_layers(model)[len(parameterised_layers(backbone)):]]
    return LoadReport(source=", ".join(cache.found) or "keras.applications",
                      loaded=[layer.name for layer in parameterised_layers(backbone)], mismatched=head)
