"""Imports: `import raykit` stays light (no torch, TensorFlow or Ray until a run needs them), every module
imports on its own as the first raykit module of a process, and only raykit/ray/ imports Ray Train and Tune."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_module_graph import all_modules, neutral_modules

REPO = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "tensorflow", "keras", "ray"]

IMPORT_EACH = """
import json, sys
heavy, results = {heavy!r}, {{}}
for name in {modules!r}:
    for loaded in [m for m in sys.modules if m == "raykit" or m.startswith("raykit.")]:
        del sys.modules[loaded]  # each module imported first, as a fresh interpreter would
    try:
        __import__(name)
        results[name] = [m for m in heavy if m in sys.modules] if {light!r} else []
    except Exception as exc:
        results[name] = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps(results))
"""


def import_each(modules: list[str], light: bool) -> dict:
    code = IMPORT_EACH.format(heavy=HEAVY, modules=modules, light=light)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_light_module_imports_first_and_alone_without_a_framework():
    """The neutral modules and the backends' facts (their ``__init__``): each imports as the first raykit
    module of a process, and none of them pulls in torch, TensorFlow, Keras or Ray."""
    light = [*neutral_modules(), "raykit.backends", "raykit.backends.base", "raykit.backends.torch",
             "raykit.backends.tf"]
    assert import_each(light, light=True) == {name: [] for name in light}


@pytest.mark.parametrize("group", ["raykit.ray.", "raykit.backends.torch.", "raykit.backends.tf."])
def test_every_module_of_a_framework_imports_first_and_alone(group):
    # One process per group: torch and TensorFlow in one process can crash (see tests/conftest.py).
    modules = [name for name in all_modules() if name.startswith(group)]
    assert modules
    assert import_each(modules, light=False) == {name: [] for name in modules}


@pytest.mark.parametrize("trainer, class_name, module, config, heavy", [
    ("tensorflow", "TensorflowTrainer", "raykit.ray.tensorflow", "TensorflowConfig", ("tensorflow", "keras")),
    ("torch", "TorchTrainer", "raykit.ray.torch_trainer", "TorchConfig", ("torch",)),
])
def test_a_trainer_loads_without_its_framework(trainer, class_name, module, config, heavy):
    # The driver builds it and the Train controller unpickles its backend config and the train function's
    # context manager: neither needs the framework, which only the workers import.
    code = (f"import sys, pickle; from raykit.ray.trainer import trainer_class; trainer = trainer_class({trainer!r}); "
            f"from {module} import {config} as Config; config = pickle.loads(pickle.dumps(Config())); "
            "pickle.loads(pickle.dumps(config.train_func_context)); "
            f"print(trainer.__name__, [m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [class_name, "[]"]


def test_only_raykit_ray_imports_ray_train_and_tune():
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "raykit"
    offenders = []
    # One exception: raykit/sinks.py sets up MLflow and W&B on rank 0 through Ray's integrations (neither
    # Train nor Tune's API; imported lazily inside one function).
    ray_import = re.compile(r"^\s*(import ray\b|from ray\b(?!\.air\.integrations\.(mlflow|wandb) import))",
                            re.MULTILINE)
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] == "ray":
            continue
        if ray_import.search(path.read_text()):
            offenders.append(str(path.relative_to(package)))
    assert offenders == []


@pytest.mark.parametrize("use_gpu, backend", [(False, "gloo"), (True, "nccl")])
def test_the_torch_trainer_picks_the_process_group_backend_as_ray_s_does(use_gpu, backend):
    from ray.train import ScalingConfig

    from raykit.ray.torch_trainer import TorchTrainer, process_group_backend

    trainer = TorchTrainer(lambda config: None, scaling_config=ScalingConfig(num_workers=2, use_gpu=use_gpu))
    assert trainer.backend_config.backend == backend
    assert process_group_backend(None, {"GPU": 1} if use_gpu else {"CPU": 1}) == backend
    assert process_group_backend("gloo", {"GPU": 1}) == "gloo"


def test_a_run_without_datasets_starts_no_dataset_manager():
    from ray.train import ScalingConfig
    from ray.train.v2._internal.callbacks import DatasetsCallback

    from raykit.ray.trainer import trainer_class

    def kinds(trainer) -> set:
        return {type(callback) for callback in trainer._create_default_callbacks()}

    for name in ("torch", "tensorflow", "data_parallel"):
        plain = trainer_class(name)(lambda config: None, scaling_config=ScalingConfig(num_workers=1))
        streamed = trainer_class(name)(lambda config: None, scaling_config=ScalingConfig(num_workers=1),
                                       datasets={"train": lambda: None})  # Ray calls it only at worker start
        assert DatasetsCallback not in kinds(plain) and DatasetsCallback in kinds(streamed)
