"""The run spec's schema: its sections as dataclasses, each field with its help text and rules, and the
error every validation problem ends in.

Values that belong to a backend (frameworks, model and optimizer names) are not listed here: the fields'
``choices`` ask the backend registry (:mod:`raykit.backends`), which knows them without importing torch
or TensorFlow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import yaml

from raykit.augment import OPS as AUGMENT_OPS
from raykit.augment import PRESETS
from raykit.backends import backend_info, backend_names
from raykit.losses import LOSSES
from raykit.metrics import METRIC_FORMS, MONITOR_PATTERN, metric_problem, scalar_columns
from raykit.spec.fields import spec_field as _field

AUGMENT_PRESETS = tuple(PRESETS)
# Learning-rate schedules (raykit.schedules.SCHEDULES registers one factory for each; a test keeps them equal).
SCHEDULES = ("constant", "step", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16", "fp16")
CHANNELS_LAST = ("auto", "on", "off")
COMPILE_MODES = ("off", "default", "max-autotune")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
MODES = ("max", "min")
INLINE_CHOICES = ("auto", "on", "off")
# Tune trial schedulers (raykit.ray.tune.TUNE_SCHEDULERS registers one factory for each; a test keeps them
# equal). Listed here because validating a spec must not import Ray.
SCHEDULERS = ("fifo", "asha", "hyperband", "pbt")
SEARCHERS = ("random", "optuna")
DATA_FORMATS = ("auto", "digits", "npz", "parquet", "image_folder")
MONITORED_METRICS = ("val_acc", "val_loss", "train_loss", "train_acc")
# What checkpoint.monitor and tune.metric also take: a one-value metric that train.metrics adds (checked by
# raykit.spec.rules against the spec's own train.metrics).
EXTRA_MONITORED = (MONITOR_PATTERN, "val_<metric> of a train.metrics entry (val_top5_acc, val_macro_f1)")
# What every epoch reports (usable in checkpoint.export_template).
EPOCH_METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "global_step")


def backend_choices(fact: str):
    """A ``choices`` function: every registered backend's values of ``fact`` (a BackendInfo attribute),
    in registration order. Which of them the chosen framework has is checked by :mod:`raykit.spec.rules`."""

    def choices() -> tuple[str, ...]:
        return tuple(dict.fromkeys(value for name in backend_names() for value in getattr(backend_info(name), fact)))

    choices.__name__ = f"{fact}_of_every_backend"
    return choices


@dataclass
class DataSpec:
    uri: str = _field("digits", help="Dataset source: 'digits' (embedded scikit-learn digits), 'cifar10' (a named "
                                     "dataset in the local data cache $RAYKIT_DATA_HOME/cifar10, default "
                                     "~/.cache/raykit/data, filled by `raykit data get cifar10`: train from its "
                                     "train file, test from its official test file), a .npz file (arrays "
                                     "x, y), a Parquet file or directory, or an image folder (root/<class>/<images>); "
                                     "a local path or URI (file://, s3://, gs://, memory://, any fsspec scheme). "
                                     "'py:package.module:function': a factory called in the driver with "
                                     "data.kwargs, returning {'train': ..., 'val': ..., 'test': ...} (or one training "
                                     "dataset) of (x, y) NumPy pairs or ray.data.Datasets, as raykit.train(spec, "
                                     "datasets=...) takes them from Python (a run fed that way records "
                                     "'python:<fingerprint>').")
    train_uri: str | None = _field(None, help="Training data from its own source (instead of data.uri); val/test "
                                              "come from val_uri/test_uri, or are carved out of it by the fractions.")
    val_uri: str | None = _field(None, help="Validation data from its own source (null = carved out by "
                                            "val_fraction).")
    test_uri: str | None = _field(None, help="Test data from its own source (null = carved out by test_fraction).")
    kwargs: dict = _field({}, help="Keyword arguments for a data.uri 'py:' factory.")
    format: str = _field("auto", help="Source format; auto = from the extension (.npz, .parquet) or the listing "
                                      "(Parquet files, or class folders).", choices=DATA_FORMATS)
    label_column: str = _field("label", help="Parquet: the label column (integer class indices or class names); "
                                             "a ray.data.Dataset from Python: its label column (integer class "
                                             "indices; 'y' when 'label' is absent).", nonempty=True)
    image_column: str = _field("image", help="Parquet: the image column: encoded bytes (PNG/JPEG, or a "
                                             "{bytes, path} struct) or fixed-shape numeric arrays; a "
                                             "ray.data.Dataset from Python: its image (or feature) column "
                                             "('x' when 'image' is absent).", nonempty=True)
    color_mode: str = _field("auto", help="Channels of the images read (decoded files, or arrays: the digits, an "
                                          ".npz): grayscale (1), rgb (3), or auto = the first image's.",
                             choices=("auto", "grayscale", "rgb"))
    resize: list[int] = _field([], help="[height, width] every image read (decoded files, or arrays: the digits, "
                                        "an .npz) is resized to (bilinear); [] keeps the stored size (then all "
                                        "images must share it).", ge=1)
    loader: str = _field("auto", help="memory: every worker holds its data decoded; stream: Ray Data reads and "
                                      "decodes on CPU workers and streams disjoint shards to the training workers; "
                                      "auto: stream when the decoded training split exceeds memory_limit_mb. Data "
                                      "from Python: NumPy arrays are held in memory (in Ray's object store, once "
                                      "per node); a ray.data.Dataset held in memory is read once in the driver, a "
                                      "streamed one runs its own pipeline every epoch.",
                         choices=("auto", "memory", "stream"))
    memory_limit_mb: int = _field(2048, help="loader auto: the decoded training-split size above which data is "
                                             "streamed.", ge=1)
    read_cpus: float = _field(1.0, help="stream: CPUs each Ray Data read/decode task reserves (the cluster needs "
                                        "this much beside the training workers).", gt=0.0, le=64.0)
    shuffle_buffer: int = _field(2048, help="stream: rows in each worker's local shuffle buffer (0 = no shuffle "
                                            "beyond the chunk order).", ge=0)
    stream_cache: str = _field("auto", help="stream: decode the train and val splits once, before training, into "
                                            "Ray's object store (shared by every worker of a node, spilled to disk "
                                            "when full), instead of decoding every epoch; auto = when their "
                                            "decoded float32 size is at most a quarter of the cluster's object "
                                            "store memory (a ray.data.Dataset from Python: only 'on' materializes "
                                            "it).", choices=("auto", "on", "off"))
    val_fraction: float = _field(0.15, help="Fraction of the data held out for validation (stratified).",
                                 ge=0.0, lt=1.0)
    test_fraction: float = _field(0.15, help="Fraction of the data held out for testing (stratified); a named "
                                             "dataset such as cifar10 tests on its own test file instead.",
                                  ge=0.0, lt=1.0)
    split_seed: int = _field(0, help="Seed of the train/val/test split.", ge=0)


@dataclass
class ModelSpec:
    name: str = _field("cnn", help="Registered model name (which ones depends on the framework), a zoo name "
                                   "(torch: 'timm:<name>' of timm.list_models(), 'torchvision:<name>' of "
                                   "torchvision's classification models; tf: 'keras:<name>', a keras.applications "
                                   "model, e.g. keras:ResNet50, without its top, under raykit's head: flatten -> "
                                   "hidden -> dropout -> dense), or a user factory 'package.module:function'.",
                       choices=backend_choices("model_names"), backend_fact="model_names", allow_factory=True)
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
    pretrained: str = _field("none", help="'none', or 'imagenet': the model's ImageNet weights from its library's "
                                          "cache (torch: resnet18/34/50 and torchvision: names from "
                                          "$TORCH_HOME/hub/checkpoints, timm: names from the Hugging Face cache "
                                          "$HF_HOME/hub; tf: resnet50 and keras: names, the no-top file "
                                          "keras.applications names, from $KERAS_HOME/models). resnet18/34/50 and "
                                          "keras: files are never downloaded; a torch zoo model's file is fetched "
                                          "once before Ray starts unless HF_HUB_OFFLINE=1.",
                             choices=("none", "imagenet"))
    kwargs: dict = _field({}, help="Keyword arguments for the model's constructor or factory (a zoo model's, "
                                   "resnet18/34/50's, a user factory's); a key raykit also passes (num_classes, "
                                   "timm's in_chans) takes the value given here (tf keras: names refuse the keys "
                                   "raykit sets: include_top, weights, input_shape, ...).")


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
                                            "(.pt/.pth, torchvision format, or .safetensors); local path or URI. "
                                            "With model.pretrained it is loaded after the pretrained weights.")
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
    name: str = _field("adam", help="Optimizer; rmsprop as Keras defines it (rho 0.9, epsilon 1e-7, no "
                                    "momentum) in every framework.", choices=backend_choices("optimizer_names"),
                       backend_fact="optimizer_names")
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
    label_smoothing: float = _field(0.0, help="Label smoothing, applied to the training targets before any "
                                              "loss: t * (1 - s) + s / C.", ge=0.0, lt=1.0)
    loss: str = _field("cross_entropy", help="Training loss: cross_entropy (soft targets: label smoothing, "
                                             "mixup/cutmix); focal (multi-class, softmax: -sum_c alpha_c t_c "
                                             "(1 - p_c)^gamma log p_c; loss_kwargs gamma, default 2.0, and alpha, "
                                             "a number or one weight per class); or your own "
                                             "'package.module:function', called as fn(logits, targets, "
                                             "**loss_kwargs) with float32 logits (N, C) and soft-label targets "
                                             "(N, C) as the framework's tensors, returning per-sample losses (N,) "
                                             "(a scalar counts as the batch mean). val_loss and test_loss are this "
                                             "loss on the hard labels.", choices=LOSSES, allow_factory=True)
    loss_kwargs: dict = _field({}, help="Keyword arguments of the loss: focal's gamma and alpha, or your own "
                                        "function's.")
    metrics: list[str] = _field([], help=f"Extra validation metrics, each epoch, exact over all workers: "
                                         f"{METRIC_FORMS}. Columns val_top5_acc, val_macro_f1 and, per class, "
                                         "val_acc/<class name, or index> (letters, digits, _ . - kept, the rest "
                                         "_); the test evaluation adds test_ ones. macro F1 averages the classes "
                                         "present in the labels or predictions (as scikit-learn).",
                                    item_problem=metric_problem, unique_items=True)
    channels_last: str = _field("auto", help="torch: feed images and keep conv weights in the channels-last "
                                             "(NHWC) memory layout, which convolution kernels run faster on (CPU "
                                             "and GPU). auto = on when the model has a 2-D convolution (cnn, the "
                                             "ResNets, a user model with nn.Conv2d), off otherwise (mlp); the "
                                             "same values either way, within float rounding. tf: always NHWC.",
                                choices=CHANNELS_LAST)
    compile: str = _field("off", help="torch: torch.compile the model (default, or max-autotune: longer "
                                      "compilation, faster kernels); compile time is reported apart "
                                      "(compile_s) and kept out of epoch_time_s and samples_per_s; a model "
                                      "that fails to compile trains eagerly after one warning. tf: any value "
                                      "but off compiles the train and eval steps with XLA (jit_compile).",
                          choices=COMPILE_MODES)
    deterministic: bool = _field(False, help="Turn off what makes results depend on timing (cuDNN autotuning, "
                                             "non-deterministic GPU kernels): a resumed run is then bit-identical "
                                             "to an uninterrupted one on a GPU too (on CPU it always is). Off: "
                                             "GPU runs resume to the same data order, augmentation and schedule, "
                                             "with weights equal within float rounding.")
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
                                                      "name (a sweep's trials: the sweep's name).")
    mlflow_parent_run_id: str | None = _field(None, help="MLflow run to nest this run's run under (tag "
                                                         "mlflow.parentRunId); a sweep sets it for its trials to "
                                                         "the sweep's own run. null = a top-level run.")
    wandb_project: str | None = _field(None, help="Also log params and per-epoch metrics to this Weights & Biases "
                                                  "project (through Ray's setup_wandb; pip install "
                                                  "'raykit[wandb]'; entity, API key and WANDB_MODE=offline come "
                                                  "from the WANDB_* environment); null = no W&B.")
    wandb_group: str | None = _field(None, help="W&B group of the run; null = none (a sweep's trials: the sweep's "
                                                "name).")


@dataclass
class CheckpointSpec:
    every_n_epochs: int = _field(1, help="Save a checkpoint every N epochs (and after the last one).", ge=1)
    keep_best: int = _field(2, help="How many checkpoints to keep, ranked by the monitored metric.", ge=1)
    monitor: str = _field("val_acc", help="Metric that ranks checkpoints (also early stopping and "
                                          "train.stop_at).", choices=MONITORED_METRICS, also=EXTRA_MONITORED)
    mode: str = _field("max", help="Whether a higher or a lower monitored value is better.", choices=MODES)
    export_template: str = _field("{epoch:02d}-{val_acc:.2f}", help="File name of the exported best model "
                                  "(under <run>/export/), formatted with its metrics (epoch, train_loss, "
                                  "train_acc, val_loss, val_acc, lr, global_step, and train.metrics' one-value "
                                  "ones such as val_macro_f1).")


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
    env_vars: dict = _field({}, help="Environment variables for the Ray workers, sweep trials and raykit's Ray "
                                     "tasks, {NAME: 'value'}, set over those raykit forwards from the driver "
                                     "(RAYKIT_*, AWS_*, MLFLOW_*, WANDB_*, HF_*, ...: see the README). Saved "
                                     "with the run: keep secrets in the driver's environment.")
    inline: str = _field("auto", help="Train a single-worker run in the driver process, without starting Ray or "
                                      "a worker group (seconds less per run; same checkpoints, resume, metrics and "
                                      "test evaluation, and either path continues the other's run). auto: inline "
                                      "when num_workers is 1, max_failures is 0, the data is read into memory (not "
                                      "streamed, no Ray Datasets), no Ray address is given, no local Ray (raykit "
                                      "up) is running, and use_gpu has a GPU here -- and no ray.init() in this "
                                      "Python process; on: inline, refused when one of those (but the last) "
                                      "fails; off: always Ray Train's worker group.",
                         choices=INLINE_CHOICES)


@dataclass
class TuneSpec:
    search_space: dict = _field({}, help="Spec paths to Tune distributions: {optim.lr: {loguniform: [1e-4, 1e-1]}, "
                                         "model.name: {choice: [cnn, mlp]}, train.batch_size: {grid: [32, 64]}}; "
                                         "also uniform, quniform [lo, hi, q], randint [lo, hi), or a fixed value.")
    num_samples: int = _field(1, help="Samples from the search space (each grid point is run this many times).",
                              ge=1, le=100_000)
    scheduler: str = _field("fifo", help="Trial scheduler: fifo, asha, hyperband (HyperBand's brackets of "
                                         "different grace periods, each promoting trials asynchronously as "
                                         "ASHA does: no trial waits paused for others), pbt (population based "
                                         "training, mutating the search-space entries).", choices=SCHEDULERS)
    searcher: str = _field("random", help="Search algorithm: random (and grid) or optuna (pip install optuna).",
                           choices=SEARCHERS)
    metric: str = _field("val_acc", help="Metric that ranks trials.", choices=MONITORED_METRICS,
                         also=EXTRA_MONITORED)
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
    framework: str = _field("torch", help="Worker framework: a registered backend (torch: PyTorch under "
                                          "TorchTrainer; tf: TensorFlow + Keras 3 under TensorflowTrainer).",
                            choices=backend_names)
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

    def export_stem(self, metrics: dict) -> str:
        """``checkpoint.export_template`` formatted with an epoch's ``metrics`` (the ones it may name: the
        epoch metrics and train.metrics' one-value columns), e.g. ``05-0.97``."""
        names = (*EPOCH_METRICS, *scalar_columns(self.train.metrics))
        return self.checkpoint.export_template.format(**{k: v for k, v in metrics.items() if k in names})

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


