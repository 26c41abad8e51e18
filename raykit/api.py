"""The Python API: ``raykit.train(spec)``. The CLI and the jobs are thin layers over it."""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
import secrets
import time

from raykit import checks, failures, inline, interrupts, lock, storage
from raykit.augment import channel_problems
from raykit.backends import backend_info
from raykit.data import DataPlan, plan_data
from raykit.data.catalog import FACTORY_URI, is_from_python, is_named_dataset, refuse_python_data
from raykit.data.from_python import (FINGERPRINT_FILE, Arrays, GivenPlan, check_fingerprint, given_datasets,
                                     plan_arrays)
from raykit.history import history_csv, read_history_csv
from raykit.losses import FOCAL, loss_problems
from raykit.metrics import is_scalar_column
from raykit.run import CURVES_FILE, METRICS_FILE, RESULT_FILE, SPEC_FILE, Run
from raykit.spec import RunSpec, SpecError, load_spec, load_trained_spec, yaml_load
from raykit.spec.rules import require_installed
from raykit.timing import Stopwatch, inline_timings, join_timings

# Fields that may change when a run is continued under the same name (more epochs, another cluster).
_RESUMABLE_CHANGES = {"name", "storage", "train.epochs", "scaling"}


# What raykit.train returns is a Run: the class Run.open gives back for a run directory written earlier.
TrainResult = Run


def train(spec: "RunSpec | dict | str | list | None" = None, overrides=(), *, datasets=None,
          address: str | None = None, verbose: bool = True) -> TrainResult:
    """Train a model as ``spec`` describes, on Ray Train workers (a single worker on this machine: in this
    process, without Ray; see ``scaling.inline``).

    Args:
        spec: a ``RunSpec``, a dict, a YAML path, or None for the default job (digits CNN, 2 workers); or a
            list of YAML paths (or dicts) merged left to right (``["base.yaml", "exp.yaml"]``).
        overrides: dotted ``"key=value"`` strings or a ``{key: value}`` dict applied on top, in order
            (``"augment.ops.0.degrees=20"`` indexes a list, ``"augment.ops+={op: hflip}"`` appends).
        datasets: data from Python instead of the spec's ``data.uri``: ``{"train": ..., "val": ...,
            "test": ...}`` (train required; a missing val or test is carved out of train by
            ``data.val_fraction`` / ``data.test_fraction``), or one dataset for training. Each is an
            ``(x, y)`` pair of NumPy arrays -- images (N, H, W, C) or (N, H, W) as uint8 or floats in [0, 1],
            or features (N, F); integer labels (N,) -- or a ``ray.data.Dataset`` with an ``image`` (or ``x``)
            and a ``label`` (or ``y``) column (other names: ``data.image_column`` / ``data.label_column``).
            Arrays go into Ray's object store once; a Ray Dataset is read into memory when its training
            split fits ``data.memory_limit_mb``, else streamed in per-worker shards (``data.loader``
            decides). The run records ``data.uri: python:<fingerprint>`` and the data's fingerprint (columns,
            dtypes, shapes and rows of each split): resuming the run takes the same datasets again.
            In a job, name a factory instead: ``data.uri: "py:package.module:function"`` (called here with
            ``data.kwargs``, returning the same).
        address: Ray address to join; default: the current ``ray.init()``, else ``RAY_ADDRESS``, else a
            new local Ray.
        verbose: print the summary at the end (epoch lines come from the rank-0 worker either way).

    Returns:
        A :class:`TrainResult`.

    Raises:
        SpecError: the spec is invalid, its framework is not installed here, or the run exists with other
            data (raised before Ray is started or any resource is claimed).
        DataError: the data cannot be used as given (wrong types, unknown split, x and y of different
            lengths, labels that are not integer class indices, a ``py:`` factory that cannot be imported or
            returns something else); raised before any resource is claimed.

    Example::

        import raykit
        result = raykit.train("jobs/configs/digits_cnn_torch.yaml", ["train.epochs=5"])
        print(result.test_accuracy, result.best_checkpoint)

        result = raykit.train(None, {"model.name": "mlp"}, datasets={"train": (x, y), "test": (x_test, y_test)})
    """
    started, watch = time.perf_counter(), Stopwatch()
    with watch.phase("spec_and_plan_s"):
        run_spec = resolve(load_spec(spec, overrides, data_from_python=datasets is not None))
        require_installed(run_spec)  # the framework's packages, located (not imported) before Ray starts
        run_dir = storage.join(run_spec.storage, run_spec.name)
        checks.run_inputs(run_spec, run_dir)  # storage, the run's own files, starting weights: before Ray
        run_spec, plan = _data_plan(run_spec, datasets, run_dir)  # bad data fails here, before Ray starts
        _check_against_data(run_spec, plan)
        here = inline.chosen(run_spec, plan, address)  # scaling.inline=on that cannot be kept: refused here
    if verbose:
        print(describe_plan(plan), flush=True)
    with lock.held(run_dir, "run"), interrupts.resumable(run_spec.name):  # one driver per run directory
        if here:
            return _train_inline(run_spec, run_dir, plan, verbose, started, watch)
        return _train_on_ray(run_spec, run_dir, plan, address, verbose, started, watch)


