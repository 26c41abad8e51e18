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
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from raykit.augment import OPS as AUGMENT_OPS
from raykit.augment import PRESETS

AUGMENT_PRESETS = tuple(PRESETS)


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-3`` as a number (YAML 1.2 does; PyYAML's 1.1 does not)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text safely (no Python objects), reading ``1e-3`` as a float."""
    return yaml.load(text, Loader=_YamlLoader)

# What the backends implement. Each backend's model registry is tested against this tuple, so the
# spec can validate model names without importing torch or TensorFlow.
MODEL_NAMES = ("mlp", "cnn", "resnet18", "resnet34", "resnet50")
RESNETS = ("resnet18", "resnet34", "resnet50")
FRAMEWORKS = ("torch", "tf")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16", "fp16")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
MODES = ("max", "min")
SCHEDULERS = ("fifo", "asha", "hyperband", "pbt")
SEARCHERS = ("random", "optuna")
DATA_FORMATS = ("auto", "digits", "npz", "parquet", "image_folder")
MONITORED_METRICS = ("val_acc", "val_loss", "train_loss", "train_acc")
# What every epoch reports (usable in checkpoint.export_template).
EPOCH_METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "global_step")
USER_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _field(default: Any = dataclasses.MISSING, *, help: str, **rules: Any) -> Any:
    """A dataclass field with its help text and validation rules kept in the metadata."""
    meta = {"help": help, **rules}
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataSpec:
    uri: str = _field("digits", help="Dataset source: 'digits' (embedded scikit-learn digits), a .npz file (arrays "
                                     "x, y), a Parquet file or directory, or an image folder (root/<class>/<images>); "
                                     "a local path or URI (file://, s3://, gs://, memory://, any fsspec scheme).")
    train_uri: str | None = _field(None, help="Training data from its own source (instead of data.uri); val/test "
                                              "come from val_uri/test_uri, or are carved out of it by the fractions.")
    val_uri: str | None = _field(None, help="Validation data from its own source (null = carved out by "
                                            "val_fraction).")
    test_uri: str | None = _field(None, help="Test data from its own source (null = carved out by test_fraction).")
    format: str = _field("auto", help="Source format; auto = from the extension (.npz, .parquet) or the listing "
                                      "(Parquet files, or class folders).", choices=DATA_FORMATS)
    label_column: str = _field("label", help="Parquet: the label column (integer class indices or class names).",
                               nonempty=True)
    image_column: str = _field("image", help="Parquet: the image column: encoded bytes (PNG/JPEG, or a "
                                             "{bytes, path} struct) or fixed-shape numeric arrays.", nonempty=True)
    color_mode: str = _field("auto", help="Decoded channels: grayscale (1), rgb (3), or auto = the first image's.",
                             choices=("auto", "grayscale", "rgb"))
    resize: list[int] = _field([], help="[height, width] every decoded image is resized to (bilinear); [] keeps "
                                        "the stored size (then all images must share it).", ge=1)
    loader: str = _field("auto", help="memory: every worker holds its data decoded; stream: Ray Data reads and "
                                      "decodes on CPU workers and streams disjoint shards to the training workers; "
                                      "auto: stream when the decoded training split exceeds memory_limit_mb.",
                         choices=("auto", "memory", "stream"))
    memory_limit_mb: int = _field(2048, help="loader auto: the decoded training-split size above which data is "
                                             "streamed.", ge=1)
    read_cpus: float = _field(1.0, help="stream: CPUs each Ray Data read/decode task reserves (the cluster needs "
                                        "this much beside the training workers).", gt=0.0, le=64.0)
    shuffle_buffer: int = _field(2048, help="stream: rows in each worker's local shuffle buffer (0 = no shuffle "
                                            "beyond the chunk order).", ge=0)
    val_fraction: float = _field(0.15, help="Fraction of the data held out for validation (stratified).",
                                 ge=0.0, lt=1.0)
    test_fraction: float = _field(0.15, help="Fraction of the data held out for testing (stratified).",
                                  ge=0.0, lt=1.0)
    split_seed: int = _field(0, help="Seed of the train/val/test split.", ge=0)


