"""Validation rules that read more than one field of a run spec (run once the fields are well typed).

Each rule returns ``(field path, message)`` pairs; :func:`raykit.spec.load_spec` raises them together
as one :class:`~raykit.spec.SpecError`. Nothing here imports torch, TensorFlow or Ray.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re
import sys
from pathlib import Path

from raykit.augment import validate_ops
from raykit.backends import backend_info, backend_names
from raykit.backends.base import GPU, GRAD_ACCUM, PRETRAINED_THEN_INIT, ModelZoo
from raykit.environment import env_var_problems
from raykit.losses import loss_problems
from raykit.metrics import scalar_columns
from raykit.spec.fields import USER_FACTORY, field_types
from raykit.spec.schema import EPOCH_METRICS, MONITORED_METRICS, RunSpec, ScalingSpec, SpecError
from raykit.spec.search_space import has_grid, search_space_problems


def cross_field_problems(spec: RunSpec, starting_weights: bool = True) -> list[tuple[str, str]]:
    """Every ``(field path, message)`` problem of an otherwise well-typed spec. Without ``starting_weights``
    the files a run starts from (``model.pretrained``'s, ``finetune.init_from``) are not looked for: a
    trained run's spec, whose weights are its checkpoint's (:func:`raykit.spec.load_trained_spec`)."""
    problems = _data_problems(spec.data)
    problems += storage_problems(spec.storage, "storage")
    if spec.train.batch_size % spec.scaling.num_workers:
        problems.append(("train.batch_size", f"got {spec.train.batch_size}, which {spec.scaling.num_workers} "
                         "workers cannot share evenly; accepted: a multiple of scaling.num_workers"))
    if spec.train.precision == "fp16" and not spec.scaling.use_gpu:
        problems.append(("train.precision", "got 'fp16' with scaling.use_gpu=false; accepted on CPU: fp32, "
                         "bf16"))
    if spec.train.deterministic and spec.train.compile == "max-autotune":
        problems.append(("train.compile", "got 'max-autotune' with train.deterministic=true; max-autotune picks "
                         "kernels by timing them, so results would depend on timing; accepted with "
                         "deterministic: off, default"))
    problems += _resource_problems(spec.scaling)
    problems += loss_problems(spec.train, spec.model.num_classes)
    problems += _metric_mode_problems(spec)
    problems += _finetune_problems(spec, starting_weights)
    if spec.name is not None and not _RUN_NAME.match(spec.name):
        problems.append(("name", f"got {spec.name!r}; accepted: letters, digits, '.', '_', '-' "
                         "(no '/' or spaces), starting with a letter or digit"))
    problems += _backend_problems(spec)
    problems += validate_ops(spec.augment.ops, preset=spec.augment.preset)
    problems += _tune_problems(spec)
    problems += _tracking_problems(spec.train)
    problems += env_var_problems(spec.scaling.env_vars)
    return problems


# Tracking field -> the package it needs (and the raykit extra that installs it).
TRACKING_PACKAGES = {"mlflow_tracking_uri": "mlflow", "wandb_project": "wandb"}


def _tracking_problems(train) -> list[tuple[str, str]]:
    """A tracking service asked for without its package: refused before Ray starts."""
    problems = []
    for name, package in TRACKING_PACKAGES.items():
        value = getattr(train, name)
        if value and importlib.util.find_spec(package) is None:
            problems.append((f"train.{name}", f"got {value!r}, which needs {package}: pip install "
                                              f"'raykit[{package}]' (or pip install {package}); accepted without "
                                              f"it: null"))
    return problems


def _tune_problems(spec: RunSpec) -> list[tuple[str, str]]:
    problems = search_space_problems(spec.tune.search_space)
    for path in spec.tune.search_space:
        if path.startswith("scaling."):  # every trial reserves what the base spec's scaling says
            problems.append((f"tune.search_space.{path}", "a sweep's trials share one resource request, sized from "
                                                         "the spec's scaling section; accepted: set scaling.* "
                                                         "outside the search space"))
    if spec.tune.searcher == "optuna" and has_grid(spec.tune.search_space):
        problems.append(("tune.searcher", "got 'optuna' with a grid in tune.search_space; accepted: choice "
                                          "instead of grid, or searcher random"))
    return problems


def _data_problems(data) -> list[tuple[str, str]]:
    problems = []
    carved = {name: getattr(data, f"{name}_fraction") for name in ("val", "test") if not getattr(data, f"{name}_uri")}
    if sum(carved.values()) >= 0.9:
        problems.append(("data.test_fraction", f"the fractions carved out of the training source sum to "
                         f"{sum(carved.values()):g}; accepted: a sum below 0.9 so that training keeps data"))
    from raykit.data.catalog import NAMED_DATASETS, is_from_python, is_named_dataset  # here: data imports the spec

    if is_from_python(data.uri):  # the splits come from Python: checked once they are there
        return problems + _python_data_problems(data)
    if data.kwargs:
        problems.append(("data.kwargs", f"got {data.kwargs} with data.uri {data.uri!r}; accepted: keyword arguments "
                                        "for a data.uri 'py:package.module:function' factory only, or {}"))
    if not data.val_uri and data.val_fraction == 0:
        problems.append(("data.val_fraction", "got 0 with no data.val_uri, which leaves no validation data; "
                         "accepted: a fraction > 0, or a data.val_uri"))
    if data.train_uri and data.uri != "digits":
        problems.append(("data.train_uri", f"got {data.train_uri!r} with data.uri {data.uri!r}; accepted: one of "
                                           "the two as the training source"))
    for name in ("uri", "train_uri", "val_uri", "test_uri"):
        value = getattr(data, name)
        if value and not (name == "uri" and is_named_dataset(value)):
            found = location_problems(value, f"data.{name}", must_exist=True)
            named = f", or a named dataset ({', '.join(NAMED_DATASETS)})" if name == "uri" else ""
            problems += [(where, message + named) for where, message in found]
    if data.resize and len(data.resize) != 2:
        problems.append(("data.resize", f"got {data.resize}; accepted: [height, width], or [] for no resize"))
    whole = [n for n in ("uri", "train_uri") if str(getattr(data, n) or "").lower().endswith(".npz")
             or getattr(data, n) == "digits"]
    if data.loader == "stream" and (data.format in ("npz", "digits") or (whole and not data.train_uri)
                                    or (data.train_uri and "train_uri" in whole)):
        problems.append(("data.loader", "got 'stream' for a source that is read whole (digits, .npz); accepted: "
                                        "memory or auto, or convert the data to Parquet with `raykit data convert`"))
    return problems


_PY_FACTORY = re.compile(r"^py:[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_PYTHON_RECORD = re.compile(r"^python:([0-9a-f]{12})?$")  # bare while the data is being planned


def _python_data_problems(data) -> list[tuple[str, str]]:
    """A ``py:`` factory (only its form: it is imported where it is called, in the driver; workers never
    need it) or the ``python:`` record of datasets passed from Python, with no other source beside it."""
    problems = []
    if not (_PY_FACTORY.match(data.uri) or _PYTHON_RECORD.match(data.uri)):
        problems.append(("data.uri", f"got {data.uri!r}; accepted: 'py:package.module:function' (a factory), or "
                                     "'python:<12 hex digits>' as a run fed from Python records it"))
    elif data.kwargs and data.uri.startswith("python:"):
        problems.append(("data.kwargs", f"got {data.kwargs} with data.uri {data.uri!r}; accepted: keyword arguments "
                                        "for a 'py:' factory only, or {}"))
    for name in ("train_uri", "val_uri", "test_uri"):
        if getattr(data, name):
            problems.append((f"data.{name}", f"got {getattr(data, name)!r} with data.uri {data.uri!r}, which gives "
                                             "every split; accepted: null"))
    if data.resize:
        problems.append(("data.resize", f"got {data.resize} for data from Python, which is used as given; "
                                        "accepted: [] (resize the arrays or the Ray Dataset first)"))
    return problems


def location_problems(location: str, field: str, must_exist: bool = False) -> list[tuple[str, str]]:
    """A local path (which must exist when ``must_exist``) or a URI whose scheme an installed filesystem
    (pyarrow or fsspec) serves."""
    if "://" not in location:
        if location.startswith("~") and os.path.expanduser(location) == location:
            return [(field, f"got {location!r}: there is no home directory for {location.split('/')[0]!r}; "
                            "accepted: a local path (~ for your own home) or a URI")]
        if must_exist and not _path_exists(location):
            return [(field, f"got {location!r}, which does not exist; accepted: an existing path or a URI")]
        return []
    scheme = location.split("://", 1)[0]
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        return [(field, f"got {location!r}; accepted: a local path or a URI scheme://bucket/path")]
    if scheme not in ("file", "s3", "gs", "gcs", "hdfs") and not _fsspec_knows(scheme):
        return [(field, f"got scheme {scheme!r} in {location!r}, which no installed filesystem serves; accepted: "
                        "file, s3, gs, hdfs, or an fsspec scheme whose package is installed")]
    if scheme == "file" and must_exist and not Path(location[len("file://"):]).exists():
        return [(field, f"got {location!r}, which does not exist; accepted: an existing path or a URI")]
    return []


def _path_exists(location: str) -> bool:
    try:
        return Path(location).expanduser().exists()
    except (ValueError, RuntimeError, OSError):  # a NUL byte, an unknown ~user, a name too long
        return False


def storage_problems(location: str, field: str) -> list[tuple[str, str]]:
    """Run storage must be shared by every Ray process: in-process fsspec stores are refused."""
    if location.startswith("memory://"):
        return [(field, f"got {location!r}: a memory:// store lives inside one process and Ray's workers are "
                        "other processes; accepted: a local path, file://, s3://, gs://, or a shared fsspec store")]
    return location_problems(location, field)


def _fsspec_knows(scheme: str) -> bool:
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:
        return False
    return scheme in registry or scheme in known_implementations


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _metric_mode_problems(spec: RunSpec) -> list[tuple[str, str]]:
    """A monitored metric the spec produces; a loss minimised and an accuracy maximised (the other way round
    is a mistake worth stopping); an export template of the epoch's metrics."""
    problems = []
    produced = scalar_columns(spec.train.metrics) if isinstance(spec.train.metrics, list) else ()
    for section, metric_field in (("checkpoint", "monitor"), ("tune", "metric")):
        metric = getattr(getattr(spec, section), metric_field)
        mode = getattr(spec, section).mode
        if metric not in MONITORED_METRICS and metric not in produced:
            problems.append((f"{section}.{metric_field}", f"got {metric!r}, which this spec does not produce "
                             f"(train.metrics: {spec.train.metrics}); accepted: "
                             f"{', '.join((*MONITORED_METRICS, *produced))}, or add {metric[len('val_'):]!r} to "
                             "train.metrics"))
            continue
        wanted = "min" if metric.endswith("loss") else "max"
        if mode != wanted:
            problems.append((f"{section}.mode", f"got {mode!r} for {section}.{metric_field}={metric!r}; "
                                                f"accepted: {wanted!r} (a {metric} is "
                                                f"{'minimised' if wanted == 'min' else 'maximised'})"))
    template = spec.checkpoint.export_template
    sample = {name: 1 if name in ("epoch", "global_step") else 0.5 for name in (*EPOCH_METRICS, *produced)}
    try:
        name = template.format(**sample)
    except (KeyError, IndexError, ValueError) as exc:
        problems.append(("checkpoint.export_template", f"got {template!r} ({type(exc).__name__}: {exc}); "
                                                       f"accepted: a format string of {', '.join(sample)}"))
    else:
        if "/" in name or not name.strip():
            problems.append(("checkpoint.export_template", f"got {template!r}; accepted: a file name without '/'"))
    return problems


def _finetune_problems(spec: RunSpec, starting_weights: bool = True) -> list[tuple[str, str]]:
    finetune, problems = spec.finetune, []
    location = finetune.init_from
    if starting_weights and location != "scratch" and "://" not in location and not _path_exists(location):
        problems.append(("finetune.init_from", f"got {location!r}, which does not exist; accepted: 'scratch', a "
                                               "raykit checkpoint directory or a state-dict file (path or URI)"))
    for index, pattern in enumerate(finetune.freeze_patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append((f"finetune.freeze_patterns[{index}]", f"got {pattern!r}, not a regex ({exc})"))
    if finetune.unfreeze_every and not (finetune.freeze_first_n or finetune.freeze_patterns):
        problems.append(("finetune.unfreeze_every", f"got {finetune.unfreeze_every} with nothing frozen; set "
                                                    "finetune.freeze_first_n or freeze_patterns, or 0"))
    if starting_weights and spec.model.pretrained == "imagenet":
        problems += _pretrained_problems(spec)
    return problems


# --------------------------------------------------------------------------------------------------
# What the chosen backend has: facts from its BackendInfo (raykit.backends), never `framework == ...`

# Optional features and the field that asks for each: (capability, field path, whether the spec asks for
# it, what is accepted without it).
CAPABILITY_FIELDS = (
    (GRAD_ACCUM, "train.grad_accum_steps", lambda spec: spec.train.grad_accum_steps > 1,
     "1 (raise train.batch_size instead)"),
    (GPU, "scaling.use_gpu", lambda spec: spec.scaling.use_gpu, "false"),
    (PRETRAINED_THEN_INIT, "model.pretrained",
     lambda spec: spec.model.pretrained == "imagenet" and spec.finetune.init_from != "scratch",
     "none together with finetune.init_from (one of the two)"),
)


def _backend_problems(spec: RunSpec) -> list[tuple[str, str]]:
    info = backend_info(spec.framework)  # a registered name: the field's choices are the registry's
    problems = _backend_fact_problems(spec, info)
    for capability, path, asks, accepted in CAPABILITY_FIELDS:
        if asks(spec) and capability not in info.capabilities:
            able = [name for name in backend_names() if capability in backend_info(name).capabilities]
            problems.append((path, f"got {_value_at(spec, path)!r} with framework {info.name}, which does not "
                                   f"support it; accepted with {info.name}: {accepted}"
                                   + (f"; or framework {' or '.join(able)}" if able else "")))
    if info.refusals is not None:
        problems += info.refusals(spec)
    return problems


def require_installed(spec: RunSpec) -> None:
    """Raise :class:`SpecError` when the packages of ``spec.framework`` are not installed here.

    ``raykit.train`` and ``raykit.tune`` (and so the CLI and the jobs) call it before Ray starts. It is not
    part of :func:`~raykit.spec.load_spec`: a spec written for another machine can still be read, checked
    and printed (``raykit spec``) where its framework is missing. The packages are located, never imported.

    Example::

        require_installed(load_spec(None, ["framework=tf"]))
        # without TensorFlow: SpecError "framework: tf needs TensorFlow: pip install 'raykit[tf]' ..."
    """
    problems = framework_install_problems(backend_info(spec.framework))
    if problems:
        raise SpecError(problems)


def framework_install_problems(info) -> list[tuple[str, str]]:
    """``[("framework", message)]`` when a module of ``info.required_modules`` cannot be found, else ``[]``."""
    missing = [module for module in info.required_modules if not _module_found(module)]
    if not missing:
        return []
    install = (f"{info.install_name or ' and '.join(missing)}: pip install 'raykit[{info.install_extra}]'"
               if info.install_extra else f"{' and '.join(missing)}: pip install {' '.join(missing)}")
    installed = [name for name in backend_names() if name != info.name
                 and all(_module_found(module) for module in backend_info(name).required_modules)]
    return [("framework", f"{info.name} needs {install} (not found here: {', '.join(missing)})"
                          + (f"; or accepted here: {', '.join(installed)}" if installed else ""))]


def _module_found(module: str) -> bool:
    if sys.modules.get(module) is not None:  # imported already (None there: an import known to fail)
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _backend_fact_problems(spec: RunSpec, info) -> list[tuple[str, str]]:
    """Fields whose metadata names a ``backend_fact``: the value must be one of the chosen backend's."""
    problems = []
    for path, meta in _fields_with(lambda meta: "backend_fact" in meta):
        value, have = _value_at(spec, path), getattr(info, meta["backend_fact"])
        if value in have:
            continue
        if meta.get("allow_factory") and _zoo_owning(value):
            problems += _zoo_problems(path, value, info)
            continue
        if meta.get("allow_factory") and USER_FACTORY.match(value):
            problems += _factory_module_problems(path, value)
            continue
        factory = ", or a factory 'package.module:function'" if meta.get("allow_factory") else ""
        problems.append((path, f"got {value!r}, which framework {info.name} does not have; accepted with "
                               f"{info.name}: {', '.join(have)}{factory}"))
    return problems


# --------------------------------------------------------------------------------------------------
# Model zoos (BackendInfo.model_zoos): the same checks for every library's zoo, from its ModelZoo facts

# A zoo of at most this many names is listed whole in an error; a larger one (timm's) is named by its listing.
LISTED_ZOO_NAMES = 60


def _zoo_owning(value) -> ModelZoo | None:
    """The model zoo of any registered backend whose prefix (``keras:``, ``timm:``) ``value`` starts with, or
    None: a zoo name is never a ``module:function`` factory, whichever framework the spec chose."""
    return next((zoo for name in backend_names() for zoo in backend_info(name).model_zoos if zoo.owns(value)),
                None)


def _zoo_problems(path: str, value: str, info) -> list[tuple[str, str]]:
    """A zoo name: its zoo must be the chosen backend's, and the name one the zoo lists (no model is built);
    an unknown name gets the closest names of its zoo."""
    zoo = info.zoo_of(value)
    if zoo is None:
        prefix = _zoo_owning(value).prefix
        owners = [name for name in backend_names() if backend_info(name).zoo_of(value)]
        return [(path, f"got {value!r}, a {prefix} model, with framework {info.name}; accepted: framework "
                       f"{' or '.join(owners)} for {prefix} models, or with {info.name}: "
                       f"{', '.join(info.model_names)}{''.join(f', {z.prefix}<name>' for z in info.model_zoos)}")]
    try:
        names = zoo.names()
    except ImportError as exc:
        package = exc.name or zoo.prefix.rstrip(":")
        install = f"raykit[{info.install_extra}]" if info.install_extra else package
        return [(path, f"got {value!r}, which needs {package}: pip install '{install}'")]
    bare = zoo.bare(value)
    if bare in names:
        return []
    close = difflib.get_close_matches(bare, names, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(zoo.prefix + name) for name in close)}?)" if close else ""
    listed = (", ".join(names) if len(names) <= LISTED_ZOO_NAMES
              else f"the {len(names)} names of {zoo.listing}")
    return [(path, f"got {value!r}{hint}, which is not in the {zoo.prefix} zoo; accepted: {zoo.prefix}<name> with "
                   f"<name> one of {listed}")]