def _train_inline(run_spec: RunSpec, run_dir: str, plan, verbose: bool, started: float, watch: Stopwatch
                  ) -> TrainResult:
    """:func:`train` of a single-worker run in this process (:mod:`raykit.inline`), holding the run
    directory's lock: no Ray, the same files as a worker group leaves."""
    if isinstance(plan, GivenPlan):
        _write_fingerprint(plan, run_dir)
    storage.write_text(storage.join(run_dir, SPEC_FILE), run_spec.to_yaml())
    if verbose:
        print("training inline: one worker in this process, no Ray (scaling.inline)", flush=True)
    with watch.phase("fit_s"), failures.explained(run_spec.name, run_dir):  # a full disk, say
        outcome = inline.fit(run_spec, run_dir, plan)
    return _finish(run_spec, run_dir, plan, outcome, watch, started, verbose,
                   evaluate=lambda checkpoint: inline.evaluate(run_spec, checkpoint, plan))


def _train_on_ray(run_spec: RunSpec, run_dir: str, plan: DataPlan, address: str | None, verbose: bool,
                  started: float, watch: Stopwatch) -> TrainResult:
    """:func:`train` from Ray's start to the run's files, holding the run directory's lock."""
    with watch.phase("ray_start_s"):
        from raykit.ray import cluster, trainer  # imports Ray only once the spec is known good

        cluster.connect(address)
        cluster.check_fits(run_spec, streamed=plan.loader == "stream")
        held = _hold(plan, run_spec, run_dir)
    storage.write_text(storage.join(run_dir, SPEC_FILE), run_spec.to_yaml())
    fit_started_at = time.time()
    with watch.phase("fit_s"), failures.explained(run_spec.name, run_dir):  # a full disk, a worker out of memory
        outcome = trainer.fit(run_spec, run_dir, None if held else plan, given=held)
    fit_ended_at = time.time()

    def evaluate(checkpoint: str) -> dict:
        from raykit.ray import remote

        return remote.evaluate(run_spec, checkpoint, "test", held)

    return _finish(run_spec, run_dir, plan, outcome, watch, started, verbose, evaluate,
                   (fit_started_at, fit_ended_at))


def _finish(run_spec: RunSpec, run_dir: str, plan, outcome, watch: Stopwatch, started: float, verbose: bool,
            evaluate, fit_marks: tuple[float, float] | None = None) -> TrainResult:
    """The run's result and files from a finished fit, either path: metrics CSV, curves, export,
    ``result.json`` with the timings, the summary. ``evaluate(checkpoint)``: test metrics of the best
    checkpoint when the training could not give them; ``fit_marks``: when the worker group's fit began
    and ended (none inline: the phases are all this process's)."""
    worker_return = outcome.worker_return or {}
    history = worker_return.get("history") or _read_history(run_dir)
    test_metrics = _test_metrics(outcome, watch, evaluate)
    result = TrainResult(spec=run_spec, run_dir=run_dir, metrics=outcome.metrics or (history[-1] if history else {}),
                         test_metrics=test_metrics, best_checkpoint=outcome.best_checkpoint,
                         best_metrics=outcome.best_metrics, history=history, data=_data_record(plan))
    with watch.phase("outputs_s"):
        _write_outputs(result)
    result.seconds = time.perf_counter() - started
    timings = (join_timings(watch.seconds, worker_return.get("timings"), *fit_marks) if fit_marks
               else inline_timings(watch.seconds, worker_return.get("timings")))
    result.timings = {**timings, "total_s": round(result.seconds, 3)}
    _write_result_json(result)
    if verbose:
        print(result.summary(), flush=True)
    return result


