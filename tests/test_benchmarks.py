"""Benchmarks never fail the suite on their numbers; this only checks that each script runs at tiny size
and writes its table. Each raykit or Ray Train run costs tens of seconds of fixed start-up on a small
machine, so each smoke test makes the fewest runs that still train every side its table compares."""

import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.ray


def shared(ray_address: str) -> dict:
    """Scripts that start their own Ray join the test session's instead (benchmarks/common.py start_ray):
    a Ray start and a cold first run less per script."""
    return {"RAYKIT_BENCH_RAY_ADDRESS": ray_address}


def test_sweep_overhead_benchmark_runs_at_tiny_size(tmp_path, ray_address):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/sweep_overhead.py", "--repeats", "1", "--trials", "1", "--epochs", "1",
                   "--results", str(results)], env_extra=shared(ray_address))
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Sweep trial overhead" in text and "| ratio inline / Train |" in text


def test_data_streaming_benchmark_runs_at_tiny_size(tmp_path, ray_address):
    results = tmp_path / "RESULTS.md"
    # The large set only adds a bigger streamed run (the same code path); --large-rows 0 leaves it out.
    out = run_cli(["benchmarks/data_streaming.py", "--small-rows", "600", "--large-rows", "0", "--repeats", "1",
                   "--epochs", "1", "--workers", "1", "--results", str(results)], env_extra=shared(ray_address))
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Streamed Parquet vs in-memory data" in text and "Throughput ratio stream / memory" in text
    assert text.count("| small (600 images) |") == 3 and "| large" not in text
    assert "| stream |" in text and "| memory |" in text and "| stream, decoded every epoch |" in text


def test_sweeps_benchmark_runs_at_tiny_size(tmp_path, ray_address):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/sweeps.py", "--trials", "1", "--epochs", "1", "--repeats", "1",
                   "--results", str(results)], env_extra=shared(ray_address))
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Sweeps: ASHA vs FIFO" in text and "| ASHA |" in text and "| FIFO |" in text
    assert "Wall-time ratio ASHA / FIFO" in text


def test_gpu_benchmark_script_runs_on_cpu_at_tiny_size(tmp_path, ray_address):
    # benchmarks/gpu.sh runs this script on a GPU machine; here its CPU mode checks the script itself.
    results = tmp_path / "RESULTS.md"
    # (The torch.compile contenders are left out: compiling ResNet-50 on 2 CPU cores takes minutes.)
    out = run_cli(["benchmarks/gpu_resnet50.py", "--device", "cpu", "--precision", "fp32", "--images", "32",
                   "--val-images", "8", "--size", "32", "--batch", "16", "--classes", "4", "--epochs", "1",
                   "--plain", "nchw", "channels_last", "--raykit-compile", "off", "--results", str(results)],
                  env_extra=shared(ray_address))
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## GPU: ResNet-50, raykit vs plain PyTorch" in text
    for row in ("| plain PyTorch, NCHW, eager | ", "| plain PyTorch, channels-last, eager | ",
                "| raykit, 1 Ray Train worker, train.compile=off | "):
        assert row in text and f"{row}failed" not in text
    assert "Images/s raykit (train.compile=off) / best plain" in text


def test_time_to_accuracy_benchmark_runs_at_tiny_size(tmp_path, ray_address):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/time_to_accuracy.py", "--target", "0.5", "--max-epochs", "1", "--repeats", "1",
                   "--only", "raykit-torch", "torch", "--results", str(results)], env_extra=shared(ray_address))
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Time to accuracy on digits" in text
    assert "| raykit torch (2 workers) |" in text and "| plain PyTorch |" in text


def test_toolkit_overhead_benchmark_runs_at_tiny_size(tmp_path, ray_address):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/toolkit_overhead.py", "--repeats", "1", "--epochs", "1", "--results", str(results)],
                  env_extra=shared(ray_address))
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Toolkit overhead" in text and "| wall time of a run |" in text
    assert "| steady-state samples/s per worker |" in text
    assert "| wall time of a run, 1 worker (raykit: inline, no worker group) |" in text
    assert "| worker set-up (Ray worker, framework import, process group) |" in text


def test_scaling_curve_benchmark_runs_at_tiny_size(tmp_path):
    results = tmp_path / "RESULTS.md"
    # One worker count, 2 workers on 2 simulated nodes: DDP across nodes, the path the curve measures.
    out = run_cli(["benchmarks/scaling_curve.py", "--workers", "2", "--nodes", "2", "--repeats", "1", "--epochs", "1",
                   "--results", str(results)])
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Scaling curve" in text and "2 worker nodes of 1 CPU each" in text
    assert "| 2 |" in text and "| 1 |" not in text and "| speed-up vs 2 worker |" in text


