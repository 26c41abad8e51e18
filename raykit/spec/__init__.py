"""The run spec: one framework-neutral description of a training run.

A spec is plain data (dataclasses of str/int/float/bool/list/dict) with sections ``data``, ``model``,
``augment``, ``finetune``, ``optim``, ``train``, ``checkpoint``, ``scaling`` and ``tune``, plus the top
level ``name``, ``storage`` and ``framework``. It is loaded from YAML, a dict or a ``RunSpec``,
overridden with dotted keys (``optim.lr=0.01``), validated once, and written beside every run.

Example::

    from raykit.spec import load_spec
    spec = load_spec("jobs/configs/digits_cnn_torch.yaml", overrides=["train.epochs=2"])
    spec.train.epochs  # 2

Validation collects every problem and raises one :class:`SpecError` whose lines each name the field
path, the bad value and what is accepted. Unknown keys are errors, with a "did you mean" when close.
Nothing here imports Ray, torch or TensorFlow.

The package, each module importing only those listed before it:

* :mod:`~raykit.spec.fields` — field metadata (help, choices, bounds) and what annotations accept;
* :mod:`~raykit.spec.schema` — the sections as dataclasses, the constants, :class:`SpecError`;
* :mod:`~raykit.spec.paths` — dotted paths (``optim.lr``) checked against the schema;
* :mod:`~raykit.spec.search_space` — the ``tune.search_space`` language;
* :mod:`~raykit.spec.rules` — rules that read several fields, and what the chosen backend accepts;
* :mod:`~raykit.spec.loading` — :func:`load_spec` (and :func:`load_trained_spec`), overrides, coercion;
* :mod:`~raykit.spec.reference` — the field reference (``docs/spec-reference.md``);
* :mod:`~raykit.spec.json_schema` — the spec as JSON Schema for editors (``raykit spec --json-schema``).
"""

from raykit.spec.fields import USER_FACTORY
from raykit.spec.loading import load_spec, load_trained_spec, parse_override, yaml_load
from raykit.spec.paths import spec_path_problem
from raykit.spec.reference import field_reference, reference_markdown, reference_page
from raykit.spec.schema import (AUGMENT_PRESETS, DATA_FORMATS, EPOCH_METRICS, MODES, MONITORED_METRICS,
                                PLACEMENT_STRATEGIES, PRECISIONS, SCHEDULERS, SCHEDULES, SEARCHERS, AugmentSpec,
                                CheckpointSpec, DataSpec, FinetuneSpec, ModelSpec, OptimSpec, RunSpec, ScalingSpec,
                                SpecError, TrainSpec, TuneSpec)

__all__ = [
    "AUGMENT_PRESETS", "DATA_FORMATS", "EPOCH_METRICS", "MODES", "MONITORED_METRICS", "PLACEMENT_STRATEGIES",
    "PRECISIONS", "SCHEDULERS", "SCHEDULES", "SEARCHERS", "USER_FACTORY", "AugmentSpec", "CheckpointSpec",
    "DataSpec", "FinetuneSpec", "ModelSpec", "OptimSpec", "RunSpec", "ScalingSpec", "SpecError", "TrainSpec",
    "TuneSpec", "field_reference", "load_spec", "load_trained_spec", "parse_override", "reference_markdown",
    "reference_page", "spec_path_problem", "yaml_load",
]
