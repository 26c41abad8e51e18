"""`import raykit` stays light: no torch, TensorFlow or Ray until a run needs them."""

import json
import re
import subprocess
import sys

HEAVY = ["torch", "tensorflow", "keras", "ray"]


def test_import_raykit_does_not_import_frameworks():
    code = ("import json, sys, raykit, raykit.spec, raykit.cli, raykit.api\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_only_raykit_ray_imports_ray_train_and_tune():
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "raykit"
    offenders = []
    # One exception: raykit/sinks.py sets up MLflow on rank 0 through Ray's MLflow integration (neither
    # Train nor Tune's API; imported lazily inside one function).
    ray_import = re.compile(r"^\s*(import ray\b|from ray\b(?!\.air\.integrations\.mlflow import))", re.MULTILINE)
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] == "ray":
            continue
        if ray_import.search(path.read_text()):
            offenders.append(str(path.relative_to(package)))
    assert offenders == []
