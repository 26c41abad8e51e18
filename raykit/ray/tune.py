"""Ray Tune sweeps over the run spec. Every trial runs the same worker code as ``raykit train``.

A trial is a Tune function trainable. With one worker (and ``tune.inline_single_worker``) it runs the
backend loop in the trial's own process — no Train worker group to start, tens of seconds saved per
trial — and reports checkpoints to Tune directly. With more workers it builds and fits the same Ray
Train trainer as ``raykit train``; a :class:`_ForwardToTrial` callback on the Train controller hands each
report (checkpoint included) back to the trial, which reports it to Tune: Train V2's own
TuneReportCallback passes no checkpoint, and Population Based Training needs one to copy weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from pathlib import Path

import ray
import ray.train
import ray.tune
from ray.util.queue import Empty, Queue

from raykit import engine, interrupts, storage
from raykit.checkpoint import checksum
from raykit.history import read_history_csv
from raykit.metrics import is_metric_column
from raykit.ray.cluster import worker_resources
from raykit.ray.trainer import build_trainer, set_controller_environment, worker_environment
from raykit.registry import Registry
from raykit.run import trial_runs
from raykit.session import WorkerSession
from raykit.sinks import open_sweep_tracking
from raykit.spec import RunSpec, load_spec
from raykit.tuning import (DISTRIBUTIONS, SweepResult, TrialRecord, best_spec, pick_best,
                           searched_paths, trial_spec)

# A trial that only drives a Train run needs no CPU. Tune refuses an all-zero request, and even 0.01 CPU
# deadlocks a 2-CPU machine whose 2 one-CPU workers then never fit beside it; one byte of memory makes a
# valid request that takes nothing the workers need.
DRIVER_TRIAL_REQUEST = {"cpu": 0, "memory": 1}


def to_tune_space(space: dict) -> dict:
    """The YAML search-space language -> Tune's sample objects (fixed values pass through)."""
    converted = {}
    for path, value in space.items():
        if not (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS):
            converted[path] = value
            continue
        kind, args = next(iter(value.items()))
        converted[path] = {
            "uniform": lambda a: ray.tune.uniform(*a), "loguniform": lambda a: ray.tune.loguniform(*a),
            "quniform": lambda a: ray.tune.quniform(*a), "randint": lambda a: ray.tune.randint(*a),
            "choice": lambda a: ray.tune.choice(a), "grid": lambda a: ray.tune.grid_search(a),
        }[kind](args)
    return converted


def _mutations(space: dict) -> dict:
    """PBT's explore space: every searched entry (grid values become choices)."""
    mutations = {}
    for path in searched_paths(space):
        kind, args = next(iter(space[path].items()))
        mutations[path] = list(args) if kind in ("choice", "grid") else to_tune_space({path: space[path]})[path]
    return mutations


# tune.scheduler -> factory(spec) of Ray Tune's trial scheduler. The names are raykit.spec.SCHEDULERS, which
# validates specs without importing Ray; a test keeps the two equal.
TUNE_SCHEDULERS = Registry("tune.scheduler")


@TUNE_SCHEDULERS.register("fifo")
def _fifo(spec: RunSpec) -> None:
    return None  # Tune's default: every trial runs all its epochs


@TUNE_SCHEDULERS.register("asha")
def _asha(spec: RunSpec):
    epochs = spec.train.epochs
    return ray.tune.schedulers.ASHAScheduler(max_t=epochs, grace_period=min(spec.tune.grace_period, epochs),
                                             reduction_factor=spec.tune.reduction_factor)


@TUNE_SCHEDULERS.register("hyperband")
def _hyperband(spec: RunSpec):
    """HyperBand's brackets, each run as ASHA does: a trial is promoted or stopped as it reaches a rung,
    never paused. Ray's synchronous HyperBandScheduler pauses a trial at each rung until its bracket
    fills; a trial paused at its last rung while the other ended was left paused for good in our suite."""
    epochs, rate = spec.train.epochs, spec.tune.reduction_factor
    grace = min(spec.tune.grace_period, epochs)
    return ray.tune.schedulers.ASHAScheduler(max_t=epochs, grace_period=grace, reduction_factor=rate,
                                             brackets=hyperband_brackets(epochs, grace, rate))