@dataclass
class ModelSpec:
    name: str = _field("cnn", help="Registered model name, or a user factory 'package.module:function'.",
                       choices=MODEL_NAMES, allow_factory=True)
    num_classes: int | None = _field(None, help="Output classes; null takes them from the data.", ge=2)
    filters: list[int] = _field([32, 64, 128], help="cnn: filters of each conv 3x3 -> BN -> max-pool block.",
                                ge=1, nonempty=True)
    hidden: list[int] = _field([128], help="Dense hidden layer sizes before the head (cnn and mlp).", ge=1)
    dropout: float = _field(0.5, help="Dropout before the classification head.", ge=0.0, lt=1.0)
    batchnorm_momentum: float = _field(
        0.1, help="Batch-norm momentum in PyTorch's sense (weight of the new batch).", gt=0.0, lt=1.0)
    stem: str = _field("auto", help="resnet stem: 'imagenet' (7x7 stride 2 + max-pool), 'small' (3x3 stride 1, "
                                    "no pool, for 8x8-32x32 images), 'auto' (small below 64 px).",
                       choices=("auto", "imagenet", "small"))
    pretrained: str = _field("none", help="resnet weights: 'none', or 'imagenet' from torchvision's local cache "
                                          "($TORCH_HOME/hub/checkpoints; nothing is downloaded).",
                             choices=("none", "imagenet"))


@dataclass
class AugmentSpec:
    preset: str = _field("none", help="Named recipe, applied before ops: none; light (shift 0.1 + rotate 10); "
                                      "standard (random_crop pad 4, hflip, normalize 0.5/0.5).",
                         choices=AUGMENT_PRESETS)
    ops: list[dict] = _field([], help="Ops after the preset, each {op: NAME, ...params}; NAME one of "
                                      f"{', '.join(AUGMENT_OPS)} (see README, Augmentation).")


@dataclass
class FinetuneSpec:
    init_from: str = _field("scratch", help="'scratch', a raykit checkpoint directory, or a state-dict file "
                                            "(.pt/.pth, torchvision format); local path or URI.")
    key_prefix_map: dict = _field({}, help="Rename weight-key prefixes before loading, {old.: new.}; 'module.' "
                                           "and '_orig_mod.' are always stripped.")
    freeze_first_n: int = _field(0, help="Freeze the first N layers that own parameters (conv, batch norm, "
                                         "linear; registration order); the head is never frozen.", ge=0)
    freeze_patterns: list[str] = _field([], help="Also freeze layers whose name matches any of these regexes.")
    unfreeze_every: int = _field(0, help="Gradual unfreezing: every K epochs unfreeze one more frozen layer, "
                                         "from the top; 0 = never.", ge=0)
    backbone_lr_mult: float = _field(1.0, help="Learning-rate multiplier for everything but the head "
                                               "(discriminative learning rates).", gt=0.0, le=100.0)


@dataclass
class OptimSpec:
    name: str = _field("adam", help="Optimizer.", choices=OPTIMIZERS)
    lr: float = _field(1e-3, help="Learning rate.", gt=0.0, le=10.0)
    weight_decay: float = _field(0.0, help="Weight decay.", ge=0.0, le=1.0)
    momentum: float = _field(0.9, help="Momentum (sgd).", ge=0.0, lt=1.0)
    nesterov: bool = _field(False, help="Nesterov momentum (sgd).")
    schedule: str = _field("constant", help="Learning-rate schedule, stepped every optimizer step.",
                           choices=SCHEDULES)
    warmup_epochs: float = _field(0.0, help="Linear warm-up from 0 over this many epochs (any schedule).",
                                  ge=0.0, le=10_000)
    step_size: int = _field(10, help="step: multiply the rate by gamma every step_size epochs.", ge=1)
    gamma: float = _field(0.1, help="step: the factor.", gt=0.0, le=1.0)
    min_lr_fraction: float = _field(0.0, help="cosine / onecycle: final rate as a fraction of lr.", ge=0.0,
                                    lt=1.0)
    grad_clip_norm: float = _field(0.0, help="Clip the global gradient norm to this; 0 = off.", ge=0.0)