def _check_against_data(spec: RunSpec, plan: DataPlan) -> None:
    """The starting weights must be there (a zoo model's pretrained file, fetched now if allowed) and
    ``finetune.init_from`` must fit the model built for this data (the backend reads the file's tensor
    names and shapes); a per-class focal ``alpha`` needs one weight per class; the augmentation must suit the
    images' channels. Raised before Ray starts."""
    num_classes = spec.model.num_classes or plan.info.num_classes
    problems = backend_info(spec.framework).weights_problems(spec, plan.info.input_shape, num_classes)
    problems += loss_problems(spec.train, num_classes) if spec.train.loss == FOCAL else []
    problems += channel_problems(spec.augment.preset, spec.augment.ops, plan.info.input_shape[-1])
    if problems:
        raise SpecError(problems)


def _data_plan(spec: RunSpec, datasets, run_dir: str, continued: bool = True) -> tuple[RunSpec, "DataPlan | GivenPlan"]:
    """The plan of the run's data: the spec's, or data given from Python (``datasets``, or a ``py:`` factory
    called here), then with the spec recording where it came from. A run in ``run_dir`` continues only
    with the same spec (when ``continued``) and, fed from Python, on data with the same fingerprint."""
    given = given_datasets(datasets, spec.data)
    if given is None:
        if continued:
            _check_continuation(spec, run_dir)  # cheap: before listing the data
        return spec, plan_data(spec.data, spec.model.num_classes)
    plan = _plan_given(given, spec)
    path = storage.join(run_dir, FINGERPRINT_FILE)
    check_fingerprint(storage.read_text(path) if storage.exists(path) else None, plan.fingerprint, run_dir,
                      "data.uri" if spec.data.uri.startswith(FACTORY_URI) else "datasets")
    spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, uri=plan.uri))
    if continued:
        _check_continuation(spec, run_dir)
    return spec, plan


def _plan_given(given: dict, spec: RunSpec) -> GivenPlan:
    """The plan of data given from Python: NumPy arrays here, Ray Datasets by :mod:`raykit.ray.given`
    (classes: ``model.num_classes``, else from the labels)."""
    factory = spec.data.uri if spec.data.uri.startswith(FACTORY_URI) else None
    if isinstance(given["train"], Arrays):
        return plan_arrays(given, spec.data, spec.model.num_classes, factory)
    from raykit.ray.given import plan_datasets  # Ray is imported already: the user made a Ray Dataset

    return plan_datasets(given, spec, factory)


def _hold(plan, spec: RunSpec, run_dir: str):
    """Data given from Python handed to Ray (:func:`raykit.ray.given.hold`), its fingerprint written
    beside the spec; None for the spec's own data."""
    if not isinstance(plan, GivenPlan):
        return None
    from raykit.ray.given import hold

    _write_fingerprint(plan, run_dir)
    return hold(plan, spec)


def _write_fingerprint(plan: GivenPlan, run_dir: str) -> None:
    """The data given from Python, as a resume must be given it again, beside the spec."""
    storage.write_text(storage.join(run_dir, FINGERPRINT_FILE), json.dumps(plan.fingerprint, indent=1))


def _test_metrics(outcome, watch: Stopwatch, evaluate) -> dict:
    """The test metrics of the run's best checkpoint: rank 0's, computed as training ended, when rank 0
    evaluated that same checkpoint; otherwise (a resume of a run from before raykit recorded its
    checkpoints, a damaged checkpoint replaced) ``evaluate(checkpoint)`` gives them (a Ray task, on the data
    given from Python if any; inline, this process)."""
    if not outcome.best_checkpoint:
        return {}
    evaluated = dict((outcome.worker_return or {}).get("test_metrics") or {})
    if evaluated.pop("checkpoint", None) == posixpath.basename(outcome.best_checkpoint.rstrip("/")):
        return evaluated
    with watch.phase("evaluation_task_s"):
        return evaluate(outcome.best_checkpoint)