def _zoo_weights_problems(model_name: str, zoo) -> list[tuple[str, str]]:
    """``model.pretrained: imagenet`` for a zoo model: the library must have ImageNet weights for it, and the
    file must be in its cache (or be one the driver fetches before Ray starts)."""
    bare = zoo.bare(model_name)
    try:
        if bare not in zoo.names():
            return []  # model.name's own problem says so
        expected, found = zoo.weights_file(bare)
    except ImportError:
        return []  # the library is missing: model.name's problem says so
    except LookupError as exc:
        return [("model.pretrained", f"got 'imagenet' for model.name={model_name!r}: "
                                     f"{str(exc).removeprefix('model.pretrained: ')}; accepted: none")]
    if found is not None or zoo.fetched_when_missing():
        return []
    return [missing_weights_problem(model_name, expected, zoo.why_not_fetched(), zoo.fetch_command(bare))]


def missing_weights_problem(model_name: str, expected: "Path | str", reason: str, fetch: str,
                            where: str | None = None) -> tuple[str, str]:
    """The ``model.pretrained`` problem of an ImageNet weights file that is not in its cache: the file, where it
    was looked for (``where``, default the file's directory), why it was not downloaded, and the one command
    that fetches it."""
    expected = Path(expected)
    return ("model.pretrained", f"got 'imagenet' for model.name={model_name!r}, but {expected.name} is not in "
                                f"{where or expected.parent} and {reason}; fetch it once with {fetch} (or copy "
                                "the file there), or set model.pretrained=none (finetune.init_from takes a weights "
                                "file)")


