"""Where a run's time goes: the driver's and rank 0's phases joined (raykit.timing)."""

import time

import pytest

from raykit.timing import PHASES, Stopwatch, join_timings, process_started_at, timings_line


def test_a_phase_entered_twice_adds_up():
    watch = Stopwatch()
    for _ in range(2):
        with watch.phase("data_s"):
            time.sleep(0.02)
    with pytest.raises(KeyError), watch.phase("model_build_s"):
        raise KeyError("a failing phase is still timed")
    assert watch.seconds["data_s"] >= 0.04 and "model_build_s" in watch.seconds


def test_this_process_was_created_before_now_and_after_boot():
    created = process_started_at()
    assert created is not None and time.time() - 3600 * 24 * 365 < created <= time.time()


def test_driver_and_rank_zero_marks_join_into_consecutive_phases():
    driver = {"spec_and_plan_s": 0.2, "ray_start_s": 3.0, "fit_s": 30.0, "outputs_s": 0.7}
    worker = {"process_started_at": 104.0, "entered_at": 110.0, "left_at": 127.0, "data_s": 0.5,
              "model_build_s": 4.0, "epochs_s": 11.0, "final_evaluation_s": 1.0}
    timings = join_timings(driver, worker, fit_started_at=100.0, fit_ended_at=130.0)
    assert timings == {"spec_and_plan_s": 0.2, "ray_start_s": 3.0, "to_worker_process_s": 4.0, "worker_setup_s": 6.0,
                       "data_s": 0.5, "model_build_s": 4.0, "epochs_s": 11.0, "final_evaluation_s": 1.0,
                       "worker_exit_s": 3.0, "outputs_s": 0.7}
    assert list(timings) == [key for key, _, _ in PHASES if key in timings]  # in the order a run goes
    # From the fit call to its return, the worker-side spans add up to the Train run the driver timed.
    inside = sum(timings[k] for k in ("to_worker_process_s", "worker_setup_s", "worker_exit_s")) + 127.0 - 110.0
    assert inside == pytest.approx(driver["fit_s"])


def test_without_a_process_creation_time_the_span_to_the_loop_is_one_phase():
    worker = {"process_started_at": None, "entered_at": 112.0, "left_at": 120.0}
    timings = join_timings({"fit_s": 21.0}, worker, fit_started_at=100.0, fit_ended_at=121.0)
    assert timings == {"to_worker_process_s": 12.0, "worker_exit_s": 1.0}


def test_without_worker_marks_the_train_run_is_one_phase():
    assert join_timings({"ray_start_s": 1.0, "fit_s": 21.0}, None, 100.0, 121.0) == {"ray_start_s": 1.0,
                                                                                  "train_run_s": 21.0}


def test_the_summary_line_puts_the_larger_phases_first_and_leaves_out_crumbs():
    line = timings_line({"data_s": 0.5, "epochs_s": 11.0, "outputs_s": 0.01, "worker_setup_s": 6.0, "total_s": 30})
    assert line == "epochs 11.0s, worker set-up 6.0s, data 0.5s"