def hyperband_brackets(max_t: int, grace_period: int, reduction_factor: int) -> int:
    """HyperBand's bracket count, s_max + 1: one per number of halvings possible between the grace period
    and max_t (``1 + floor(log_rf(max_t / grace))``)."""
    brackets = 1
    while grace_period * reduction_factor ** brackets <= max_t:
        brackets += 1
    return brackets


@TUNE_SCHEDULERS.register("pbt")
def _pbt(spec: RunSpec):
    return ray.tune.schedulers.PopulationBasedTraining(
        time_attr="training_iteration", perturbation_interval=spec.tune.perturbation_interval,
        hyperparam_mutations=_mutations(spec.tune.search_space), quantile_fraction=0.5, synch=True)


def _scheduler(spec: RunSpec):
    return TUNE_SCHEDULERS.get(spec.tune.scheduler)(spec)


def _searcher(spec: RunSpec):
    if spec.tune.searcher != "optuna":
        return None
    try:
        from ray.tune.search.optuna import OptunaSearch
        import optuna  # noqa: F401
    except ImportError:
        raise ImportError("tune.searcher: 'optuna' needs the optuna package: pip install 'raykit[optuna]' "
                          "(or pip install optuna), or use tune.searcher=random") from None
    return OptunaSearch(seed=spec.train.seed)


def _inline(spec: RunSpec) -> bool:
    return spec.scaling.num_workers == 1 and spec.tune.inline_single_worker


def trial_resources(spec: RunSpec) -> dict:
    """What one trial itself holds: a whole worker when it trains inline, a sliver when it drives Train."""
    if not _inline(spec):
        return dict(DRIVER_TRIAL_REQUEST)
    wanted = worker_resources(spec)
    request = {"cpu": wanted.get("CPU", 0), "gpu": wanted.get("GPU", 0)}
    return request if any(request.values()) else dict(DRIVER_TRIAL_REQUEST)