@dataclass
class TrainSpec:
    epochs: int = _field(20, help="Number of epochs.", ge=1, le=100_000)
    batch_size: int = _field(64, help="Global batch size, split evenly across the workers.", ge=1,
                             le=1_000_000)
    seed: int = _field(0, help="Seed for weights, shuffling and augmentation.", ge=0)
    precision: str = _field("fp32", help="Numeric precision: fp32, bf16 autocast, fp16 autocast with a grad "
                                         "scaler (GPU only).", choices=PRECISIONS)
    grad_accum_steps: int = _field(1, help="Accumulate gradients over this many batches per optimizer step.",
                                   ge=1, le=10_000)
    label_smoothing: float = _field(0.0, help="Label smoothing of the cross-entropy loss.", ge=0.0, lt=1.0)
    early_stopping_patience: int = _field(0, help="Stop after this many epochs without a better "
                                                  "checkpoint.monitor; 0 = off.", ge=0)
    stop_at: float | None = _field(None, help="Stop once checkpoint.monitor reaches this value (>= for mode max, "
                                              "<= for min), e.g. 0.98; null = train all epochs.")
    max_steps_per_epoch: int | None = _field(None, help="Cap on optimizer steps per epoch (smoke tests); null = "
                                                        "the whole training split.", ge=1)
    tensorboard: bool = _field(True, help="Write TensorBoard event files to <run>/tensorboard/.")
    mlflow_tracking_uri: str | None = _field(None, help="Also log params and per-epoch metrics to MLflow at this "
                                                        "tracking URI (http://host:5000, sqlite:///mlflow.db, "
                                                        "databricks; pip install mlflow); null = no MLflow.")
    mlflow_experiment: str | None = _field(None, help="MLflow experiment (created when missing); null = the run "
                                                      "name.")


@dataclass
class CheckpointSpec:
    every_n_epochs: int = _field(1, help="Save a checkpoint every N epochs (and after the last one).", ge=1)
    keep_best: int = _field(2, help="How many checkpoints to keep, ranked by the monitored metric.", ge=1)
    monitor: str = _field("val_acc", help="Metric that ranks checkpoints.", choices=MONITORED_METRICS)
    mode: str = _field("max", help="Whether a higher or a lower monitored value is better.", choices=MODES)
    export_template: str = _field("{epoch:02d}-{val_acc:.2f}", help="File name of the exported best model "
                                  "(under <run>/export/), formatted with its metrics.")


@dataclass
class ScalingSpec:
    num_workers: int = _field(2, help="Number of Ray Train workers.", ge=1, le=4096)
    use_gpu: bool = _field(False, help="One GPU per worker (NCCL for torch).")
    resources_per_worker: dict = _field({}, help="Ray resources per worker, e.g. {CPU: 2, GPU: 1}; "
                                                 "empty takes Ray's default (1 CPU, or 1 GPU with use_gpu).")
    placement_strategy: str = _field("PACK", help="Placement of the workers across nodes.",
                                     choices=PLACEMENT_STRATEGIES)
    max_failures: int = _field(0, help="Worker-group failures to recover from the last checkpoint; -1 = "
                                       "unlimited.", ge=-1)


@dataclass
class TuneSpec:
    search_space: dict = _field({}, help="Spec paths to Tune distributions: {optim.lr: {loguniform: [1e-4, 1e-1]}, "
                                         "model.name: {choice: [cnn, mlp]}, train.batch_size: {grid: [32, 64]}}; "
                                         "also uniform, quniform [lo, hi, q], randint [lo, hi), or a fixed value.")
    num_samples: int = _field(1, help="Samples from the search space (each grid point is run this many times).",
                              ge=1, le=100_000)
    scheduler: str = _field("fifo", help="Trial scheduler: fifo, asha, hyperband, pbt (population based "
                                         "training, mutating the search-space entries).", choices=SCHEDULERS)
    searcher: str = _field("random", help="Search algorithm: random (and grid) or optuna (pip install optuna).",
                           choices=SEARCHERS)
    metric: str = _field("val_acc", help="Metric that ranks trials.", choices=MONITORED_METRICS)
    mode: str = _field("max", help="Whether a higher or a lower metric is better.", choices=MODES)
    max_concurrent_trials: int | None = _field(None, help="Trials at once; null sizes it from the cluster's "
                                                          "resources and scaling, so trials never starve their "
                                                          "own workers.", ge=1)
    grace_period: int = _field(1, help="asha / hyperband: epochs every trial gets before it can be stopped.",
                               ge=1)
    reduction_factor: int = _field(2, help="asha / hyperband: keep 1 in this many trials at each rung.", ge=2)
    perturbation_interval: int = _field(2, help="pbt: epochs between exploit / explore steps.", ge=1)
    max_failures: int = _field(1, help="Retries of a failed trial before it is marked errored.", ge=0)
    inline_single_worker: bool = _field(True, help="Run 1-worker trials in the trial process itself, skipping a "
                                                   "Train worker-group start per trial (same worker code).")


