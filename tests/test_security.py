"""Security without Ray: weights and checkpoints load as data, never as code; specs never run code.

Each loader is fed a file with a live payload: unpickled or deserialised without raykit's guard, it
creates a marker file (each test proves that first). raykit must refuse the file with an error naming
it, and the marker must not appear. The cluster configs' side (private ports, token auth) is in
tests/test_cluster_configs.py.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import pickle
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from raykit.backends.torch import checkpoint as ckpt
from raykit.backends.torch import finetune
from raykit.backends.torch.models import MODELS, build_model
from raykit.checkpoint import MANIFEST, UnsafeFileError, read_manifest
from raykit.schedules import SCHEDULES
from raykit.spec import RunSpec, SpecError, load_spec
from tests.backends.test_torch import tiny_spec

REPO = Path(__file__).resolve().parents[1]
SHAPE = (8, 8, 1)


class RunsCode:
    """Unpickling this runs ``exec``, which creates ``marker``: the stand-in for a malicious file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.fixture
def payload(tmp_path) -> tuple[RunsCode, Path]:
    """A live payload and its marker (checked live: plain unpickling creates the marker)."""
    marker = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(RunsCode(marker)))
    assert marker.exists(), "the payload is not live: the tests below would prove nothing"
    marker.unlink()
    return RunsCode(marker), marker


