"""A single-worker run trained in the driver process itself: no Ray start, no worker process.

``raykit train`` with one worker on this machine spends most of a small run's first minute starting Ray and
a Train worker group (6-8 s on 2 cores) for a loop that could run where the driver already is. Here the same
epoch driver (:func:`raykit.engine.fit`) runs in this process, and what the worker-group path leaves is left
the same way: checkpoints ``<run>/checkpoint_epoch=NNNN`` with the same manifests, kept and ranked by Ray
Train's own rules in Ray's own snapshot (:mod:`raykit.retention`), so either path continues the other's run;
the same resume from the latest checkpoint that verifies (:mod:`raykit.resume`); the test evaluation of the
best checkpoint. ``scaling.inline`` chooses (:func:`chosen`). Nothing here imports Ray Train.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from raykit import engine, storage
from raykit.data.from_python import GivenPlan
from raykit.resume import CheckpointNames, best_test_metrics, evaluate_stored_checkpoint, local_directory, \
    verified_resume
from raykit.retention import Retention, commit_dir
from raykit.session import WorkerSession
from raykit.spec import RunSpec, SpecError


@dataclass
class TrainOutcome:
    """What the driver needs from a finished run, trained by a worker group or inline."""

    metrics: dict  # rank 0's last reported metrics
    best_checkpoint: str | None  # path or URI
    best_metrics: dict | None
    worker_return: dict | None  # rank 0's return value: history and best metric


def refusals(spec: RunSpec, plan, address: str | None = None) -> list[str]:
    """Why this run needs Ray's worker group (empty: it can train inline)."""
    scaling, problems = spec.scaling, []
    if scaling.num_workers != 1:
        problems.append(f"scaling.num_workers is {scaling.num_workers} (inline trains one worker)")
    if scaling.max_failures != 0:
        problems.append(f"scaling.max_failures is {scaling.max_failures} (restarts from a checkpoint are the "
                        "worker group's)")
    if plan.loader == "stream":
        problems.append("the data is streamed through Ray Data (data.loader)")
    if isinstance(plan, GivenPlan) and plan.datasets is not None:
        problems.append("Ray Datasets were given from Python")
    if scaling.use_gpu and not local_gpu():
        problems.append("scaling.use_gpu is true and this machine shows no GPU")
    problems += _ray_in_use(address)
    return problems


def _ray_in_use(address: str | None) -> list[str]:
    """A Ray this run should join: an address given, this process connected already, or a Ray that
    ``raykit up`` / ``ray start`` left running here (warm, it starts workers fast, and it is the user's
    cluster)."""
    if address or os.environ.get("RAY_ADDRESS"):
        return [f"a Ray address is given ({address or os.environ['RAY_ADDRESS']})"]
    from raykit.ray.cluster import running_local_ray  # Ray's core only: reads its address file

    running = running_local_ray()
    return [f"a local Ray is running at {running} (raykit up / ray start)"] if running else []


def local_gpu() -> bool:
    """Whether this machine shows an NVIDIA GPU to this process (without importing a framework)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False


def chosen(spec: RunSpec, plan, address: str | None = None) -> bool:
    """Whether this run trains inline, as ``scaling.inline`` says: ``auto`` when nothing needs the worker
    group (and this process has not connected to Ray itself: the user's ``ray.init()`` says where to run),
    ``on`` always (refused when something needs the group), ``off`` never. Raises SpecError before anything
    starts."""
    if spec.scaling.inline == "off":
        return False
    problems = refusals(spec, plan, address)
    if spec.scaling.inline == "on":
        if problems:
            raise SpecError([("scaling.inline", f"got 'on', but {'; and '.join(problems)}; accepted: 'on' only for "
                                                "one worker with max_failures 0, in-memory data and no Ray to join, "
                                                "else 'auto' or 'off'")])
        return True
    ray = sys.modules.get("ray")
    return not problems and not (ray is not None and getattr(ray, "is_initialized", lambda: False)())


def fit(spec: RunSpec, run_dir: str, plan) -> TrainOutcome:
    """Train ``spec`` here, continuing the run in ``run_dir`` from its latest checkpoint that verifies."""
    entered_at = time.time()
    retention, names = Retention.of(run_dir, spec), CheckpointNames()
    latest = retention.latest_location()
    name = os.path.basename(latest) if latest else ""
    given = _given_arrays(plan)
    with local_directory(latest) as resume_dir, verified_resume(resume_dir, name, run_dir, names) as resume_dir:
        session = WorkerSession(use_gpu=spec.scaling.use_gpu, resume_dir=resume_dir, run_dir=run_dir,
                                report=_Reporter(retention, names, run_dir), splits=given.arrays if given else None,
                                progress_bar=_progress_bar())
        result = engine.fit(spec, session)
    best = retention.best()
    started = time.perf_counter()
    result["test_metrics"] = best_test_metrics(spec, run_dir, best[0] if best else None, session.splits)
    result["timings"]["final_evaluation_s"] = time.perf_counter() - started
    result["timings"].update(entered_at=entered_at, left_at=time.time())
    return TrainOutcome(metrics=result["history"][-1] if result["history"] else {},
                        best_checkpoint=storage.join(run_dir, best[0]) if best else None,
                        best_metrics=best[1] if best else None, worker_return=result)


def evaluate(spec: RunSpec, checkpoint: str, plan) -> dict:
    """The test metrics of ``checkpoint``, in this process (where the worker-group path sends a Ray task)."""
    return evaluate_stored_checkpoint(spec, checkpoint, "test", _given_arrays(plan))


def _given_arrays(plan) -> GivenPlan | None:
    """The plan of NumPy arrays given from Python (the loop and the evaluation read them as held), or None
    for the spec's own data, which they read themselves."""
    return plan if isinstance(plan, GivenPlan) else None


class _Reporter:
    """``session.report`` of an inline run: each checkpoint copied whole into the run directory under its
    epoch's name, then registered (ranked, the record written, dropped ones deleted) as Ray's checkpoint
    manager does with a worker's."""

    def __init__(self, retention: Retention, names: CheckpointNames, run_dir: str):
        self.retention, self.names, self.run_dir = retention, names, run_dir

    def __call__(self, metrics: dict, checkpoint_dir: str | None) -> bool:
        if checkpoint_dir is None:
            self.retention.count_report()
            return False
        name = self.names.for_epoch(metrics["epoch"])
        commit_dir(checkpoint_dir, storage.join(self.run_dir, name))
        self.retention.register(name, metrics)
        return False  # copied: the engine deletes its local directory


def _progress_bar():
    """A bar per epoch where someone watches (a terminal), as the worker-group path draws through Ray."""
    if not sys.stdout.isatty():
        return None
    from tqdm import tqdm

    return lambda total, description: tqdm(total=total, desc=description, unit="img", leave=False)

