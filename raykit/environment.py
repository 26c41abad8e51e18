"""The environment variables a run carries from the driver to Ray: Train workers, Tune trials and
raykit's own Ray tasks (evaluation, prediction) all get the same set from :func:`forwarded_environment`.

Ray copies only its own ``RAY_*`` settings to the processes it starts, so without this a key, endpoint or
cache set in the driver's shell would be missing on the workers of a cluster (or of a local Ray started
earlier). :data:`FORWARDED` is the one list (the README prints it); ``scaling.env_vars`` in the spec adds
or overrides variables by name. Nothing here imports Ray.

Example::

    forwarded_environment({"FOO": "1"})   # {"AWS_REGION": "eu-west-1", ..., "FOO": "1"}
"""

from __future__ import annotations

import os
import re
from typing import Mapping

# (name, or prefix ending in '*') -> what it is for.
FORWARDED = (
    ("RAYKIT_*", "raykit's own settings (RAYKIT_DATA_HOME, RAYKIT_FAULTS)"),
    ("AWS_*", "S3 and S3-compatible storage: credentials, AWS_REGION, AWS_ENDPOINT_URL"),
    ("GOOGLE_APPLICATION_CREDENTIALS", "gs:// storage credentials"),
    ("GOOGLE_CLOUD_PROJECT", "gs:// storage project"),
    ("AZURE_STORAGE_*", "az:// storage (fsspec's adlfs): account name, key, connection string"),
    ("MLFLOW_*", "MLflow: MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME / _PASSWORD, ..."),
    ("DATABRICKS_*", "MLflow on Databricks: DATABRICKS_HOST, DATABRICKS_TOKEN"),
    ("WANDB_*", "Weights & Biases: WANDB_API_KEY, WANDB_ENTITY, WANDB_MODE, WANDB_DIR, ..."),
    ("HF_*", "Hugging Face: HF_TOKEN, HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE"),
    ("TORCH_HOME", "torch's cache of downloaded weights"),
    ("KERAS_HOME", "Keras's configuration and downloaded weights"),
)
_PREFIXES = tuple(pattern[:-1] for pattern, _ in FORWARDED if pattern.endswith("*"))
_NAMES = frozenset(pattern for pattern, _ in FORWARDED if not pattern.endswith("*"))
ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_forwarded(name: str) -> bool:
    """Whether the driver's variable ``name`` goes to the workers (it is in :data:`FORWARDED`)."""
    return name in _NAMES or name.startswith(_PREFIXES)


def forwarded_environment(explicit: Mapping[str, str] | None = None,
                          environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's forwarded variables (from ``environ``, default ``os.environ``) with ``explicit``
    (the spec's ``scaling.env_vars``) set over them."""
    environ = os.environ if environ is None else environ
    return {**{name: value for name, value in environ.items() if is_forwarded(name)}, **(explicit or {})}


def env_var_problems(env_vars: Mapping, field: str = "scaling.env_vars") -> list[tuple[str, str]]:
    """``(field path, message)`` for every entry that is not ``NAME: 'text'``."""
    problems = []
    for name, value in env_vars.items():
        if not isinstance(name, str) or not ENV_VAR_NAME.fullmatch(name):
            problems.append((field, f"got the name {name!r}; accepted: names of letters, digits and '_' not "
                                    "starting with a digit ([A-Za-z_][A-Za-z0-9_]*)"))
        elif not isinstance(value, str):
            problems.append((f"{field}.{name}", f"got {value!r} ({type(value).__name__}); accepted: a string "
                                                "(quote it in YAML: YAML reads 1, true, on as numbers and "
                                                "booleans)"))
    return problems