def concurrency_cap(spec: RunSpec) -> int:
    """How many trials fit at once: the cluster's CPUs and GPUs over what one trial (and its Train
    workers) needs. More would leave trials holding resources their own workers wait for: a deadlock."""
    available = ray.cluster_resources()
    per_worker = worker_resources(spec)
    workers = 1 if _inline(spec) else spec.scaling.num_workers
    fits = []
    for name, amount in per_worker.items():
        if amount > 0:
            fits.append(int(available.get(name, 0) // (amount * workers)))
    cap = max(min(fits) if fits else 1, 1)
    return min(cap, spec.tune.max_concurrent_trials or cap)


def run_sweep(spec: RunSpec, sweep_dir: str, given=None) -> SweepResult:
    """Run (or resume) the sweep ``spec.tune`` describes; files go to ``sweep_dir``. ``given``: data from
    Python as Ray holds it (:class:`raykit.ray.given.GivenData`), for every trial."""
    forwarded = worker_environment(spec).get("env_vars", {})  # as for Train workers
    base, sweep_run = open_sweep_tracking(spec, sweep_dir)  # trials: one MLflow / W&B run each, grouped
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, base=base.to_dict(), trials_dir=storage.join(sweep_dir, "trials"),
                                 env=forwarded, given=given),
        trial_resources(spec))
    if ray.tune.Tuner.can_restore(sweep_dir):
        print(f"resuming the sweep in {sweep_dir}: finished trials are kept", flush=True)
        tuner = ray.tune.Tuner.restore(sweep_dir, trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = ray.tune.Tuner(trainable, param_space=to_tune_space(spec.tune.search_space),
                               tune_config=_tune_config(spec), run_config=_run_config(spec))
    try:
        with _stop_gracefully_on_signals() as signalled:
            grid = tuner.fit()
        signalled.raise_if_signalled()
    except BaseException:
        if sweep_run:
            sweep_run.finish(False)
        raise
    if sweep_run:
        sweep_run.finish(True)
    return _collect(spec, sweep_dir, grid)


@contextlib.contextmanager
def _stop_gracefully_on_signals():
    """SIGINT and SIGTERM stop the sweep the way Tune stops on Ctrl-C (trials stopped, the experiment's state
    saved: the same command resumes it), then :class:`raykit.interrupts.Interrupted` is raised (yields the
    record that does it). Tune's own SIGINT handler stays off: it ends ``fit()`` as if the sweep were done,
    and ignores SIGTERM; its SIGUSR1 handler, the same graceful stop, is what the signals are passed to."""
    before = os.environ.get(_TUNE_SIGINT_OFF)
    os.environ[_TUNE_SIGINT_OFF] = "1"
    usr1 = signal.getsignal(signal.SIGUSR1)
    try:
        with interrupts.handlers_restored():
            yield interrupts.forward_to(lambda: signal.getsignal(signal.SIGUSR1))
    finally:
        signal.signal(signal.SIGUSR1, usr1)
        if before is None:
            os.environ.pop(_TUNE_SIGINT_OFF, None)
        else:
            os.environ[_TUNE_SIGINT_OFF] = before


_TUNE_SIGINT_OFF = "TUNE_DISABLE_SIGINT_HANDLER"


def _tune_config(spec: RunSpec) -> ray.tune.TuneConfig:
    # Reusing trial processes saves a framework import per trial, and under PBT per exploit (a paused trial
    # restarts its function in a kept process from the donor's checkpoint: 2-trial PBT test 42 s -> 16-20 s);
    # not when the framework itself is searched (torch and TensorFlow in one process can crash, see
    # tests/conftest.py).
    reuse = "framework" not in spec.tune.search_space
    cap = concurrency_cap(spec)
    print(f"sweep: up to {cap} trial(s) at once ({'inline' if _inline(spec) else 'Ray Train'} trials)", flush=True)
    return ray.tune.TuneConfig(metric=spec.tune.metric, mode=spec.tune.mode, num_samples=spec.tune.num_samples,
                               scheduler=_scheduler(spec), search_alg=_searcher(spec), max_concurrent_trials=cap,
                               reuse_actors=reuse, trial_dirname_creator=lambda trial: trial.trial_id)


def _run_config(spec: RunSpec) -> ray.tune.RunConfig:
    return ray.tune.RunConfig(name=spec.name, storage_path=spec.storage, verbose=0,
                              failure_config=ray.tune.FailureConfig(max_failures=spec.tune.max_failures))


def _trial(config: dict, base: dict, trials_dir: str, env: dict, given=None) -> None:
    """One trial: validate its spec (a bad combination fails this trial only), then train it."""
    os.environ.update(env)
    trial_id = ray.tune.get_context().get_trial_id()
    spec = trial_spec(load_spec(base), config, name=trial_id, storage=trials_dir)
    run_dir = storage.join(trials_dir, trial_id)
    storage.write_text(storage.join(run_dir, "spec.yaml"), spec.to_yaml())
    checkpoint = ray.tune.get_checkpoint()  # a retry's own latest, or a PBT donor's
    if checkpoint is not None:
        _record_restore(run_dir, checkpoint)
    if _inline(spec):
        _train_inline(spec, run_dir, checkpoint, given)
    else:
        _train_with_trainer(spec, run_dir, checkpoint, given)


def _record_restore(run_dir: str, checkpoint) -> None:
    """Append to ``restores.jsonl`` where this (re)start's weights came from, with their checksum: a PBT
    exploit shows up as a checkpoint of another trial."""
    import json

    with checkpoint.as_directory() as directory:
        manifest = json.loads((Path(directory) / "manifest.json").read_text())
    algorithm, digest = checksum(manifest["files"][manifest["weights"]])
    entry = {"checkpoint": checkpoint.path, "epoch": manifest["epoch"], "weights_checksum": f"{algorithm}:{digest}"}
    path = storage.join(run_dir, "restores.jsonl")
    before = storage.read_text(path) if storage.exists(path) else ""
    storage.write_text(path, before + json.dumps(entry) + "\n")


def _report_to_tune(metrics: dict, checkpoint_dir: str | None) -> None:
    checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    ray.tune.report(metrics, checkpoint=checkpoint)


def _train_inline(spec: RunSpec, run_dir: str, checkpoint, given=None) -> None:
    local = checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None)
    with local as resume_dir:
        session = WorkerSession(use_gpu=spec.scaling.use_gpu, report=_report_to_tune, resume_dir=resume_dir,
                                run_dir=run_dir, splits=given.splits() if given else None)
        engine.fit(spec, session)


