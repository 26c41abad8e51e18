"""Benchmarks never fail the suite on their numbers; this only checks that each script runs at tiny size
and writes its table."""

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.ray


def test_sweep_overhead_benchmark_runs_at_tiny_size(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/sweep_overhead.py", "--repeats", "1", "--trials", "1", "--epochs", "1",
                   "--results", str(results)])
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Sweep trial overhead" in text and "| ratio inline / Train |" in text
