"""The search-space language of ``tune.search_space``: dotted spec paths to distributions written as
plain YAML (:mod:`raykit.tuning` builds trials from it, :mod:`raykit.ray.tune` hands it to Ray Tune)::

    optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
    model.name: {choice: [cnn, mlp]}
    train.batch_size: {grid: [32, 64]}
    augment.preset: light            # a fixed value
"""

from __future__ import annotations

from typing import Any, Mapping

from raykit.spec.paths import spec_path_problem

DISTRIBUTIONS = {
    "uniform": "[low, high]", "loguniform": "[low, high], low > 0", "quniform": "[low, high, q]",
    "randint": "[low, high) integers", "choice": "[value, ...]", "grid": "[value, ...] (every one is tried)",
}


def search_space_problems(space: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field path, message)`` problems of a search space (paths and distribution syntax)."""
    problems = []
    for path, value in space.items():
        field = f"tune.search_space.{path}"
        if path.split(".")[0] in ("tune", "name", "storage"):
            problems.append((field, "a sweep cannot search the sweep's own settings; accepted: any other spec path"))
            continue
        path_problem = spec_path_problem(path)
        if path_problem:
            problems.append((field, f"not a spec field: {path_problem}"))
            continue
        problem = _distribution_problem(value)
        if problem:
            problems.append((field, problem))
    return problems


def _distribution_problem(value: Any) -> str:
    if not (isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS):
        return ""  # a fixed value (validated with the trial's spec)
    kind, args = next(iter(value.items()))
    accepted = f"accepted: {{{kind}: {DISTRIBUTIONS[kind]}}}"
    if not isinstance(args, list) or not args:
        return f"got {value!r}; {accepted}"
    if kind in ("choice", "grid"):
        return ""
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    expected = 3 if kind == "quniform" else 2
    if len(args) != expected or len(numbers) != expected or not numbers[0] < numbers[1]:
        return f"got {value!r}; {accepted} with low < high"
    if kind == "loguniform" and numbers[0] <= 0:
        return f"got {value!r}; {accepted}"
    return ""


def has_grid(space: Mapping[str, Any]) -> bool:
    """Whether any entry is a ``{grid: [...]}``."""
    return any(isinstance(v, Mapping) and "grid" in v for v in space.values())


def searched_paths(space: Mapping[str, Any]) -> list[str]:
    """Paths that vary between trials (distributions, not fixed values)."""
    return [path for path, value in space.items()
            if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS]
