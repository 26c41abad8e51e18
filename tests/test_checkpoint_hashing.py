"""Checkpoint bytes are hashed once on each side, without Ray: while they are written (the manifest reads
nothing back), and once on a resume or an evaluation (the loaders that follow a verification trust it while
the files are unchanged), and a damaged file is still caught before it is loaded. Also who deletes a
checkpoint directory after ``report``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import blake3
import pytest
import torch

from raykit import checkpoint
from raykit.backends.torch import checkpoint as ckpt
from raykit.backends.torch.models import build_model
from raykit.checkpoint import CheckpointError, HashingWriter, read_manifest, write_manifest
from raykit.engine import fit
from raykit import resume
from raykit.session import WorkerSession
from raykit.spec import load_spec

FILES = {"model.pt", "optimizer.pt", "scheduler.pt", "rng.json"}


def small_spec(*overrides: str):
    return load_spec(None, ["model.name=mlp", "model.hidden=[32]", "scaling.num_workers=1", "train.epochs=1",
                            "train.batch_size=64", "train.tensorboard=false", *overrides])


def hash_calls(monkeypatch) -> list[Path]:
    """Every file :mod:`raykit.checkpoint` reads back to hash, from now on."""
    calls: list[Path] = []
    real = checkpoint._file_digest

    def counting(path: Path, *args) -> str:
        calls.append(Path(path))
        return real(path, *args)

    monkeypatch.setattr(checkpoint, "_file_digest", counting)
    return calls


def torch_state():
    spec = small_spec()
    model = build_model(spec.model, (8, 8, 1), 10)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 64)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False)


def save_torch(directory: Path, state) -> None:
    model, optimizer, scheduler, scaler = state
    ckpt.save(str(directory), model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
              state={"epoch": 1, "global_step": 3}, metrics={"val_acc": 0.5}, rng_states=[ckpt.capture_rng()],
              spec=small_spec().to_dict())


def test_a_hashing_writer_s_digest_is_blake3_s_over_the_file_it_wrote(tmp_path):
    blocks = [b"header", os.urandom(3 << 20), bytearray(os.urandom(100)), memoryview(os.urandom(5 << 20)), b""]
    path = tmp_path / "file.bin"
    with open(path, "wb") as file, HashingWriter(file) as writer:
        for block in blocks:  # small blocks hashed inline, blocks of 1 MiB and more on the helper thread
            assert writer.write(block) == len(block)
    data = path.read_bytes()
    assert writer.entry() == {"blake3": blake3.blake3(data).hexdigest(), "bytes": len(data)}
    assert data == b"".join(bytes(block) for block in blocks)


def test_a_torch_checkpoint_is_hashed_while_written_and_never_read_back(tmp_path, monkeypatch):
    calls = hash_calls(monkeypatch)
    save_torch(tmp_path, torch_state())
    assert calls == []
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == FILES
    for name, entry in manifest["files"].items():
        data = (tmp_path / name).read_bytes()
        assert entry == {"blake3": blake3.blake3(data).hexdigest(), "bytes": len(data)}


def test_files_written_without_a_hashing_writer_are_read_and_hashed_once(tmp_path, monkeypatch):
    (tmp_path / "weights.h5").write_bytes(b"h5 bytes")  # e.g. Keras's save_weights, which takes a path
    with open(tmp_path / "state.bin", "wb") as file, HashingWriter(file) as writer:
        writer.write(b"state bytes")
    calls = hash_calls(monkeypatch)
    manifest = write_manifest(tmp_path, framework="tf", state={}, metrics={}, spec={}, weights="weights.h5",
                              digests={"state.bin": writer.entry()})
    assert calls == [tmp_path / "weights.h5"]
    assert manifest["files"]["weights.h5"]["blake3"] == blake3.blake3(b"h5 bytes").hexdigest()
    read_manifest(tmp_path)
    # A digest that does not describe the file on disk (written again after hashing) is refused.
    (tmp_path / "state.bin").write_bytes(b"state bytes, then more")
    with pytest.raises(CheckpointError, match="state.bin"):
        write_manifest(tmp_path, framework="tf", state={}, metrics={}, spec={}, weights="weights.h5",
                       digests={"state.bin": writer.entry()})


def resumed(directory: Path, state) -> dict:
    """What a Ray worker does with the checkpoint it resumes from: verify it (resume.verified_resume), then the
    backend restores it."""
    with resume.verified_resume(str(directory), directory.name, str(directory.parent),
                                resume.CheckpointNames()) as chosen:
        return ckpt.restore(chosen, *state)[0]



def test_a_resume_hashes_each_file_once(tmp_path, monkeypatch):
    directory = tmp_path / "checkpoint_epoch=0001"
    directory.mkdir()
    state = torch_state()
    save_torch(directory, state)
    calls = hash_calls(monkeypatch)
    assert resumed(directory, state)["epoch"] == 1
    assert sorted(path.name for path in calls) == sorted(FILES)
    # Out of the worker's block, a restore verifies on its own again.
    calls.clear()
    ckpt.restore(str(directory), *state)
    assert sorted(path.name for path in calls) == sorted(FILES)


@pytest.mark.parametrize("damage", ["truncate", "rewrite"])
def test_a_file_damaged_after_the_worker_verified_it_is_caught_before_it_is_loaded(tmp_path, damage):
    directory = tmp_path / "checkpoint_epoch=0001"
    directory.mkdir()
    state = torch_state()
    save_torch(directory, state)
    weights = directory / "optimizer.pt"
    with resume.verified_resume(str(directory), directory.name, str(tmp_path), resume.CheckpointNames()):
        data = bytearray(weights.read_bytes())
        if damage == "truncate":
            weights.write_bytes(data[:-100])
        else:  # same size, other bytes: the new modification time says it changed
            data[-10] ^= 0xFF
            weights.write_bytes(data)
            stat = weights.stat()
            os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        with pytest.raises(CheckpointError, match="optimizer.pt"):
            ckpt.restore(str(directory), *state)


def test_evaluating_a_stored_checkpoint_hashes_each_file_once(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the kept checkpoint is written (and left) here
    kept: list[Path] = []

    def keep(metrics: dict, directory: str | None) -> bool:
        kept.append(Path(directory))
        return True  # taken over: the engine leaves it in place

    spec = small_spec()
    fit(spec, WorkerSession(report=keep))
    calls = hash_calls(monkeypatch)
    metrics = resume.evaluate_stored_checkpoint(spec, str(kept[0]), "test")
    assert metrics["test_samples"] > 0
    assert sorted(path.name for path in calls) == sorted(FILES)


def test_the_engine_deletes_a_checkpoint_unless_report_took_it_over(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the engine's mkdtemp writes
    seen: dict[str, list[Path]] = {"taken": [], "left": []}

    def taking(metrics: dict, directory: str | None) -> bool:
        seen["taken"].append(Path(directory))
        return True

    def leaving(metrics: dict, directory: str | None) -> None:
        seen["left"].append(Path(directory))

    fit(small_spec(), WorkerSession(report=taking))
    fit(small_spec(), WorkerSession(report=leaving))
    assert seen["taken"][0].is_dir() and (seen["taken"][0] / "manifest.json").is_file()
    assert not seen["left"][0].exists()
    # A save that fails half-way (the writer dies between files) leaves no temporary directory either.
    monkeypatch.setenv("RAYKIT_FAULTS", json.dumps([{"at": "between_checkpoint_files", "action": "raise"}]))
    with pytest.raises(RuntimeError, match="injected fault"):
        fit(small_spec(), WorkerSession(report=leaving))
    assert sorted(tmp_path.glob("raykit-ckpt-*")) == [seen["taken"][0]]


def weights_of(model) -> dict:
    return {name: value.clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_restore_applies_nothing_from_a_damaged_checkpoint(tmp_path, damage):
    """The files are hashed on a helper thread while they are read; a damaged one is reported by its checksum
    (also when the loader itself chokes on it) and nothing read is applied to the model or optimizer."""
    directory = tmp_path / "checkpoint_epoch=0001"
    directory.mkdir()
    save_torch(directory, torch_state())
    fresh = torch_state()
    before, optimizer_before = weights_of(fresh[0]), json.dumps(fresh[1].state_dict()["param_groups"])
    path = directory / "scheduler.pt"
    data = bytearray(path.read_bytes())
    if damage == "truncate":  # torch.load itself fails on it
        path.write_bytes(data[: len(data) // 2])
    else:  # a byte of a stored tensor: torch.load succeeds, only the checksum tells
        weights = directory / "model.pt"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"(scheduler|model)\.pt: checksum differs"):
        ckpt.restore(str(directory), *fresh)
    after = weights_of(fresh[0])
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert json.dumps(fresh[1].state_dict()["param_groups"]) == optimizer_before
    with pytest.raises(CheckpointError, match="checksum differs"):
        ckpt.load_weights(str(directory))


def test_verifying_hashes_while_the_block_reads_and_raises_at_its_end(tmp_path, monkeypatch):
    directory = tmp_path / "checkpoint_epoch=0001"
    directory.mkdir()
    save_torch(directory, torch_state())
    hashed_on: list[str] = []
    real = checkpoint._file_digest

    def on_which_thread(path: Path, *args) -> str:
        import threading

        hashed_on.append(threading.current_thread().name)
        return real(path, *args)

    monkeypatch.setattr(checkpoint, "_file_digest", on_which_thread)
    with checkpoint.verifying(directory) as manifest:
        assert manifest["epoch"] == 1
    assert len(hashed_on) == len(FILES) and all(name.startswith("raykit-verify") for name in hashed_on)
    (directory / "rng.json").write_text("[]")
    with pytest.raises(CheckpointError, match="rng.json: checksum differs"):
        with checkpoint.verifying(directory):
            pass  # the block read nothing wrong itself; its end still reports the file
    # An error of the block's own, on verified files, is the block's.
    (directory / "rng.json").unlink()
    save_dir = tmp_path / "other"
    save_dir.mkdir()
    save_torch(save_dir, torch_state())
    with pytest.raises(KeyError, match="mine"):
        with checkpoint.verifying(save_dir):
            raise KeyError("mine")


def test_a_version_1_checkpoint_with_sha256_checksums_still_verifies_and_restores(tmp_path):
    """Checkpoints written before BLAKE3 (format version 1) list SHA-256 checksums: they restore, and a
    damaged file in one is still caught."""
    directory = tmp_path / "checkpoint_epoch=0001"
    directory.mkdir()
    save_torch(directory, torch_state())
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["version"] = 1
    manifest["files"] = {name: {"sha256": hashlib.sha256((directory / name).read_bytes()).hexdigest(),
                                "bytes": entry["bytes"]} for name, entry in manifest["files"].items()}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    assert ckpt.restore(str(directory), *torch_state())[0]["epoch"] == 1
    assert checkpoint.checksum(manifest["files"]["model.pt"])[0] == "sha256"
    data = bytearray((directory / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / "model.pt").write_bytes(data)
    with pytest.raises(CheckpointError, match="model.pt: checksum differs"):
        ckpt.restore(str(directory), *torch_state())
    with pytest.raises(CheckpointError, match="names no checksum; accepted: blake3, sha256"):
        checkpoint.checksum({"md5": "0", "bytes": 1})


def test_without_the_blake3_package_checkpoints_use_sha256_and_say_what_a_blake3_one_needs(tmp_path, monkeypatch):
    written = tmp_path / "written_with_blake3"
    written.mkdir()
    save_torch(written, torch_state())
    monkeypatch.setattr(checkpoint, "_DIGESTS", {"sha256": hashlib.sha256})
    monkeypatch.setattr(checkpoint, "DIGEST", "sha256")
    directory = tmp_path / "checkpoint_epoch=0001"
    directory.mkdir()
    save_torch(directory, torch_state())
    entry = json.loads((directory / "manifest.json").read_text())["files"]["model.pt"]
    assert entry["sha256"] == hashlib.sha256((directory / "model.pt").read_bytes()).hexdigest()
    assert ckpt.restore(str(directory), *torch_state())[0]["epoch"] == 1
    with pytest.raises(CheckpointError, match="BLAKE3 checksums, and the blake3 package .* pip install blake3"):
        ckpt.restore(str(written), *torch_state())