@dataclass
class RunSpec:
    """A whole run. Build one with :func:`load_spec`, which validates it."""

    name: str | None = _field(None, help="Run name; files go to <storage>/<name>/. The same name resumes. "
                                         "null generates one from the model and the time.")
    storage: str = _field("runs", help="Local directory or URI (s3://, gs://, file://) holding the runs.")
    framework: str = _field("torch", help="Worker framework: torch (TorchTrainer) or tf (TensorFlow + Keras 3 "
                                          "under TensorflowTrainer).", choices=FRAMEWORKS)
    data: DataSpec = field(default_factory=DataSpec, metadata={"help": "Dataset and splits."})
    model: ModelSpec = field(default_factory=ModelSpec, metadata={"help": "Model architecture."})
    augment: AugmentSpec = field(default_factory=AugmentSpec, metadata={"help": "Data augmentation."})
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec, metadata={"help": "Initialisation."})
    optim: OptimSpec = field(default_factory=OptimSpec, metadata={"help": "Optimizer."})
    train: TrainSpec = field(default_factory=TrainSpec, metadata={"help": "Training loop."})
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec, metadata={"help": "Checkpoints."})
    scaling: ScalingSpec = field(default_factory=ScalingSpec, metadata={"help": "Ray workers."})
    tune: TuneSpec = field(default_factory=TuneSpec, metadata={"help": "Ray Tune sweep."})

    def to_dict(self) -> dict:
        """Plain nested dict of the spec (what YAML holds)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The spec as YAML text that :func:`load_spec` reads back to an equal spec."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @property
    def per_worker_batch_size(self) -> int:
        """Batch size each worker uses (``train.batch_size`` split across ``scaling.num_workers``)."""
        return self.train.batch_size // self.scaling.num_workers


class SpecError(ValueError):
    """Invalid spec. ``problems`` holds ``(field_path, message)`` pairs, each naming what is accepted."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"  {path}: {message}" for path, message in problems]
        super().__init__("invalid run spec:\n" + "\n".join(lines))

    def __reduce__(self):  # copy and pickle (Ray ships errors between processes) rebuild from problems
        return (type(self), (self.problems,))

    @property
    def fields(self) -> list[str]:
        return [path for path, _ in self.problems]


# --------------------------------------------------------------------------------------------------
# Loading and overrides


def load_spec(source: "RunSpec | Mapping | str | os.PathLike | None" = None,
              overrides: Iterable[str] | Mapping[str, Any] = ()) -> RunSpec:
    """Build a validated :class:`RunSpec`.

    Args:
        source: a ``RunSpec``, a nested dict, a path to a YAML file, or None for the defaults.
        overrides: ``"dotted.key=value"`` strings (values parsed as YAML) or a ``{dotted.key: value}``
            mapping, applied on top of the source.

    Raises:
        SpecError: naming every invalid field, its value and what is accepted.
    """
    raw = _raw_dict(source)
    problems: list[tuple[str, str]] = []
    for path, value in _parse_overrides(overrides):
        try:
            _set_dotted(raw, path, value)
        except SpecError as exc:
            problems.extend(exc.problems)
    try:
        spec = _build(RunSpec, raw, "")
    except SpecError as exc:
        problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return spec