def resolve(spec: RunSpec) -> RunSpec:
    """Fill in what the spec left to raykit: a run name, and an absolute storage path."""
    name = spec.name or _generated_name(spec)
    return dataclasses.replace(spec, name=name, storage=storage.resolve_storage(spec.storage),
                               data=_absolute_data(spec.data))


def _absolute_data(data):
    """Workers and trials run in other directories: relative data paths become absolute, like storage."""
    located = {key: storage.resolve_storage(value) for key in ("uri", "train_uri", "val_uri", "test_uri")
               if (value := getattr(data, key)) and not (key == "uri" and (is_named_dataset(value)
                                                                           or is_from_python(value)))}
    return dataclasses.replace(data, **located)


def describe_plan(plan: "DataPlan | GivenPlan") -> str:
    """One line on the data: source, sizes, input shape, classes and how it is loaded; and a second line on
    where a named dataset came from (its official release or a re-encoding of it), or data from Python."""
    sizes = ", ".join(f"{name} {count}" for name, count in plan.info.sizes.items())
    mb = plan.decoded_bytes / 2**20
    line = (f"data: {plan.origin}: {sizes}; images "
            f"{'x'.join(map(str, plan.info.input_shape))}, {plan.info.num_classes} classes; {plan.loader} "
            f"(training split {mb:,.1f} MB decoded)")
    return line + (f"\ndata source: {plan.info.description}" if plan.info.description else "")


def _data_record(plan: "DataPlan | GivenPlan") -> dict:
    """What a run trained on, for its ``result.json``."""
    return {"uri": plan.uri, "source": plan.info.description, "sizes": plan.info.sizes}


def _generated_name(spec: RunSpec) -> str:
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.model.name)
    return f"{model}-{spec.framework}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _check_continuation(spec: RunSpec, run_dir: str) -> None:
    """Continuing a run under its name is fine; reusing the name for a different run is refused, so the
    earlier run's checkpoints are never mixed with (or replaced by) another model's."""
    spec_path = storage.join(run_dir, SPEC_FILE)
    if not storage.exists(spec_path):
        return
    before = _flatten(yaml_load(storage.read_text(spec_path)) or {})
    now = _flatten(spec.to_dict())
    changed = sorted(key for key in before.keys() | now.keys()
                     if before.get(key) != now.get(key) and not _may_change(key))
    if changed:
        raise SpecError([("name", f"a run named {spec.name!r} already exists in {run_dir} with different "
                                  f"{', '.join(changed)}; accepted: the same spec (to resume it) or a new name")])


def _may_change(key: str) -> bool:
    return any(key == allowed or key.startswith(allowed + ".") for allowed in _RESUMABLE_CHANGES)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not path.startswith(("tune.search_space", "scaling.resources")):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def export_best(result: TrainResult) -> str:
    """Copy the best checkpoint's weights to ``<run>/export/<checkpoint.export_template>`` (e.g.
    ``15-1.00.pt``) with a JSON of its spec and metrics beside it. Ray's best-K retention never touches
    this directory."""
    manifest = json.loads(storage.read_text(storage.join(result.best_checkpoint, "manifest.json")))
    weights = manifest["weights"]
    stem = result.spec.export_stem(result.best_metrics)
    suffix = weights[weights.index("."):] if "." in weights else ""
    target = storage.join(result.run_dir, "export", stem + suffix)
    storage.write_bytes(target, storage.read_bytes(storage.join(result.best_checkpoint, weights)))
    storage.write_text(storage.join(result.run_dir, "export", stem + ".json"), json.dumps(
        {"framework": manifest["framework"], "metrics": manifest["metrics"], "spec": manifest["spec"],
         "source": result.best_checkpoint}, indent=1, default=str))
    return target


def _read_history(run_dir: str) -> list[dict]:
    path = storage.join(run_dir, METRICS_FILE)
    return read_history_csv(storage.read_text(path)) if storage.exists(path) else []