def reseal(directory: Path, name: str) -> None:
    """Re-write the manifest's checksum of ``name``, as an attacker with write access would, so that only
    the data-only loaders stand between the file and the code in it."""
    manifest = json.loads((directory / MANIFEST).read_text())
    data = (directory / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (directory / MANIFEST).write_text(json.dumps(manifest))
    read_manifest(directory)  # verifies again


# ---------------------------------------------------------------------------------------------------
# torch: finetune.init_from and raykit checkpoints


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_init_from_a_state_dict_with_code_is_refused_not_run(tmp_path, payload, writer):
    evil, marker = payload
    path = tmp_path / "pretrained.pt"
    if writer == "torch.save":  # real weights, and the payload beside them
        torch.save({**build_model(tiny_spec().model, SHAPE, 10).state_dict(), "extra": evil}, path)
    else:  # a bare pickle (protocol 2: torch's data-only unpickler reads that far)
        path.write_bytes(pickle.dumps({"0.weight": evil}, protocol=2))
    spec = tiny_spec(f"finetune.init_from={path}")
    with pytest.raises(UnsafeFileError) as info:
        finetune.load_initial_weights(spec, build_model(spec.model, SHAPE, 10))
    message = str(info.value)
    assert message.startswith(f"finetune.init_from: {str(path)!r}") and "exec" in message and "code" in message
    assert not marker.exists()


@pytest.fixture
def torch_checkpoint(tmp_path) -> tuple[Path, tuple]:
    """A real raykit torch checkpoint of a tiny model, and fresh (model, optimizer, scheduler, scaler)."""
    def parts():
        model = build_model(tiny_spec().model, SHAPE, 10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False)

    model, optimizer, scheduler, scaler = parts()
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    ckpt.save(str(directory), model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
              state={"epoch": 1, "global_step": 1}, metrics={}, rng_states=[ckpt.capture_rng()], spec={})
    return directory, parts()


def plant(directory: Path, name: str, evil: RunsCode) -> Path:
    """Add the payload to a checkpoint file's state dict and re-seal the manifest."""
    path = directory / name
    torch.save({**torch.load(path, weights_only=True), "extra": evil}, path)
    reseal(directory, name)
    return path


@pytest.mark.parametrize("name", [ckpt.WEIGHTS, ckpt.OPTIMIZER, ckpt.SCHEDULER])
def test_resume_refuses_code_in_any_checkpoint_file(torch_checkpoint, payload, name):
    directory, parts = torch_checkpoint
    evil, marker = payload
    path = plant(directory, name, evil)
    with pytest.raises(UnsafeFileError, match=f"^{re.escape(str(path))}: refused: .*exec"):
        ckpt.restore(str(directory), *parts)
    assert not marker.exists()


def test_checkpoint_weights_with_code_are_refused_by_every_loader(torch_checkpoint, payload):
    directory, _ = torch_checkpoint
    evil, marker = payload
    path = plant(directory, ckpt.WEIGHTS, evil)
    refused = f"^{re.escape(str(path))}: refused"
    with pytest.raises(UnsafeFileError, match=refused):
        ckpt.load_weights(str(directory))  # evaluate and export use this
    spec = tiny_spec(f"finetune.init_from={directory}")
    with pytest.raises(UnsafeFileError, match=refused):
        finetune.load_initial_weights(spec, build_model(spec.model, SHAPE, 10))
    assert not marker.exists()


def test_a_clean_checkpoint_still_restores(torch_checkpoint):
    """The refusals above come from the payload, not from loading being broken."""
    directory, parts = torch_checkpoint
    state, rng_states = ckpt.restore(str(directory), *parts)
    assert state["epoch"] == 1 and len(rng_states) == 1


# ---------------------------------------------------------------------------------------------------
# Keras: .keras files (safe mode) and raykit TF checkpoints


def lambda_with_side_effect(marker: str):
    # A closure: Keras serialises its bytecode and the captured path into the .keras file.
    return lambda t: (open(marker, "a").close(), t)[1]


def test_init_from_a_keras_file_with_a_lambda_is_refused_not_run(tmp_path):
    import raykit.backends.tf  # noqa: F401  (sets the Keras backend before Keras loads)
    import keras

    from raykit.backends.tf import finetune as tf_finetune
    from raykit.backends.tf.models import build_model as build_keras_model

    marker = tmp_path / "lambda-ran"
    inputs = keras.Input(SHAPE)
    hidden = keras.layers.Lambda(lambda_with_side_effect(str(marker)))(keras.layers.Flatten()(inputs))
    path = tmp_path / "evil.keras"
    keras.Model(inputs, keras.layers.Dense(10)(hidden)).save(path)
    marker.unlink()  # building the model ran the lambda once
    spec = load_spec(None, ["framework=tf", f"finetune.init_from={path}"])
    with pytest.raises(UnsafeFileError) as info:
        tf_finetune.load_initial_weights(spec, build_keras_model(spec.model, SHAPE, 10))
    assert str(info.value).startswith(f"finetune.init_from: {str(path)!r} refused") and "Lambda" in str(info.value)
    assert not marker.exists()
    keras.models.load_model(path, safe_mode=False, compile=False)  # the file is live without safe mode
    assert marker.exists()


def test_tf_resume_refuses_pickled_objects_in_the_state_archive(tmp_path, payload):
    import raykit.backends.tf  # noqa: F401
    import keras

    from raykit.backends.tf import checkpoint as tf_ckpt
    from raykit.backends.tf.models import build_model as build_keras_model

    evil, marker = payload
    model = build_keras_model(load_spec(None, ["framework=tf"]).model, SHAPE, 10)
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    tf_ckpt.save(str(tmp_path), model=model, optimizers=[optimizer], state={}, metrics={}, spec={})
    with np.load(tmp_path / tf_ckpt.STATE) as arrays:
        state = {key: arrays[key] for key in arrays.files}
    state["model/0"] = np.array([evil], dtype=object)
    np.savez(tmp_path / tf_ckpt.STATE, **state)
    reseal(tmp_path, tf_ckpt.STATE)
    with pytest.raises(UnsafeFileError, match=f"^{re.escape(str(tmp_path / tf_ckpt.STATE))}: refused: model/0"):
        tf_ckpt.restore(str(tmp_path), model, [optimizer])
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# No code runs from a spec or a file: a static scan of raykit/ and jobs/

SCANNED = [REPO / "raykit", REPO / "jobs"]
ALWAYS_CODE = {  # these run code from their input whatever the arguments
    "eval", "exec", "compile", "pickle.load", "pickle.loads", "pickle.Unpickler",
    "cloudpickle.load", "cloudpickle.loads", "dill.load", "dill.loads", "marshal.load", "marshal.loads",
    "shelve.open", "joblib.load", "pandas.read_pickle", "torch.jit.load", "yaml.unsafe_load", "yaml.full_load",
    "yaml.unsafe_load_all", "yaml.full_load_all", "keras.config.enable_unsafe_deserialization",
}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}
# Where raykit imports a module by a computed name, and why that is safe.
DYNAMIC_IMPORTS = {
    ("raykit/user_code.py", "import_factory"),          # model.name's / an augment op's 'package.module:function'
    ("raykit/backends/__init__.py", "load_backend_module"),  # raykit.backends.<registered>.<module>
    ("raykit/backends/__init__.py", "_ensure_builtins"),  # the BUILTIN package names, constants in code
    ("raykit/backends/base.py", "load"),  # a registered BackendInfo's implementation, set by code, never by a spec
}