def _raw_dict(source: Any) -> dict:
    if source is None:
        return {}
    if isinstance(source, RunSpec):
        return source.to_dict()
    if isinstance(source, Mapping):
        return _deep_copy(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise SpecError([("<config>", f"file {str(source)!r} does not exist; give a YAML run spec path")])
        try:
            data = yaml_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SpecError([("<config>", f"{str(source)!r} is not valid YAML: {exc}")]) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise SpecError([("<config>", f"{str(source)!r} holds a {type(data).__name__}; "
                                          "accepted: a YAML mapping of spec sections")])
        return data
    raise SpecError([("<config>", f"got {type(source).__name__}; accepted: RunSpec, dict or YAML path")])


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deep_copy(v) for v in value]
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"optim.lr=0.01"`` into ``("optim.lr", 0.01)``; the value is parsed as YAML (JSON works)."""
    if not isinstance(text, str) or "=" not in text:
        raise SpecError([("--set", f"got {text!r}; accepted: KEY=VALUE with a dotted key, e.g. optim.lr=0.01")])
    path, _, value_text = text.partition("=")
    path = path.strip()
    if not path:
        raise SpecError([("--set", f"got {text!r}; the key before '=' is empty")])
    try:
        value = yaml_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text  # not YAML: keep the text and let the field's type decide
    return path, value


def _parse_overrides(overrides: Iterable[str] | Mapping[str, Any]) -> list[tuple[str, Any]]:
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    if isinstance(overrides, str):
        overrides = [overrides]
    return [parse_override(item) for item in overrides]


def spec_path_problem(path: str) -> str:
    """'' when ``path`` (e.g. ``optim.lr``) names a spec field, else what is wrong with it."""
    try:
        _set_dotted({}, path, None)
    except SpecError as exc:
        return exc.problems[0][1]
    return ""


def _set_dotted(raw: dict, path: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``path == "a.b.c"``, checking each step against the schema."""
    parts = path.split(".")
    cls: Any = RunSpec
    node = raw
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if cls is dict:  # inside a free-form mapping field: the rest of the path is one key (it may hold
            node[".".join(parts[depth:])] = value  # dots: tune.search_space.optim.lr sets key "optim.lr")
            return
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            raise SpecError([(here, _unknown_key_message(part, fields))])
        ftype = _field_types(cls)[part]
        if last:
            node[part] = value
            return
        if dataclasses.is_dataclass(ftype):
            cls = ftype
        elif ftype is dict or _origin(ftype) is dict:
            cls = dict
        else:
            raise SpecError([(here, f"holds {_type_name(ftype)}, which has no sub-key {parts[depth + 1]!r}")])
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child


# --------------------------------------------------------------------------------------------------
# Validation: type checks from the annotations, rules from the field metadata


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise SpecError([(prefix or "<config>", f"got {raw!r}; accepted: a mapping of "
                                                f"{', '.join(f.name for f in dataclasses.fields(cls))}")])
    problems: list[tuple[str, str]] = []
    kwargs = _build_fields(cls, raw, prefix, problems)
    if problems:
        raise SpecError(problems)
    spec = cls(**kwargs)
    if cls is RunSpec:
        from raykit.spec_rules import cross_field_problems  # rules that read several fields

        problems = cross_field_problems(spec)
        if problems:
            raise SpecError(problems)
    return spec


def _build_fields(cls: type, raw: Mapping, prefix: str, problems: list) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types = _field_types(cls)
    for key in raw:
        if key not in fields:
            problems.append((_join(prefix, str(key)), _unknown_key_message(str(key), fields)))
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        path = _join(prefix, name)
        ftype = types[name]
        if dataclasses.is_dataclass(ftype):
            try:
                kwargs[name] = _build(ftype, raw[name], path)
            except SpecError as exc:
                problems.extend(exc.problems)
            continue
        ok, value, message = _coerce(raw[name], ftype)
        if not ok:
            problems.append((path, message))
            continue
        rule_problem = _check_rules(value, f.metadata)
        if rule_problem:
            problems.append((path, rule_problem))
            continue
        kwargs[name] = value
    return kwargs


def _coerce(value: Any, ftype: Any) -> tuple[bool, Any, str]:
    """Check ``value`` against the annotation ``ftype``; return (ok, value, message)."""
    if _is_optional(ftype):
        if value is None:
            return True, None, ""
        ftype = _strip_optional(ftype)
    origin = _origin(ftype)
    bad = f"got {value!r} ({type(value).__name__}); accepted: {_type_name(ftype)}"
    if ftype is bool:
        return (True, value, "") if isinstance(value, bool) else (False, None, bad)
    if ftype is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value, ""
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return True, int(value), ""
        return False, None, bad
    if ftype is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            number = float(value)  # YAML 1.1 reads "1e-3" as text
        else:
            return False, None, bad
        if number != number or number in (float("inf"), float("-inf")):
            return False, None, f"got {value!r}; accepted: a finite number"
        return True, number, ""
    if ftype is str:
        return (True, value, "") if isinstance(value, str) and value else (False, None, bad)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, None, bad
        (item_type,) = typing.get_args(ftype) or (Any,)
        items = []
        for index, item in enumerate(value):
            if item_type is Any:
                items.append(item)
                continue
            ok, coerced, message = _coerce(item, item_type)
            if not ok:
                return False, None, f"item {index}: {message}"
            items.append(coerced)
        return True, items, ""
    if origin is dict or ftype is dict:
        if not isinstance(value, Mapping):
            return False, None, bad
        if not all(isinstance(k, str) for k in value):
            return False, None, f"got {value!r}; accepted: a mapping with text keys"
        return True, _deep_copy(value), ""
    raise TypeError(f"unsupported spec annotation {ftype!r}")  # a bug in this file, not user input