def _write_outputs(result: TrainResult) -> None:
    from raykit.plots import curves_png

    if result.history:
        storage.write_text(storage.join(result.run_dir, METRICS_FILE), history_csv(result.history))
        storage.write_bytes(storage.join(result.run_dir, CURVES_FILE),
                            curves_png(result.history, f"{result.spec.name} ({result.spec.model.name}, "
                                                       f"{result.spec.framework})"))
    if result.best_checkpoint and result.best_metrics:
        result.exported_model = export_best(result)


def _write_result_json(result: TrainResult) -> None:
    storage.write_text(storage.join(result.run_dir, RESULT_FILE),
                       json.dumps(result.result_record(), indent=2, default=str))


def tune(spec: "RunSpec | dict | str | list | None" = None, search_space: dict | None = None, overrides=(), *,
         datasets=None, address: str | None = None, verbose: bool = True):
    """Sweep hyperparameters over the spec with Ray Tune; every trial runs the same worker code as
    :func:`train`.

    Args:
        spec: a ``RunSpec``, dict, YAML path, a list of paths merged left to right, or None; its ``tune``
            section says how to search.
        search_space: dotted spec paths to distributions (see :mod:`raykit.tuning`); replaces
            ``tune.search_space`` when given.
        overrides: dotted ``"key=value"`` strings or a mapping, as for :func:`train`.
        datasets: data from Python, as for :func:`train` (held once for every trial; a resumed sweep takes
            the same datasets again).

    Raises:
        SpecError: as :func:`train`, before Ray starts: an invalid spec or search space, a framework not
            installed, data that cannot be read, or starting weights the trials would lack (a zoo model's
            ImageNet file, a ``finetune.init_from`` that does not fit the model; checked on the base spec with
            the search space's fixed values).

    Returns:
        A :class:`raykit.tuning.SweepResult`: ``table()`` of trials, ``best_spec``, ``best_checkpoint``.
        The sweep directory ``<storage>/<name>/`` holds ``trials.csv``, ``sweep.png`` and ``best.yaml``.
        Running the same sweep again (same name and storage) resumes it without redoing finished trials.

    Example::

        result = raykit.tune("jobs/configs/digits_cnn_torch.yaml",
                             {"optim.lr": {"loguniform": [1e-4, 1e-2]}},
                             ["tune.num_samples=4", "tune.scheduler=asha", "scaling.num_workers=1"])
        print(result.best_spec.optim.lr, result.best_checkpoint)
    """
    from raykit.tuning import shared_trial_spec

    if search_space is not None:
        overrides = [*_as_list(overrides), {"tune.search_space": search_space}]
    sweep_spec = _resolve_sweep(load_spec(spec, _as_list(overrides), data_from_python=datasets is not None))
    require_installed(sweep_spec)
    sweep_dir = storage.join(sweep_spec.storage, sweep_spec.name)
    checks.run_inputs(sweep_spec, sweep_dir, resume=False)  # a sweep's resume is Tune's experiment state
    # Bad data fails before Ray starts; a sweep resumes through Tune's own state, not the spec check.
    sweep_spec, plan = _data_plan(sweep_spec, datasets, sweep_dir, continued=False)
    _check_against_data(shared_trial_spec(sweep_spec), plan)  # as raykit.train does, for every trial at once
    if plan.loader == "stream" and sweep_spec.tune.inline_single_worker:
        # Inline trials load data into memory; streamed data needs the Train workers' dataset shards.
        sweep_spec = dataclasses.replace(sweep_spec, tune=dataclasses.replace(sweep_spec.tune,
                                                                             inline_single_worker=False))
    with lock.held(sweep_dir, "sweep"), interrupts.resumable(sweep_spec.name):  # one driver per sweep
        return _sweep_on_ray(sweep_spec, sweep_dir, plan, address, verbose)


def _sweep_on_ray(sweep_spec: RunSpec, sweep_dir: str, plan: DataPlan, address: str | None, verbose: bool):
    """:func:`tune` from Ray's start to the sweep's files, holding the sweep directory's lock."""
    from raykit.ray import cluster
    from raykit.ray.tune import run_sweep
    from raykit.tuning import sweep_plot_png, trials_csv

    cluster.connect(address)
    cluster.check_fits(sweep_spec, streamed=plan.loader == "stream")
    held = _hold(plan, sweep_spec, sweep_dir)
    storage.write_text(storage.join(sweep_dir, SPEC_FILE), sweep_spec.to_yaml())
    result = run_sweep(sweep_spec, sweep_dir, given=held)
    storage.write_text(storage.join(sweep_dir, "trials.csv"), trials_csv(result))
    storage.write_bytes(storage.join(sweep_dir, "sweep.png"),
                        sweep_plot_png(result, sweep_spec.tune.search_space, f"sweep {sweep_spec.name}"))
    if result.best_spec is not None:
        storage.write_text(storage.join(sweep_dir, "best.yaml"), result.best_spec.to_yaml())
    if verbose:
        print(result.summary(), flush=True)
    return result