def _fields_with(wanted, cls: type = RunSpec, prefix: str = "") -> list[tuple[str, dict]]:
    """``(dotted path, metadata)`` of every field whose metadata satisfies ``wanted``."""
    found = []
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(types[f.name]):
            found += _fields_with(wanted, types[f.name], f"{prefix}{f.name}.")
        elif wanted(f.metadata):
            found.append((f"{prefix}{f.name}", f.metadata))
    return found


def _value_at(spec: RunSpec, path: str):
    value = spec
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _pretrained_problems(spec: RunSpec) -> list[tuple[str, str]]:
    info, name = backend_info(spec.framework), spec.model.name
    zoo = info.zoo_of(name)
    if zoo is not None:
        return _zoo_weights_problems(name, zoo)
    if _zoo_owning(name):
        return []  # another backend's zoo: model.name's own problem says so
    available = list(info.imagenet_files)
    if name not in available:
        zoos = (f", or a zoo name ({', '.join(f'{z.prefix}<name>' for z in info.model_zoos)})"
                if info.model_zoos else "")
        return [("model.pretrained", f"got 'imagenet' for model.name={name!r} on {spec.framework}; "
                                     f"accepted with: {', '.join(available) or 'none of its models'}{zoos}")]
    if info.imagenet_weights_file(name) is not None:
        return []
    # The cache function's first docstring line says where the directory comes from ($TORCH_HOME...).
    where = (f"{info.weights_cache()} ({_first_line(info.weights_cache.__doc__)})" if info.weights_cache
             else f"{info.name}'s weights cache")
    fetch = info.imagenet_fetch(name) if info.imagenet_fetch else "the library that made the weights"
    return [missing_weights_problem(name, " or ".join(info.imagenet_files[name]), "raykit never downloads", fetch,
                                    where)]


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].replace("``", "").rstrip(".") if lines else ""


def _factory_module_problems(path: str, factory: str) -> list[tuple[str, str]]:
    """The factory's module must be importable here: the workers import it by the same name, so a typo
    fails now rather than after Ray has started a worker group. Only the module is located (its parent
    packages are imported, the module itself is not run)."""
    module = factory.split(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return []
    return [(path, f"got {factory!r}, but module {module!r} cannot be found on this Python path; accepted: "
                   "a 'package.module:function' importable from the directory raykit runs in (or installed)")]


def _resource_problems(scaling: ScalingSpec) -> list[tuple[str, str]]:
    problems = []
    for key, amount in scaling.resources_per_worker.items():
        path = f"scaling.resources_per_worker.{key}"
        if key.lower() in ("cpu", "gpu") and key not in ("CPU", "GPU"):
            problems.append((path, f"got key {key!r}; Ray's resource names are case-sensitive: use "
                                   f"{key.upper()!r}"))
        elif not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
            problems.append((path, f"got {amount!r}; accepted: a number >= 0"))
        elif key == "GPU" and amount > 0 and not scaling.use_gpu:
            problems.append((path, f"got {amount!r} with scaling.use_gpu=false; set scaling.use_gpu=true "
                                   "to ask for GPUs"))
    return problems