class _Scan(ast.NodeVisitor):
    """Calls that would run code from data, by their fully qualified names (imports resolved)."""

    def __init__(self):
        self.aliases: dict[str, str] = {}
        self.safe_loader_classes: set[str] = set()
        self.function = "<module>"
        self.problems: list[str] = []
        self.dynamic_imports: list[str] = []

    def qualified(self, node) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Import(self, node):
        for alias in node.names:
            top = alias.name.split(".")[0]
            self.aliases[alias.asname or top] = alias.name if alias.asname else top

    def visit_ImportFrom(self, node):
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"

    def visit_ClassDef(self, node):
        if any(self.qualified(b) in SAFE_YAML_LOADERS | self.safe_loader_classes for b in node.bases):
            self.safe_loader_classes.add(node.name)
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node):
        name = self.qualified(node.func) or ""
        why = self.unsafe(name, node)
        if why:
            self.problems.append(f"line {node.lineno}: {name}: {why}")
        if name in ("importlib.import_module", "__import__"):
            self.dynamic_imports.append(self.function)
        self.generic_visit(node)

    def unsafe(self, name: str, node: ast.Call) -> str:
        if name in ALWAYS_CODE:
            return "runs code from its input"
        if name in ("yaml.load", "yaml.load_all"):
            loader = keyword(node, "Loader", position=1)
            if self.qualified(loader) not in SAFE_YAML_LOADERS | self.safe_loader_classes:
                return "without a SafeLoader"
        if name == "torch.load" and constant(keyword(node, "weights_only")) is not True:
            return "without weights_only=True"
        if name == "numpy.load" and constant(keyword(node, "allow_pickle"), default=False) is not False:
            return "allow_pickle is not False"  # numpy's default is False
        if "keras" in name.split(".") and name.endswith(".load_model") and (
                constant(keyword(node, "safe_mode"), default=True) is not True):
            return "safe_mode is not True"  # Keras's default is True
        return ""


def keyword(call: ast.Call, name: str, position: int | None = None) -> ast.expr | None:
    """The argument expression passed as ``name`` (or at ``position``), or None."""
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return call.args[position] if position is not None and len(call.args) > position else None


_UNKNOWN = object()


def constant(expr: ast.expr | None, default=_UNKNOWN):
    """A literal argument's value; ``default`` when absent; a marker when computed at run time."""
    if expr is None:
        return default
    return expr.value if isinstance(expr, ast.Constant) else _UNKNOWN


def scan(source: str) -> _Scan:
    found = _Scan()
    found.visit(ast.parse(source))
    return found


def scanned_files() -> list[Path]:
    files = [p for root in SCANNED for p in sorted(root.rglob("*.py"))]
    assert len(files) > 20 and any(p.as_posix().endswith("raykit/spec/loading.py") for p in files)
    return files


def test_no_code_runs_from_data_anywhere_in_raykit_or_jobs():
    problems = [f"{p.relative_to(REPO)} {problem}" for p in scanned_files() for problem in scan(p.read_text()).problems]
    assert problems == []