def _as_list(overrides) -> list:
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, dict):
        return [overrides]
    return list(overrides)


def _resolve_sweep(spec: RunSpec) -> RunSpec:
    name = spec.name or f"sweep-{spec.model.name.replace(':', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    return dataclasses.replace(spec, name=name, storage=storage.resolve_storage(spec.storage),
                               data=_absolute_data(spec.data))


def evaluate(checkpoint: str, split: str = "test", overrides=(), *, datasets=None, out_dir: str | None = None,
             address: str | None = None, verbose: bool = True) -> dict:
    """Evaluate a raykit checkpoint (path or URI) on one split of its data.

    The checkpoint's own spec says how to build the model and load the data; ``overrides`` (e.g.
    ``data.*``) may change the data. A run fed from Python is evaluated on ``datasets`` (as for
    :func:`train`; split the same way); a ``py:`` factory is called again. Writes ``evaluation-<split>.json``
    (accuracy, per-class precision, recall, F1, support, confusion matrix, and ``metrics``: the split's loss,
    accuracy and the spec's ``train.metrics``, named as the run's test metrics, e.g. ``test_top5_acc``) and
    ``confusion-<split>.png`` to ``out_dir`` (default: the run directory's ``evaluation/``). Returns the
    report.
    """
    from raykit.evaluation import classification_report
    from raykit.plots import confusion_png

    if split not in ("train", "val", "test"):
        raise SpecError([("--split", f"got {split!r}; accepted: train, val, test")])
    from raykit.checks import checkpoint_manifest

    manifest = checkpoint_manifest(checkpoint)
    spec = load_trained_spec(manifest["spec"], _as_list(overrides))
    given = given_datasets(datasets, spec.data)
    if given is None:
        refuse_python_data(spec.data.uri)  # a run fed from Python, evaluated without its data: say so now
    plan = None
    if given:  # the model's classes, not those the labels given now happen to reach
        classes = spec.model.num_classes or manifest.get("state", {}).get("num_classes")
        plan = _plan_given(given, dataclasses.replace(spec, model=dataclasses.replace(spec.model, num_classes=classes)))

    from raykit.ray import cluster, remote

    cluster.connect(address)
    held = None
    if plan is not None:
        from raykit.ray.given import hold

        held = hold(plan, spec)
    metrics, labels, predictions = remote.evaluate_split(spec, checkpoint, split, held)
    classes = spec.model.num_classes or int(max(labels.max(), predictions.max())) + 1
    report = {"checkpoint": checkpoint, "split": split, **classification_report(labels, predictions, classes),
              "metrics": metrics}
    out_dir = out_dir or storage.join(checkpoint.rstrip("/").rsplit("/", 1)[0], "evaluation")
    storage.write_text(storage.join(out_dir, f"evaluation-{split}.json"), json.dumps(report, indent=1))
    storage.write_bytes(storage.join(out_dir, f"confusion-{split}.png"),
                        confusion_png(report["confusion_matrix"], f"{spec.model.name} on {split}: accuracy "
                                                                  f"{report['accuracy']:.4f}"))
    if verbose:
        print(f"{split} accuracy: {report['accuracy']:.4f} ({report['samples']} samples)")
        extra = [f"{key} {value:.4f}" for key, value in metrics.items() if is_scalar_column(key)]
        if extra:
            print(f"  {', '.join(extra)}")
        for row in report["per_class"]:
            print(f"  class {row['class']:>3}: precision {row['precision']:.3f}  recall {row['recall']:.3f}  "
                  f"support {row['support']}")
        print(f"wrote {storage.join(out_dir, f'evaluation-{split}.json')} and confusion-{split}.png")
    return report
