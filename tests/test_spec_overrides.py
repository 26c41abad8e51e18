"""Config habits of LightningCLI / Hydra users, without Ray: --set indexes and appends to list fields, and
several config files merge left to right (the Python API, the CLI and the jobs/ scripts)."""

from __future__ import annotations

import pytest
import yaml

import raykit
from raykit.spec import SpecError, load_spec
from raykit.tuning import trial_spec
from tests.conftest import run_cli

BASE = {"model": {"filters": [8, 16], "hidden": [32]},
        "augment": {"ops": [{"op": "rotate", "degrees": 5}, {"op": "hflip"}]},
        "train": {"epochs": 3, "batch_size": 32},
        "tune": {"search_space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}}}


@pytest.fixture
def files(tmp_path):
    """base.yaml (BASE) and exp.yaml, which overrides a list, a scalar and one key of a free-form mapping."""
    base, exp = tmp_path / "base.yaml", tmp_path / "exp.yaml"
    base.write_text(yaml.safe_dump(BASE))
    exp.write_text(yaml.safe_dump({"model": {"filters": [4]}, "train": {"epochs": 7},
                                   "tune": {"search_space": {"model.name": {"choice": ["cnn", "mlp"]}}}}))
    return str(base), str(exp)


def test_an_index_sets_a_field_of_one_list_item():
    spec = load_spec(BASE, ["augment.ops.0.degrees=20", "model.filters.1=48"])
    assert spec.augment.ops == [{"op": "rotate", "degrees": 20}, {"op": "hflip"}]
    assert spec.model.filters == [8, 48]


def test_a_negative_index_counts_from_the_end_and_a_whole_item_can_be_replaced():
    spec = load_spec(BASE, ["augment.ops.-1={op: vflip, p: 0.2}", "model.hidden.-1=64"])
    assert spec.augment.ops[-1] == {"op": "vflip", "p": 0.2} and spec.model.hidden == [64]


def test_plus_equals_appends_a_yaml_value_and_appends_add_up_in_order():
    spec = load_spec(BASE, ["augment.ops+={op: vflip}", "augment.ops+={op: shift, width: 0.2}",
                            "augment.ops.-1.height=0.05"])
    assert [op["op"] for op in spec.augment.ops] == ["rotate", "hflip", "vflip", "shift"]
    assert spec.augment.ops[-1] == {"op": "shift", "width": 0.2, "height": 0.05}


def test_an_index_into_a_list_the_source_left_out_indexes_its_default():
    assert load_spec(None, ["model.filters.0=16"]).model.filters == [16, 64, 128]
    assert load_spec(None, ["augment.ops+={op: hflip}"]).augment.ops == [{"op": "hflip"}]


def test_the_appended_and_indexed_values_are_validated_like_any_other():
    with pytest.raises(SpecError) as caught:
        load_spec(BASE, ["model.filters.0=0"])
    assert caught.value.problems == [("model.filters", "item 0: got 0; accepted: a number >= 1")]
    with pytest.raises(SpecError) as caught:
        load_spec(BASE, ["augment.ops.0.degrees=-1"])
    assert caught.value.fields == ["augment.ops[0].degrees"]
    with pytest.raises(SpecError) as caught:
        load_spec(BASE, ["augment.ops+={op: hflp}"])
    assert caught.value.fields == ["augment.ops[2].op"] and "did you mean 'hflip'" in str(caught.value)


@pytest.mark.parametrize("override, field, words", [
    ("augment.ops.2.degrees=1", "augment.ops.2", ["index 2", "holds 2 items", "0..1", "augment.ops+=VALUE"]),
    ("model.filters.-3=1", "model.filters.-3", ["index -3", "holds 2 items"]),
    ("model.hidden.first=1", "model.hidden.first", ["'first'", "indexed by number", "1 item"]),
    ("optim.lr.0=1", "optim.lr", ["a number", "no sub-key '0'"]),
    ("model.filters.0.size=1", "model.filters.0", ["an integer", "no sub-key 'size'"]),
    ("optim.lr+=1", "optim.lr", ["appends to a list field", "optim.lr=VALUE"]),
    ("augment.ops.0+={p: 1}", "augment.ops.0", ["appends to a list field"]),
])
def test_bad_indexes_and_appends_name_the_key_the_index_and_the_length(override, field, words):
    with pytest.raises(SpecError) as caught:
        load_spec(BASE, [override])
    assert caught.value.fields == [field]
    for word in words:
        assert word in str(caught.value)


def test_indexing_a_list_field_that_a_file_made_something_else_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {filters: 32}\n")
    with pytest.raises(SpecError, match=r"model.filters: got 32 \(int\), which has no items"):
        load_spec(str(path), ["model.filters.0=16"])


def test_a_search_space_path_may_index_a_list():
    base = load_spec(BASE, {"tune.search_space": {"augment.ops.0.degrees": {"choice": [10, 30]}}})
    assert trial_spec(base, {"augment.ops.0.degrees": 30}, "t", "runs").augment.ops[0]["degrees"] == 30


def test_files_merge_left_to_right_mappings_deeply_lists_and_scalars_replaced(files):
    spec = load_spec(list(files), ["train.epochs=9"])
    assert spec.model.filters == [4] and spec.model.hidden == [32]  # exp's list replaces; base's stays
    assert spec.train.batch_size == 32 and spec.train.epochs == 9   # --set applies after every file
    assert [op["op"] for op in spec.augment.ops] == ["rotate", "hflip"]
    assert set(spec.tune.search_space) == {"optim.lr", "model.name"}  # free-form mappings merge too
    assert load_spec(list(reversed(files))).model.filters == [8, 16]


def test_a_problem_in_one_of_several_files_names_that_file(files, tmp_path):
    base, exp = files
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 0}\noptim: {lrr: 0.1}\n")
    with pytest.raises(SpecError) as caught:
        load_spec([base, str(bad)])
    assert f"(set in {bad})" in dict(caught.value.problems)["train.epochs"]
    assert f"(set in {bad})" in dict(caught.value.problems)["optim.lrr"]
    with pytest.raises(SpecError) as caught:  # the same value from --set names no file
        load_spec([base, exp], ["train.epochs=0"])
    assert "set in" not in str(caught.value)
    with pytest.raises(SpecError, match="nope.yaml"):
        load_spec([base, str(tmp_path / "nope.yaml")])


def test_python_api_takes_a_list_of_files_and_refuses_a_bad_one_before_ray(files, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {filters: [0]}\n")
    with pytest.raises(SpecError, match=rf"model.filters: .*\(set in {bad}\)"):
        raykit.train([*files, str(bad)])
    with pytest.raises(SpecError, match="augment.ops.5"):
        raykit.tune(list(files), overrides=["augment.ops.5.p=1"])


def test_cli_spec_merges_files_then_applies_sets(files):
    out = run_cli(["-m", "raykit.cli", "spec", *files, "--set", "augment.ops.0.degrees=20",
                   "--set", "augment.ops+={op: vflip}"])
    assert out.returncode == 0, out.stderr
    spec = load_spec(yaml.safe_load(out.stdout))
    assert spec.model.filters == [4] and spec.train.epochs == 7
    assert [op.get("degrees") for op in spec.augment.ops] == [20, None, None] and spec.augment.ops[2]["op"] == "vflip"


def test_train_job_script_takes_several_files_and_names_the_bad_one(files, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 0}\n")
    out = run_cli(["jobs/train.py", *files, str(bad), "--set", "name=x"])
    assert out.returncode == 2 and f"(set in {bad})" in out.stderr and "Traceback" not in out.stderr
