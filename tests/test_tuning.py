"""Sweep building blocks without running a sweep: the search-space language, trial specs, resources."""

from __future__ import annotations

import sys

import pytest

from raykit.spec import SpecError, load_spec
from raykit.tuning import best_spec, search_space_problems, searched_paths, trial_spec


def test_search_space_paths_and_distributions_are_validated():
    problems = dict(search_space_problems({
        "optim.lrr": {"loguniform": [1e-4, 1e-1]}, "optim.lr": {"loguniform": [0.0, 1.0]},
        "train.epochs": {"randint": [5]}, "tune.num_samples": {"choice": [1, 2]}, "model.name": {"choice": []},
        "augment.preset": "light"}))
    assert "did you mean 'lr'" in problems["tune.search_space.optim.lrr"]
    assert "low > 0" in problems["tune.search_space.optim.lr"]
    assert "low < high" in problems["tune.search_space.train.epochs"]
    assert "tune.search_space.tune.num_samples" in problems and "tune.search_space.model.name" in problems
    assert "tune.search_space.augment.preset" not in problems  # a fixed value is fine


def test_scaling_cannot_be_searched():
    with pytest.raises(SpecError) as info:
        load_spec(None, ["tune.search_space={scaling.num_workers: {choice: [1, 2]}}"])
    assert info.value.fields == ["tune.search_space.scaling.num_workers"]


def test_optuna_cannot_take_a_grid():
    with pytest.raises(SpecError) as info:
        load_spec(None, ["tune.searcher=optuna", "tune.search_space={optim.lr: {grid: [0.1, 0.2]}}"])
    assert "tune.searcher" in info.value.fields


def test_trial_spec_applies_sampled_values_and_validates_them():
    base = load_spec(None, ["tune.search_space={optim.lr: {loguniform: [1e-4, 1e-1]}}"])
    spec = trial_spec(base, {"optim.lr": 0.02, "model.name": "mlp"}, name="t1", storage="/tmp/s")
    assert (spec.optim.lr, spec.model.name, spec.name, spec.storage) == (0.02, "mlp", "t1", "/tmp/s")
    with pytest.raises(SpecError) as info:
        trial_spec(base, {"train.batch_size": 3}, name="t2", storage="/tmp/s")  # 2 workers cannot share 3
    assert info.value.fields == ["train.batch_size"]
    assert best_spec(base, {"optim.lr": 0.02}).name is None  # retraining the winner starts a new run
    assert searched_paths(base.tune.search_space) == ["optim.lr"]


def test_trials_that_drive_train_hold_no_cpu_and_inline_trials_hold_a_worker():
    from raykit.ray.tune import trial_resources

    assert trial_resources(load_spec()) == {"cpu": 0, "memory": 1}
    assert trial_resources(load_spec(None, ["scaling.num_workers=1"])) == {"cpu": 1, "gpu": 0}
    assert trial_resources(load_spec(None, ["scaling.num_workers=1", "tune.inline_single_worker=false"])) == {
        "cpu": 0, "memory": 1}


def test_concurrency_is_capped_by_what_the_cluster_holds(monkeypatch):
    import ray

    from raykit.ray import tune

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "memory": 1e9})
    assert tune.concurrency_cap(load_spec()) == 1  # 2 workers x 1 CPU each
    assert tune.concurrency_cap(load_spec(None, ["scaling.num_workers=1"])) == 2
    assert tune.concurrency_cap(load_spec(None, ["scaling.num_workers=1", "tune.max_concurrent_trials=8"])) == 2
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 4.0})
    assert tune.concurrency_cap(load_spec(None, ["scaling.use_gpu=true"])) == 2  # 2 GPUs per trial


def test_missing_optuna_is_a_clear_error(monkeypatch):
    from raykit.ray.tune import _searcher

    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.setitem(sys.modules, "ray.tune.search.optuna", None)
    with pytest.raises(ImportError, match="tune.searcher.*pip install"):
        _searcher(load_spec(None, ["tune.searcher=optuna"]))


def test_yaml_distributions_become_tune_samplers():
    from ray.tune.search.sample import Categorical, Float, Integer

    from raykit.ray.tune import to_tune_space

    space = to_tune_space({"optim.lr": {"loguniform": [1e-4, 1e-1]}, "model.name": {"choice": ["cnn", "mlp"]},
                           "train.seed": {"randint": [0, 10]}, "train.batch_size": {"grid": [32, 64]},
                           "augment.preset": "light"})
    assert isinstance(space["optim.lr"], Float) and isinstance(space["model.name"], Categorical)
    assert isinstance(space["train.seed"], Integer) and space["train.batch_size"] == {"grid_search": [32, 64]}
    assert space["augment.preset"] == "light"


def test_every_scheduler_the_spec_accepts_has_one_registered_factory():
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler

    from raykit.ray.tune import TUNE_SCHEDULERS
    from raykit.spec import SCHEDULERS

    assert TUNE_SCHEDULERS.names() == SCHEDULERS
    spec = load_spec(None, ["tune.search_space={optim.lr: {loguniform: [1e-4, 1e-2]}}", "train.epochs=6"])
    built = {name: TUNE_SCHEDULERS.get(name)(spec) for name in SCHEDULERS}
    assert built["fifo"] is None  # Tune's default FIFO
    assert isinstance(built["asha"], ASHAScheduler) and len(built["asha"]._brackets) == 1
    # hyperband: asynchronous (never pauses a trial), one bracket per grace period 1, 2, 4 of 6 epochs
    assert isinstance(built["hyperband"], ASHAScheduler) and len(built["hyperband"]._brackets) == 3
    assert isinstance(built["pbt"], PopulationBasedTraining)
    assert all(isinstance(s, TrialScheduler) for s in built.values() if s is not None)
    with pytest.raises(KeyError, match="tune.scheduler: got 'median'; accepted: fifo, asha"):
        TUNE_SCHEDULERS.get("median")


@pytest.mark.parametrize("max_t, grace, rate, brackets", [(6, 1, 2, 3), (8, 1, 2, 4), (2, 1, 2, 2), (1, 1, 2, 1),
                                                           (27, 1, 3, 4), (26, 1, 3, 3), (10, 3, 2, 2)])
def test_hyperband_has_one_bracket_per_possible_number_of_halvings(max_t, grace, rate, brackets):
    from raykit.ray.tune import hyperband_brackets

    assert hyperband_brackets(max_t, grace, rate) == brackets
