"""The variables a run forwards to Ray's workers, trials and tasks (raykit/environment.py), without Ray:
the list, the spec's scaling.env_vars over it, their validation, and the README's copy of the list.
tests/test_tracking_ray.py checks that they arrive inside real workers."""

from __future__ import annotations

import pytest

from raykit.environment import FORWARDED, forwarded_environment, is_forwarded
from raykit.spec import SpecError, load_spec
from tests.conftest import REPO

DRIVER = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
          "MLFLOW_TRACKING_TOKEN": "m", "WANDB_API_KEY": "w", "WANDB_MODE": "offline", "HF_HOME": "/hf",
          "HF_TOKEN": "h", "TORCH_HOME": "/t", "KERAS_HOME": "/k", "RAYKIT_DATA_HOME": "/d",
          "DATABRICKS_HOST": "https://db", "AZURE_STORAGE_ACCOUNT_NAME": "a", "GOOGLE_CLOUD_PROJECT": "p",
          # not forwarded: the rest of the driver's shell
          "HOME": "/root", "PATH": "/bin", "TORCH_HOMEX": "x", "MY_SETTING": "1", "HFX": "2", "AZURE_CLIENT_ID": "c"}


def test_the_forwarded_variables_are_the_listed_ones():
    forwarded = forwarded_environment(environ=DRIVER)
    assert set(forwarded) == set(list(DRIVER)[:13])
    assert all(forwarded[name] == DRIVER[name] for name in forwarded)
    assert is_forwarded("WANDB_DIR") and is_forwarded("MLFLOW_S3_ENDPOINT_URL") and not is_forwarded("wandb_dir")


def test_spec_env_vars_are_set_over_the_forwarded_ones():
    spec = load_spec(None, ["scaling.env_vars={HF_HOME: /from-spec, MY_SETTING: 'on'}"])
    forwarded = forwarded_environment(spec.scaling.env_vars, environ=DRIVER)
    assert forwarded["HF_HOME"] == "/from-spec" and forwarded["MY_SETTING"] == "on"
    assert forwarded["TORCH_HOME"] == "/t" and "PATH" not in forwarded
    assert forwarded_environment({}, environ={}) == {}


@pytest.mark.parametrize("value, field, accepted", [
    ("{1ABC: x}", "scaling.env_vars", r"\[A-Za-z_\]\[A-Za-z0-9_\]\*"),
    ("{A-B: x}", "scaling.env_vars", "letters, digits and '_'"),
    ("{'A B': x}", "scaling.env_vars", "letters, digits and '_'"),
    ("{ABC: 1}", "scaling.env_vars.ABC", "accepted: a string"),
    ("{ABC: null}", "scaling.env_vars.ABC", "accepted: a string"),
    ("{ABC: on}", "scaling.env_vars.ABC", "got True"),
    ("[ABC]", "scaling.env_vars", "a mapping"),
])
def test_env_vars_that_are_not_name_to_text_are_refused(value, field, accepted):
    with pytest.raises(SpecError, match=accepted) as caught:
        load_spec(None, [f"scaling.env_vars={value}"])
    assert caught.value.fields == [field]


def test_env_vars_may_change_when_a_run_resumes():
    from raykit.api import _may_change

    assert _may_change("scaling.env_vars.HF_HOME")


def test_the_readme_lists_every_forwarded_variable():
    readme = (REPO / "README.md").read_text()
    missing = [pattern for pattern, _ in FORWARDED if f"`{pattern}`" not in readme]
    assert missing == []