def test_loop_vs_torch_benchmark_runs_at_tiny_size(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/loop_vs_torch.py", "--rows", "600", "--epochs", "2", "--repeats", "1",
                   "--results", str(results)])
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Training loop: raykit vs plain PyTorch" in text and "| raykit `fit` (channels-last, auto) |" in text
    assert "| plain PyTorch, NCHW |" in text and "Ratio raykit / plain channels-last (the same layout)" in text


def test_loop_vs_keras_benchmark_runs_at_tiny_size(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/loop_vs_keras.py", "--rows", "600", "--epochs", "2", "--repeats", "1",
                   "--results", str(results)])
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Training loop: raykit vs plain Keras" in text and "| plain Keras `model.fit` |" in text
    assert "Ratio raykit / plain Keras, per repeat:" in text


def test_augment_throughput_benchmark_runs_at_tiny_size(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/augment_throughput.py", "--images", "512", "--batch-size", "64", "--repeats", "1",
                   "--results", str(results)])
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Augmentation throughput: raykit vs torchvision DataLoader" in text
    assert "| torchvision transforms per image, DataLoader (2 workers) |" in text
    assert "Ratio raykit (from uint8) / torchvision, per repeat:" in text


def test_checkpoint_io_benchmark_runs_at_tiny_size(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/checkpoint_io.py", "--arch", "resnet18", "--repeats", "1", "--loop-repeats", "1",
                   "--epochs", "3", "--loop-rows", "40", "--loop-data", "tests/data/cifar10_slice",
                   "--results", str(results)])
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Checkpoint I/O: raykit vs bare torch.save/torch.load" in text
    assert "| bare `torch.save` / `torch.load` |" in text and "| resnet18 | " in text
    assert "resnet18 on 40 CIFAR-10 (JPEG copy) 32x32x3 images (32 training)" in text
    assert "Time lost to checkpointing every epoch, resnet18 CIFAR-10 (JPEG copy) 32x32x3, at most" in text


CIFAR = REPO.parent / "shared" / "data" / "cifar10"


@pytest.mark.skipif(not (CIFAR / "train.parquet").is_file(),
                    reason=f"no CIFAR-10 Parquet files at {CIFAR} (the project's shared data; absent in a fresh clone)")
def test_parity_cifar_benchmark_runs_at_tiny_size(tmp_path, ray_address):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/parity_cifar.py", "--train-rows", "128", "--val-rows", "64", "--test-rows", "64",
                   "--epochs", "1", "--seeds", "0", "--workers", "1", "--results", str(results)],
                  env_extra=shared(ray_address))
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## Framework parity on CIFAR-10" in text and "| epoch | torch val acc | tf val acc |" in text
    assert "| test accuracy, mean over seeds |" in text


def test_cifar_cpu_benchmark_runs_at_tiny_size(tmp_path, ray_address):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/cifar_cpu.py", "--data", "tests/data/cifar10_slice", "--train-rows", "128",
                   "--val-rows", "64", "--test-rows", "64", "--epochs", "2", "--repeats", "1", "--worker-cpus", "1",
                   "--read-cpus", "0.5", "--results", str(results)], env_extra=shared(ray_address))
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## CIFAR-10 on the CPU: raykit vs plain PyTorch" in text
    for row in ("| raykit, 1 Ray Train worker, data in memory |", "| raykit, 1 worker, streamed (Ray Data) |",
                "| plain PyTorch, 1 process"):
        assert row in text
    assert "Images/s streamed / in memory:" in text and "Test-accuracy gap" in text
    assert "| `raykit train`, fresh process |" in text and "Wall raykit / plain, fresh processes:" in text


def test_gpu_script_parses_and_installs_nothing():
    # The device machine has no network: gpu.sh must run from the carried bundle, never install.
    script = REPO / "benchmarks" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert ".gpu/site.txz" in text and "/tmp/site" in text and ".gpu/cifar10" in text
    assert "pip install" not in text and "make install" not in text


def test_gpu_cifar_benchmark_runs_on_cpu_at_tiny_size(tmp_path, ray_address):
    results = tmp_path / "RESULTS.md"
    out = run_cli(["benchmarks/gpu_cifar.py", "--parts", "cifar", "--device", "cpu", "--precision", "fp32",
                   "--data", "tests/data/cifar10_slice", "--train-rows", "16", "--test-rows", "16", "--epochs", "1",
                   "--batch-size", "16", "--results", str(results)], env_extra=shared(ray_address))
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert "## GPU: CIFAR-10 ResNet-18 to the plain baseline's accuracy" in text
    assert "| plain PyTorch (benchmarks/baselines/cifar_torch.py) |" in text
    assert "| raykit, 1 Ray Train worker |" in text
    assert "Wall to A, raykit / plain" in text


