"""The verdict lines of benchmarks/RESULTS.md say what the numbers say."""

from benchmarks.common import verdict


def test_a_median_just_short_of_the_target_does_not_print_as_the_target():
    assert verdict("r", [0.949, 0.93, 1.01], 0.95) == "r: 0.949 (min 0.930, max 1.010); target >= 0.95: **not met**."
    assert (verdict("t", [2.004], 2, at_least=False, digits=1)
            == "t: 2.004 (min 2.004, max 2.004); target < 2: **not met**.")


def test_a_met_or_clearly_missed_target_keeps_the_digits_asked_for():
    assert verdict("r", [0.951, 0.93, 1.01], 0.95) == "r: 0.95 (min 0.93, max 1.01); target >= 0.95: **met**."
    assert verdict("r", [0.91], 0.95) == "r: 0.91 (min 0.91, max 0.91); target >= 0.95: **not met**."