class _ForwardToTrial(ray.train.UserCallback):
    """On the Train controller: pass rank 0's metrics and the checkpoint location to the trial."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.queue.put((metrics[0], checkpoint.path if checkpoint else None,
                        checkpoint.filesystem if checkpoint else None))


def _train_with_trainer(spec: RunSpec, run_dir: str, checkpoint, given=None) -> None:
    """Fit a Train run in a thread while this thread turns its reports into Tune reports. Every (re)start
    is a new Train run continuing from the Tune checkpoint, so a PBT exploit really starts from the
    donor's weights rather than from this trial's own last snapshot."""
    attempt = sum(1 for _ in Path(run_dir).glob("train-*")) if "://" not in run_dir else 0
    queue = Queue(maxsize=4, actor_options={"num_cpus": 0})
    resume_from = checkpoint.path if checkpoint else None
    train_spec = dataclasses.replace(spec, name=f"train-{attempt}", storage=run_dir)
    set_controller_environment()
    trainer = build_trainer(train_spec, run_dir, callbacks=[_ForwardToTrial(queue)], resume_from=resume_from,
                            given=given)
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # re-raised in the trial thread so Tune sees the trial fail
            failure.append(exc)

    thread = threading.Thread(target=fit, name="raykit-train-fit", daemon=True)
    thread.start()
    while thread.is_alive() or not queue.empty():
        try:
            metrics, path, filesystem = queue.get(timeout=0.5)
        except Empty:
            continue
        ray.tune.report(metrics, checkpoint=ray.train.Checkpoint(path, filesystem) if path else None)
    thread.join()
    if failure:
        raise failure[0]


def _collect(spec: RunSpec, sweep_dir: str, grid) -> SweepResult:
    trials = []
    searched = list(spec.tune.search_space)
    for result in grid:
        metrics = result.metrics or {}
        trial_id = Path(result.path).name  # trial_dirname_creator names each trial's directory by its id
        history = _history(result, storage.join(sweep_dir, "trials", trial_id, "metrics.csv"))
        values = [row.get(spec.tune.metric) for row in history if row.get(spec.tune.metric) is not None]
        best = (max if spec.tune.mode == "max" else min)(values) if values else None
        trials.append(TrialRecord(
            trial_id=trial_id, status="ERROR" if result.error else "TERMINATED",
            config={k: result.config.get(k) for k in searched} if result.config else {},
            last_metric=metrics.get(spec.tune.metric), best_metric=best, epochs=len(history),
            checkpoint=_checkpoint_location(result, spec), error=_short(result.error), history=history))
    winner = pick_best(trials, spec.tune.mode)
    chosen = best_spec(spec, winner.config) if winner else None
    return SweepResult(sweep_dir=sweep_dir, metric=spec.tune.metric, mode=spec.tune.mode, trials=trials,
                       best_trial=winner, best_spec=chosen, runs=trial_runs(sweep_dir, trials),
                       grid=grid)


def _history(result, metrics_csv: str) -> list[dict]:
    """The trial's epochs: raykit's own metrics.csv (rewritten from the checkpoint on every resume, so an
    epoch redone after an interruption appears once), else Tune's record with repeats dropped."""
    if storage.exists(metrics_csv):
        return read_history_csv(storage.read_text(metrics_csv))
    frame = result.metrics_dataframe
    if frame is None or frame.empty or "epoch" not in frame:
        return []
    by_epoch = {}
    for row in frame.to_dict("records"):
        by_epoch[int(row["epoch"])] = {k: row[k] for k in ("epoch", "train_loss", "train_acc", "val_loss",
                                                            "val_acc", "lr", "global_step") if k in row}
        by_epoch[int(row["epoch"])].update((k, v) for k, v in row.items() if is_metric_column(k))
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _checkpoint_location(result, spec: RunSpec) -> str | None:
    """The trial's best checkpoint by the sweep's metric (or its latest)."""
    best = None
    if result.best_checkpoints:
        best = result.get_best_checkpoint(spec.tune.metric, spec.tune.mode)
    checkpoint = best or result.checkpoint
    return checkpoint.path if checkpoint else None


def _short(error) -> str | None:
    """One line saying why a trial failed (the user's mistake, not Ray's wrapper around it)."""
    if error is None:
        return None
    cause = getattr(error, "cause", None) or error
    text = " ".join(line.strip() for line in str(cause).strip().splitlines())
    return f"{type(cause).__name__}: {text}"[:500]
