"""The GPU image's install (cluster/Dockerfile), checked without a Docker engine: its pip lines read
statically, and its requirements resolved by pip against the constraints file (``--dry-run``)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "cluster" / "Dockerfile"
GPU_CONSTRAINTS = "cluster/constraints-gpu.txt"
CUDA_RUNTIME = re.compile(r"^(nvidia-|cuda-|triton$)")  # torch's and TensorFlow's CUDA wheels


def instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(part.split()) for part in "\n".join(lines).replace("\\\n", " ").splitlines() if part.strip()]


def build_args(text: str) -> dict[str, str]:
    return dict(line.split(" ", 1)[1].split("=", 1) for line in instructions(text) if line.startswith("ARG "))


def pip_installs(text: str) -> list[list[str]]:
    """The arguments of every ``pip install`` the image runs, with its build arguments filled in."""
    args = build_args(text)
    found = []
    for line in instructions(text):
        if not line.startswith("RUN "):
            continue
        for command in line[4:].split("&&"):
            words = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], word) for word in shlex.split(command)]
            if words[:2] == ["pip", "install"]:
                found.append(words[2:])
    return found


def pins(path: Path) -> dict[str, str]:
    """``name -> version`` of a constraints file (names normalised as pip does)."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def extras_of(requirement: str) -> set[str]:
    return set(re.fullmatch(r"\.\[(.*)\]", requirement).group(1).split(","))


def test_every_pip_install_of_the_image_uses_the_extras_and_the_constraints_file():
    installs = pip_installs(DOCKERFILE.read_text())
    assert len(installs) == 2  # the dependencies' layer, then raykit itself by the same command
    for words in installs:
        assert "--no-deps" not in words
        assert words[words.index("-c") + 1] == GPU_CONSTRAINTS
        assert words[words.index("--extra-index-url") + 1].startswith("https://download.pytorch.org/whl/cu")
        requirements = [word for word in words if not word.startswith("-")
                        and word not in (GPU_CONSTRAINTS, words[words.index("--extra-index-url") + 1])]
        assert len(requirements) == 1 and requirements[0].startswith(".[")  # no hand-kept package list
    assert installs[1] == installs[0][:-1] + ["-e", installs[0][-1]]


def test_the_image_installs_all_extras_with_the_gpu_tensorflow():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    everything = extras_of(extras["all"][0].replace("raykit", "."))
    image = extras_of(pip_installs(DOCKERFILE.read_text())[0][-1])
    assert image == everything - {"tf"} | {"tf-gpu"}
    assert any(requirement.startswith("tensorflow[and-cuda]") for requirement in extras["tf-gpu"])


def test_the_gpu_constraints_are_constraints_txt_without_torchs_cuda_13_runtime():
    ordinary, gpu = pins(REPO / "constraints.txt"), pins(REPO / GPU_CONSTRAINTS)
    assert gpu == {name: version for name, version in ordinary.items() if not CUDA_RUNTIME.match(name)}
    assert {name for name in ordinary if CUDA_RUNTIME.match(name)}  # the section the GPU file leaves out
    assert gpu["torch"] == ordinary["torch"] and gpu["tensorflow"] == ordinary["tensorflow-cpu"]


def index_reachable(url: str = "https://pypi.org/simple/pip/") -> str | None:
    """None when the package index answers, else why not."""
    try:
        urllib.request.urlopen(url, timeout=10).close()
        return None
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} unreachable: {exc}"


def dry_run(tmp_path: Path, extras: set[str], torch_index: str | None) -> dict:
    """Resolve the image's first pip line as the image does (raykit's pyproject.toml with an empty package,
    the constraints files beside it) with ``pip install --dry-run``; pip's installation report."""
    words = pip_installs(DOCKERFILE.read_text())[0]
    for name in ("pyproject.toml", "README.md", "constraints.txt", GPU_CONSTRAINTS):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "raykit").mkdir()
    (tmp_path / "raykit" / "__init__.py").write_text('__version__ = "0"\n')
    options = words[:-1]
    if torch_index is None:
        at = options.index("--extra-index-url")
        options = options[:at] + options[at + 2:]
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), *options, f".[{','.join(sorted(extras))}]"]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


def assert_pinned(resolved: dict[str, str]) -> None:
    """Everything the image would install is at constraints-gpu.txt's version, except the CUDA runtime
    (pinned by torch and TensorFlow themselves) and raykit."""
    gpu = pins(REPO / GPU_CONSTRAINTS)
    unpinned = sorted(name for name in resolved if name not in gpu and not CUDA_RUNTIME.match(name))
    assert unpinned == ["raykit"]
    assert {name: version for name, version in resolved.items() if name in gpu} == \
        {name: gpu[name] for name in resolved if name in gpu}


def test_the_image_requirements_resolve_to_the_constraints_cpu_part(tmp_path):
    """The image's pip line with TensorFlow's CPU build in place of tf-gpu, and torch from the package index
    rather than PyTorch's CUDA index (the same version): resolving tensorflow[and-cuda] means downloading
    about 3 GB of CUDA wheels (~75 s here), too much for every test run; RAYKIT_TEST_GPU_RESOLVE=1 runs
    the next test, which does."""
    if why := index_reachable():
        pytest.skip(why)
    extras = extras_of(pip_installs(DOCKERFILE.read_text())[0][-1]) - {"tf-gpu"} | {"tf"}
    resolved = dry_run(tmp_path, extras, torch_index=None)
    assert_pinned(resolved)
    assert resolved["torch"] == "2.14.1" and resolved["tensorflow-cpu"] == pins(REPO / GPU_CONSTRAINTS)["tensorflow"]


@pytest.mark.skipif(os.environ.get("RAYKIT_TEST_GPU_RESOLVE") != "1",
                    reason="downloads ~3 GB of CUDA wheels to resolve; set RAYKIT_TEST_GPU_RESOLVE=1 to run it")
def test_the_image_requirements_resolve_to_the_constraints_with_the_gpu_builds(tmp_path):
    """The image's whole pip line; torch from PyTorch's CUDA index where that answers (it does not from
    the machines this was written on: then PyPI's torch, the same version)."""
    if why := index_reachable():
        pytest.skip(why)
    torch_index = pip_installs(DOCKERFILE.read_text())[0]
    torch_index = torch_index[torch_index.index("--extra-index-url") + 1]
    extras = extras_of(pip_installs(DOCKERFILE.read_text())[0][-1])
    resolved = dry_run(tmp_path, extras, torch_index=None if index_reachable(torch_index + "/torch/") else torch_index)
    assert_pinned(resolved)
    assert "tensorflow-cpu" not in resolved and resolved["tensorflow"] == pins(REPO / GPU_CONSTRAINTS)["tensorflow"]
    assert any(name.endswith("-cu12") for name in resolved)  # tensorflow[and-cuda]'s CUDA 12 libraries