def test_modules_are_imported_by_computed_names_only_where_reviewed():
    found = set()
    for path in scanned_files():
        found |= {(path.relative_to(REPO).as_posix(), f) for f in scan(path.read_text()).dynamic_imports}
    assert found == DYNAMIC_IMPORTS


@pytest.mark.parametrize("source", [
    "eval(text)", "exec(text)", "x = compile(text, 'f', 'exec')", "import pickle\npickle.loads(b)",
    "from pickle import load\nload(f)", "import pickle as p\np.load(f)", "import yaml\nyaml.load(t)",
    "import yaml\nyaml.load(t, Loader=yaml.Loader)", "import yaml\nyaml.load(t, yaml.UnsafeLoader)",
    "import yaml\nyaml.unsafe_load(t)", "import torch\ntorch.load(p)",
    "import torch\ntorch.load(p, weights_only=False)",
    "from torch import load\nload(p, weights_only=flag)", "import numpy as np\nnp.load(p, allow_pickle=True)",
    "import keras\nkeras.models.load_model(p, safe_mode=False)", "import torch\ntorch.jit.load(p)",
    "import marshal\nmarshal.loads(b)",
])
def test_the_scan_catches_code_execution(source):
    assert scan(source).problems, source


def test_the_scan_accepts_data_only_loading():
    source = """
import re, yaml, torch, keras
import numpy as np
class Loader(yaml.SafeLoader): ...
class Strict(Loader): ...
yaml.load(t, Loader=Loader); yaml.load(t, Loader=Strict); yaml.load(t, yaml.CSafeLoader); yaml.safe_load(t)
torch.load(p, map_location="cpu", weights_only=True); np.load(p, allow_pickle=False); np.load(p)
keras.models.load_model(p, safe_mode=True, compile=False); re.compile("x"); model.eval(); torch.compile(m)
"""
    assert scan(source).problems == []


# ---------------------------------------------------------------------------------------------------
# User code comes only from model.name's explicit 'package.module:function'


def spec_fields(cls=RunSpec, prefix=""):
    """(dotted path, metadata) of every spec field."""
    types = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(types[f.name]):
            yield from spec_fields(types[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f.metadata


def test_only_the_model_and_the_loss_name_code_among_choice_fields():
    # (augment.ops' user ops and data.uri's py: factories are other explicit forms, checked where they are read)
    assert [path for path, meta in spec_fields() if meta.get("allow_factory")] == ["model.name", "train.loss"]
    chosen = [path for path, meta in spec_fields() if meta.get("choices") and not meta.get("allow_factory")]
    assert "optim.schedule" in chosen
    for path in chosen:  # a 'module:function' in any other choice field is a validation error
        with pytest.raises(SpecError) as info:
            load_spec(None, [f"{path}=os:getcwd"])
        assert path in info.value.fields, path


def test_only_the_model_registry_imports_user_factories():
    assert MODELS.get("tests.backends.user_models:tiny_linear").__name__ == "tiny_linear"
    with pytest.raises(KeyError, match="optim.schedule: got 'os:getcwd'; accepted: constant"):
        SCHEDULES.get("os:getcwd")


def test_a_factory_that_does_not_import_names_the_field_and_the_value(tmp_path, monkeypatch):
    (tmp_path / "broken_factory_module.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # A module that cannot be found is refused at validation, before Ray starts, naming field and value.
    with pytest.raises(SpecError, match=r"model.name: got 'no_such_package.models:build', but module"):
        load_spec(None, ["model.name=no_such_package.models:build"])
    # One that is found but fails later (no such function, an error while importing) fails on the worker.
    for value, why in (("tests.backends.user_models:no_such_function", "has no callable 'no_such_function'"),
                       ("broken_factory_module:build", "RuntimeError: boom at import")):
        spec = load_spec(None, [f"model.name={value}"])
        with pytest.raises(ImportError) as info:
            build_model(spec.model, SHAPE, 10)
        assert str(info.value).startswith("model.name: ") and repr(value) in str(info.value) and why in str(info.value)