def test_gpu_digits_part_times_the_default_job_on_one_gpu_worker(tmp_path, monkeypatch):
    # No Ray here: the command is recorded instead of run, and the run's files it would leave are faked.
    import json
    from types import SimpleNamespace

    from benchmarks import gpu_cifar

    commands = []

    def timed(command, timeout):
        commands.append(command)
        run = Path(tmp_path, "runs", "digits-gpu")
        run.mkdir(parents=True)
        run.joinpath("result.json").write_text(json.dumps({"test_metrics": {"test_acc": 0.97},
                                                            "timings": {"ray_start_s": 4.0, "epochs_s": 6.0}}))
        run.joinpath("metrics.csv").write_text("epoch,epoch_time_s,val_acc\n1,2.5,0.9\n2,2.0,0.95\n")
        return 30.0, None

    monkeypatch.setattr(gpu_cifar, "timed", timed)
    args = SimpleNamespace(device="cuda", digits_epochs=0, timeout=60, results=tmp_path / "RESULTS.md", json=None)
    runs = gpu_cifar.digits(args, tmp_path)
    assert commands[0][2:5] == ["raykit.cli", "train", "jobs/configs/digits_cnn_torch.yaml"]
    assert "scaling.use_gpu=true" in commands[0] and "scaling.num_workers=1" in commands[0]
    assert runs["wall_s"] == 30.0 and runs["train_val_s"] == 4.5 and runs["epochs"] == 2
    text = args.results.read_text()
    assert "| wall, launch to exit | 30.0 |" in text and "| training + validation (2 epochs" in text
    assert "| Ray start or connect | 4.0 |" in text


def test_first_epoch_benchmark_times_the_first_epoch_line_and_writes_its_table(tmp_path):
    # No Ray: its runs are each a cold Ray start or a `raykit up` (a minute at the smallest); the timing of a
    # command's output and the table are what the script adds.
    import sys

    from benchmarks import first_epoch

    fake_run = [sys.executable, "-c", "import time; print('(RayTrainWorker pid=1) epoch 1: 3 layers frozen'); "
                "time.sleep(0.5); print('(RayTrainWorker pid=1) epoch   1/2  train_loss 1.0'); time.sleep(0.5)"]
    timed = first_epoch.timed_command(fake_run, {})
    assert 0.5 <= timed["first"] < timed["wall"]
    with pytest.raises(RuntimeError, match="exited 3"):
        first_epoch.timed_command([sys.executable, "-c", "raise SystemExit(3)"], {})
    runs = {"cold": {"raykit": [{"first": 30.0, "wall": 40.0, "timings": {"ray_start_s": 10.0}}],
                     "minimal": [{"first": 20.0, "wall": 30.0}], "empty": [{"first": 12.0, "wall": 14.0}]},
            "warm": {"raykit": [{"first": 15.0, "wall": 25.0, "up": 9.0, "down": 6.0,
                                 "timings": {"ray_start_s": 2.5}}],
                     "minimal": [{"first": 10.0, "wall": 19.0}], "empty": [{"first": 7.0, "wall": 8.0}]}}
    results = tmp_path / "RESULTS.md"
    first_epoch.write_section(first_epoch.SECTION, first_epoch.render(runs, 2, 1, "Machine: test."), results)
    text = results.read_text()
    assert "## From command to first epoch: cold vs warm local Ray" in text
    assert "| `raykit train --set train.epochs=2` | 30.0 s" in text
    assert "| 0.50 (min 0.50, max 0.50) | <= 20 / <= 10 | NOT met / NOT met |" in text
    assert "| hand-written minimal Ray Train script (`benchmarks/baselines/ray_train_minimal.py`) | 20.0 s" in text
    assert "empty training function (Ray Train's start-up: the floor) | 12.0 s (min 12.0, max 12.0) | 7.0 s" in text
    assert "minus the empty training function's: 18.0 s (min 18.0, max 18.0) cold, 8.0 s (min 8.0, max 8.0) warm" in text
    assert "`raykit up` itself: 9.0 s" in text
    assert "| Ray start or connect | 10.0 s (min 10.0, max 10.0) | 2.5 s" in text and "| data load |" not in text
