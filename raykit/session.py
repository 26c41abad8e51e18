"""What a backend's training loop may ask of the world around it, and nothing more.

The Ray layer builds a :class:`WorkerSession` from Ray Train's context; tests build one by hand with a
stub ``report``. Backends never import Ray.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


def _no_report(metrics: dict, checkpoint_dir: str | None) -> None:
    """Default ``report``: drop the metrics (single-process runs and tests that do not care); the caller
    deletes the checkpoint directory."""


def _identity(model: Any) -> Any:
    return model


@dataclass
class WorkerSession:
    """One training worker's view of the run.

    Attributes:
        rank, world_size, local_rank: the worker's place in the group.
        use_gpu: train on this worker's GPU.
        report: ``report(metrics, checkpoint_dir)``, called the same number of times on every rank;
            ``checkpoint_dir`` is a local directory (rank 0) or None. Who deletes that directory: ``report``
            returns True when it has taken it over (Ray's asynchronous upload copies it to storage while
            training goes on, then deletes it); on any other return, or an exception, the caller deletes it
            as ``report`` returns, so a report that copies what it keeps needs to do nothing.
        resume_dir: a local checkpoint directory to continue from, or None.
        run_dir: where the run's files live (local path or URI), or None to write nothing.
        prepare_model: wraps the model for data-parallel training (DDP through Ray).
        streams: streamed data (Ray Data): split name -> a callable returning one epoch of this rank's
            ``{"x", "y"}`` NumPy batches; None when the loop loads ``spec.data`` into memory itself.
        data_info: input shape, classes and split sizes of streamed data (the driver's plan).
        splits: data held in memory that the driver handed in (datasets given from Python, read from Ray's
            object store), or None when the loop reads ``spec.data`` itself; :func:`raykit.engine.fit` sets it
            to the splits it read (None for streamed data), so that an evaluation after the loop in the same
            process reads them instead of decoding the files again.
        progress_bar: ``progress_bar(total, description)`` -> a bar with ``update(n)``,
            ``set_description(text)`` and ``close()`` (rank 0 with a terminal); None for no bar.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    use_gpu: bool = False
    report: Callable[[dict, str | None], bool | None] = _no_report
    resume_dir: str | None = None
    run_dir: str | None = None
    prepare_model: Callable[[Any], Any] = field(default=_identity)
    streams: dict[str, Callable[[], Iterable[dict]]] | None = None
    data_info: Any = None
    splits: Any = None
    progress_bar: Callable[[int, str], Any] | None = None

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def epoch_bar(self, total_samples: int, description: str):
        """This epoch's progress bar (samples, samples/s, ETA), or one that draws nothing."""
        if self.progress_bar is None or not self.is_chief:
            return _NoBar()
        return self.progress_bar(total_samples, description)

    def log(self, message: str) -> None:
        """Print from rank 0 only: other ranks stay quiet."""
        if self.is_chief:
            # Not print(): under Ray Train, print is also routed to a logger, which shows it twice.
            sys.stdout.write(message + "\n")
            sys.stdout.flush()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (what a worker really held, data included)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass
