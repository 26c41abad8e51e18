"""Packaging: ranges in pyproject.toml, the frameworks as extras, exact versions in constraints.txt (which
`make`, conda and the image install with), a named error for a framework that is not installed,
`python -m raykit` and `raykit --version`."""

import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from raykit.cli import EXIT_USAGE, main
from tests.conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
FRAMEWORKS = {"torch", "torchvision", "tensorflow", "tensorflow-cpu", "keras"}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict[str, str]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+]+", line), f"not an exact pin: {line!r}"
            name, version = line.split("==")
            found[normalised(name)] = version
    return found


def test_the_library_states_ranges_and_no_framework():
    core = [Requirement(text) for text in PROJECT["dependencies"]]
    assert not [str(r) for r in core if any(spec.operator in ("==", "===") for spec in r.specifier)]
    assert not {normalised(r.name) for r in core} & FRAMEWORKS
    assert {"ray", "pyarrow", "fsspec", "pillow", "pyyaml", "numpy", "scikit-learn", "tensorboardx"} <= \
        {normalised(r.name) for r in core}


def test_each_framework_and_integration_is_an_extra_and_all_holds_what_a_cpu_machine_needs():
    names = {extra: {normalised(Requirement(text).name) for text in texts} for extra, texts in EXTRAS.items()}
    assert names["torch"] == {"torch", "torchvision", "timm", "safetensors", "huggingface-hub"} and names["tf"] == {"tensorflow-cpu", "keras"}
    assert names["tf-gpu"] == {"tensorflow", "keras"} and "and-cuda" in Requirement(EXTRAS["tf-gpu"][0]).extras
    assert names["mlflow"] == {"mlflow-skinny"} and names["wandb"] == {"wandb"}
    everything = Requirement(EXTRAS["all"][0])
    assert everything.name == "raykit" and everything.extras == set(EXTRAS) - {"all", "dev", "tf-gpu"}


def test_constraints_pin_every_requirement_within_its_range():
    pinned = constraints()
    requirements = [Requirement(text) for text in PROJECT["dependencies"]]
    requirements += [Requirement(text) for extra, texts in EXTRAS.items() if extra != "all" for text in texts]
    for requirement in requirements:
        version = pinned.get(normalised(requirement.name))
        assert version is not None, f"{requirement.name} has no pin in constraints.txt"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement} excludes {version}"
    assert pinned["ray"].startswith("2.60.") and pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"


def test_make_installs_everything_with_the_constraints_and_reinstalls_when_they_change():
    makefile = (REPO / "Makefile").read_text()
    stamp_rule = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.MULTILINE).group(1).split()
    assert "$(CONSTRAINTS)" in stamp_rule and "pyproject.toml" in stamp_rule
    assert re.search(r"^CONSTRAINTS := constraints.txt$", makefile, re.MULTILINE)
    assert "pip install -c $(CONSTRAINTS) -e '.[all,dev]'" in makefile


def test_environment_yml_installs_what_make_does():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert PROJECT["requires-python"] == ">=3.10" and python == "python=3.11"  # what `make` and CI use
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-c constraints.txt", "-e .[all,dev]"]


@pytest.fixture
def without_tensorflow(monkeypatch):
    """This process as one where TensorFlow and Keras are not installed (and Ray must not start)."""
    for module in ("tensorflow", "keras"):
        monkeypatch.setitem(sys.modules, module, None)  # importlib.util.find_spec then finds nothing

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a spec whose framework is not installed")

    monkeypatch.setattr("raykit.ray.cluster.connect", no_ray)


EXPECTED = "framework: tf needs TensorFlow: pip install 'raykit[tf]' (not found here: tensorflow, keras)"


@pytest.mark.parametrize("command", ["train", "tune", "augment-preview"])
def test_a_framework_that_is_not_installed_exits_2_naming_the_field_and_the_install(command, without_tensorflow,
                                                                                   capsys, tmp_path):
    assert main([command, "--set", "framework=tf", "--set", f"storage={tmp_path}"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert EXPECTED in err and "accepted here: torch" in err and "Traceback" not in err


def test_the_python_api_refuses_it_too_but_a_spec_for_another_machine_still_prints(without_tensorflow, capsys):
    import raykit

    with pytest.raises(raykit.SpecError, match=re.escape(EXPECTED)):
        raykit.train(None, ["framework=tf"])
    assert main(["spec", "--set", "framework=tf"]) == 0 and "framework: tf" in capsys.readouterr().out


def test_a_job_script_refuses_it_before_ray_starts():
    # jobs/train.py as `ray job submit` runs it, in a Python where TensorFlow cannot be imported.
    code = ("import runpy, sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
            "sys.argv = ['jobs/train.py', '--set', 'framework=tf']; runpy.run_path('jobs/train.py', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == EXIT_USAGE, out.stderr[-2000:]
    assert EXPECTED in out.stderr and "Started a local Ray instance" not in out.stderr


def test_python_dash_m_raykit_is_the_raykit_command():
    out = subprocess.run([sys.executable, "-m", "raykit", "spec", "--set", "optim.lr=0.5"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lr: 0.5" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "raykit", "spec", "--set", "optim.lr=-1"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == EXIT_USAGE and "optim.lr" in bad.stderr


VERSION_AND_IMPORTS = ("import atexit, sys; from raykit.cli import main; atexit.register(lambda: print('imported', "
                       "[m for m in ('torch', 'tensorflow', 'ray') if m in sys.modules], file=sys.stderr)); sys.exit(main())")


@pytest.mark.parametrize("entry", [["-m", "raykit"], ["-c", VERSION_AND_IMPORTS]])
def test_version_prints_raykit_ray_torch_and_tensorflow_and_exits_0(entry):
    from importlib import metadata

    import raykit

    out = subprocess.run([sys.executable, *entry, "--version"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["raykit"] == raykit.__version__ and lines["ray"] == metadata.version("ray")
    assert lines["torch"] == metadata.version("torch")
    assert lines["tensorflow"] == f"{metadata.version('tensorflow-cpu')} (tensorflow-cpu)"  # the CPU build, named
    if entry[0] == "-c":
        assert "imported []" in out.stderr  # read from metadata: no framework and no Ray imported


def test_version_says_not_installed_for_a_missing_package(monkeypatch):
    from importlib import metadata

    from raykit import versions

    real = metadata.version

    def version(name):
        if name in ("tensorflow", "tensorflow-cpu"):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    assert "tensorflow not installed" in versions.version_text().splitlines()
    assert f"torch {real('torch')}" in versions.version_text().splitlines()