_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _check_rules(value: Any, meta: Mapping) -> str:
    """Return a message when ``value`` breaks a rule in the field metadata, else ''."""
    if value is None:
        return ""
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        if meta.get("allow_factory") and isinstance(value, str) and USER_FACTORY.match(value):
            return ""
        accepted = ", ".join(map(str, choices))
        if meta.get("allow_factory"):
            accepted += ", or a factory 'package.module:function'"
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"got {value!r}{hint}; accepted: {accepted}"
    if isinstance(value, list):
        if meta.get("nonempty") and not value:
            return "got an empty list; accepted: at least one item"
        for index, item in enumerate(value):
            problem = _check_bounds(item, meta)
            if problem:
                return f"item {index}: {problem}"
        return ""
    return _check_bounds(value, meta)


_BOUNDS = (("gt", ">", lambda v, b: v > b), ("ge", ">=", lambda v, b: v >= b),
           ("lt", "<", lambda v, b: v < b), ("le", "<=", lambda v, b: v <= b))


def _check_bounds(value: Any, meta: Mapping) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    failed = [(symbol, meta[key]) for key, symbol, test in _BOUNDS if key in meta and not test(value, meta[key])]
    if not failed:
        return ""
    limits = " and ".join(f"{symbol} {meta[key]}" for key, symbol, _ in _BOUNDS if key in meta)
    return f"got {value!r}; accepted: a number {limits}"


# --------------------------------------------------------------------------------------------------
# Typing helpers


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _origin(ftype: Any) -> Any:
    return typing.get_origin(ftype)


def _is_optional(ftype: Any) -> bool:
    return _origin(ftype) in (typing.Union, _UnionType) and type(None) in typing.get_args(ftype)


def _strip_optional(ftype: Any) -> Any:
    (inner,) = [a for a in typing.get_args(ftype) if a is not type(None)]
    return inner


try:  # Python 3.10+: `int | None` is a types.UnionType
    from types import UnionType as _UnionType
except ImportError:  # pragma: no cover
    _UnionType = typing.Union  # type: ignore[assignment,misc]


def _type_name(ftype: Any) -> str:
    if _is_optional(ftype):
        return f"{_type_name(_strip_optional(ftype))} or null"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "non-empty text",
             dict: "a mapping"}
    if ftype in names:
        return names[ftype]
    origin = _origin(ftype)
    if origin is list:
        (item,) = typing.get_args(ftype) or (Any,)
        return "a list" if item is Any else f"a list of {_type_name(item)}"
    if origin is dict:
        return "a mapping"
    return getattr(ftype, "__name__", str(ftype))


def _unknown_key_message(key: str, fields: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; accepted keys: {', '.join(fields)}"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _accepted_text(ftype: Any, meta: Mapping) -> str:
    """What a field accepts, in words: its type plus its choices or bounds."""
    if meta.get("choices") is not None:
        text = "one of " + ", ".join(map(str, meta["choices"]))
        if meta.get("allow_factory"):
            text += ", or 'package.module:function'"
        return text + (" (or null)" if _is_optional(ftype) else "")
    bounds = " and ".join(f"{symbol} {meta[key]}" for key, symbol, _ in _BOUNDS if key in meta)
    return _type_name(ftype) + (f", {bounds}" if bounds else "")


def field_reference() -> list[tuple[str, str, Any, str]]:
    """Every spec field as ``(dotted path, accepted values, default, help)``, for docs and ``--help``."""
    rows = []

    def walk(cls: type, prefix: str) -> None:
        types = _field_types(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            path = _join(prefix, f.name)
            ftype = types[f.name]
            if dataclasses.is_dataclass(ftype):
                walk(ftype, path)
            else:
                rows.append((path, _accepted_text(ftype, f.metadata), getattr(defaults, f.name),
                             f.metadata.get("help", "")))

    walk(RunSpec, "")
    return rows


def reference_markdown() -> str:
    """The spec reference table in Markdown (the README embeds it; a test keeps them equal)."""
    lines = ["| field | accepted | default | meaning |", "|---|---|---|---|"]
    for path, type_name, default, help_text in field_reference():
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"| `{path}` | {type_name} | `{shown}` | {help_text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
