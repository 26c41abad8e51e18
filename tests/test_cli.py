"""Command-line errors: exit codes and messages, with nothing started."""

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("entry", [["-m", "raykit.cli", "train"], ["jobs/train.py"]])
def test_invalid_spec_exits_2_naming_the_field_without_traceback(entry):
    out = run_cli([*entry, "--set", "optim.lr=-1", "--set", "train.epoch=3"])
    assert out.returncode == 2
    assert "optim.lr" in out.stderr and "train.epoch" in out.stderr and "did you mean 'epochs'" in out.stderr
    assert "Traceback" not in out.stderr
    assert "Started a local Ray" not in out.stderr + out.stdout


def test_missing_config_file_exits_2():
    out = run_cli(["-m", "raykit.cli", "train", "no/such.yaml"])
    assert out.returncode == 2 and "no/such.yaml" in out.stderr


@pytest.mark.parametrize("entry", [["-m", "raykit.cli", "train", "--help"], ["jobs/train.py", "--help"]])
def test_help_shows_usage(entry):
    out = run_cli(entry)
    assert out.returncode == 0 and "--set" in out.stdout


def test_train_help_has_a_real_example():
    out = run_cli(["-m", "raykit.cli", "train", "--help"])
    assert "raykit train jobs/configs/digits_cnn_torch.yaml --set" in out.stdout


def test_spec_command_validates_and_prints_the_resolved_spec():
    import yaml

    from raykit.spec import load_spec

    out = run_cli(["-m", "raykit.cli", "spec", "jobs/configs/digits_cnn_torch.yaml", "--set", "train.epochs=3"])
    assert out.returncode == 0, out.stderr
    assert load_spec(yaml.safe_load(out.stdout)).train.epochs == 3
    out = run_cli(["-m", "raykit.cli", "spec", "--reference"])
    assert out.returncode == 0 and "`scaling.num_workers`" in out.stdout


def test_augment_preview_writes_a_png(tmp_path):
    out_file = tmp_path / "grid.png"
    out = run_cli(["-m", "raykit.cli", "augment-preview", "jobs/configs/digits_cnn_torch.yaml", "--set",
                   "augment.preset=light", "--out", str(out_file), "--rows", "3"])
    assert out.returncode == 0, out.stderr
    assert out_file.read_bytes()[:4] == b"\x89PNG"


COMMANDS = ["train", "tune", "evaluate", "predict", "export", "report", "augment-preview", "spec", "data convert",
            "up", "down"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_a_real_example(command, capsys):
    from raykit.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*command.split(), "--help"])
    text = capsys.readouterr().out
    assert exited.value.code == 0
    assert "examples:" in text and f"raykit {command} " in text  # an example invoking this very command


def test_the_top_level_help_lists_every_command(capsys):
    from raykit.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(command.split()[0] in text for command in COMMANDS)
