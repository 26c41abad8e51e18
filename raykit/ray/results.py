"""Ray Tune's own record of a finished sweep, read back from its experiment directory."""

from __future__ import annotations

import ray.tune

from raykit import storage


def load_result_grid(sweep_dir: str) -> ray.tune.ResultGrid:
    """The ``ResultGrid`` of the sweep in ``sweep_dir`` (a path or URI; the Tune experiment raykit ran
    there), as ``Tuner.fit`` returned it: every trial's config, metrics, checkpoints and errors. Reads
    Tune's experiment state; needs no Ray cluster and runs no trial."""
    filesystem, path = storage.filesystem(sweep_dir)
    analysis = ray.tune.ExperimentAnalysis(path, storage_filesystem=filesystem)
    return ray.tune.ResultGrid(analysis)
