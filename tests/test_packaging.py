"""The conda environment installs exactly what the pip install does."""

import tomllib

import yaml

from tests.conftest import REPO


def test_environment_yml_installs_raykit_with_the_pyproject_pins():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert project["requires-python"] == ">=3.10" and python == "python=3.11"  # what `make` and CI use
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-e .[dev]"]  # the same package, pins and dev extra as `pip install -e '.[dev]'`
    assert "dev" in project["optional-dependencies"]
