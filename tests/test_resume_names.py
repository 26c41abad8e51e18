"""Which checkpoint a resume starts from when the latest ones are damaged, and where the epochs trained
again are written (never over a checkpoint Ray still holds)."""

from __future__ import annotations

import pytest

from raykit.checkpoint import CheckpointError
from raykit import resume



def _run_dir(tmp_path, names: list[str]):
    for name in names:
        (tmp_path / name).mkdir()
    return str(tmp_path)


def _resume(monkeypatch, run_dir: str, latest: str, damaged: set[str]):
    def read_manifest(directory):
        if any(str(directory).endswith(name) for name in damaged):
            raise CheckpointError(f"{directory}: model.pt does not match its checksum")
        return {}

    monkeypatch.setattr(resume, "read_manifest", read_manifest)
    names = resume.CheckpointNames()
    with resume.verified_resume(f"{run_dir}/{latest}", latest, run_dir, names) as chosen:
        return chosen, names


def test_a_resume_skips_damaged_checkpoints_and_writes_their_epochs_beside_them(tmp_path, monkeypatch):
    run_dir = _run_dir(tmp_path, ["checkpoint_epoch=0001", "checkpoint_epoch=0002", "checkpoint_epoch=0003"])
    chosen, names = _resume(monkeypatch, run_dir, "checkpoint_epoch=0003",
                            {"checkpoint_epoch=0002", "checkpoint_epoch=0003"})
    assert chosen.endswith("checkpoint_epoch=0001")
    assert [names.for_epoch(epoch) for epoch in (2, 3, 4)] == \
        ["checkpoint_epoch=0002.1", "checkpoint_epoch=0003.1", "checkpoint_epoch=0004"]


def test_a_second_damage_of_a_retrained_epoch_takes_the_next_free_name(tmp_path, monkeypatch):
    run_dir = _run_dir(tmp_path, ["checkpoint_epoch=0001", "checkpoint_epoch=0002", "checkpoint_epoch=0002.1"])
    chosen, names = _resume(monkeypatch, run_dir, "checkpoint_epoch=0002.1",
                            {"checkpoint_epoch=0002", "checkpoint_epoch=0002.1"})
    assert chosen.endswith("checkpoint_epoch=0001")
    assert names.for_epoch(2) == "checkpoint_epoch=0002.2"


def test_an_intact_latest_checkpoint_keeps_the_plain_names(tmp_path, monkeypatch):
    run_dir = _run_dir(tmp_path, ["checkpoint_epoch=0001", "checkpoint_epoch=0002"])
    chosen, names = _resume(monkeypatch, run_dir, "checkpoint_epoch=0002", set())
    assert chosen.endswith("checkpoint_epoch=0002") and names.for_epoch(3) == "checkpoint_epoch=0003"


def test_no_checkpoint_that_verifies_refuses_to_start_over(tmp_path, monkeypatch):
    run_dir = _run_dir(tmp_path, ["checkpoint_epoch=0001"])
    with pytest.raises(CheckpointError, match="no earlier checkpoint"):
        _resume(monkeypatch, run_dir, "checkpoint_epoch=0001", {"checkpoint_epoch=0001"})
