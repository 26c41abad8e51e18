"""Named datasets (``data.uri: cifar10``) and ``raykit data get``, without Ray or a framework.

The cache is a temporary ``RAYKIT_DATA_HOME``. Archives are built here exactly like the official CIFAR-10
binary release (a few records per batch file) and served from a file:// URL or a local HTTP server; the
shipped slice (tests/data/cifar10_slice) stands in for a converted dataset."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raykit.cli import main
from raykit.data import DataError, plan_data
from raykit.data.catalog import CIFAR10, get
from raykit.data.sources import ReadOptions, open_source
from raykit.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "tests" / "data" / "cifar10_slice"
CONFIGS = [REPO / "jobs" / "configs" / "cifar10_cnn.yaml", REPO / "jobs" / "configs" / "cifar10_resnet18.yaml"]
CLASS_NAMES = list(CIFAR10.class_names)


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Path:
    """An empty data cache, as RAYKIT_DATA_HOME."""
    home = tmp_path / "data-home"
    home.mkdir()
    monkeypatch.setenv("RAYKIT_DATA_HOME", str(home))
    return home


@pytest.fixture
def cached_slice(data_home) -> Path:
    """The cache holding the shipped slice as its cifar10."""
    shutil.copytree(SLICE, data_home / "cifar10")
    return data_home / "cifar10"


def records(labels: np.ndarray, images: np.ndarray) -> bytes:
    """CIFAR-10 binary records: one label byte, then the red, green and blue 32x32 planes."""
    return b"".join(bytes([label]) + image.transpose(2, 0, 1).tobytes() for label, image in zip(labels, images))


def release_archive(directory: Path, per_batch: int = 3, test_rows: int = 4) -> tuple[Path, str, dict]:
    """A .tar.gz laid out like cifar-10-binary.tar.gz; returns its path, MD5 and each split's (x, y)."""
    rng = np.random.default_rng(0)
    splits = {"train": [], "test": []}
    members = {"cifar-10-batches-bin/batches.meta.txt": ("\n".join(CLASS_NAMES) + "\n\n").encode(),
               "cifar-10-batches-bin/readme.html": b"<html></html>"}
    for name, rows, split in [*[(f"data_batch_{i}.bin", per_batch, "train") for i in range(1, 6)],
                              ("test_batch.bin", test_rows, "test")]:
        labels = rng.integers(0, 10, rows).astype(np.uint8)
        images = rng.integers(0, 256, (rows, 32, 32, 3), dtype=np.uint8)
        members[f"cifar-10-batches-bin/{name}"] = records(labels, images)
        splits[split].append((images, labels.astype(np.int64)))
    path = directory / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    expected = {split: (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
                for split, parts in splits.items()}
    return path, hashlib.md5(path.read_bytes()).hexdigest(), expected


def read_back(path: Path) -> tuple[np.ndarray, np.ndarray]:
    source = open_source(str(path), "auto", ReadOptions())
    return source.read_rows(np.arange(len(source)))


# ---- data.uri: cifar10


def test_a_named_dataset_trains_on_its_train_file_tests_on_its_test_file_and_records_its_source(cached_slice):
    plan = plan_data(load_spec(None, ["data.uri=cifar10", "data.val_fraction=0.1", "data.test_fraction=0.3"]).data)
    assert plan.splits["train"].source.uri == str(cached_slice / "train.parquet")
    assert plan.splits["test"].source.uri == str(cached_slice / "test.parquet")
    assert plan.splits["val"].source is plan.splits["train"].source  # validation is carved out of train
    assert plan.info.sizes == {"train": 1800, "val": 200, "test": 500}  # test_fraction does not apply
    source = json.loads((cached_slice / "SOURCE.json").read_text())["source"]
    assert source in plan.info.description and str(cached_slice) in plan.info.description
    assert plan.info.class_names == CLASS_NAMES


def test_explicit_val_and_test_uris_win_over_the_named_datasets_files(cached_slice):
    other = str(SLICE / "test.parquet")
    plan = plan_data(load_spec(None, ["data.uri=cifar10", f"data.val_uri={other}",
                                      f"data.test_uri={SLICE / 'train.parquet'}"]).data)
    assert plan.splits["val"].source.uri == other
    assert plan.splits["test"].source.uri == str(SLICE / "train.parquet")
    assert plan.info.sizes == {"train": 2000, "val": 500, "test": 2000}  # nothing carved out of train


def test_a_train_uri_beside_a_named_dataset_is_refused_as_two_training_sources(data_home):
    with pytest.raises(SpecError, match="data.train_uri"):
        load_spec(None, ["data.uri=cifar10", f"data.train_uri={SLICE / 'train.parquet'}"])


def test_an_empty_cache_names_its_directory_and_the_command_that_fills_it(data_home):
    spec = load_spec(None, ["data.uri=cifar10"])  # validation does not need the data
    with pytest.raises(DataError) as caught:
        plan_data(spec.data)
    message = str(caught.value)
    assert str(data_home / "cifar10") in message
    assert "raykit data get cifar10" in message and "--from" in message


def test_the_cli_refuses_to_train_on_an_empty_cache_with_exit_code_2(data_home, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", str(CONFIGS[0]), "--set", f"storage={runs}"])
    assert code == 2
    assert "raykit data get cifar10" in capsys.readouterr().err
    assert not runs.exists()  # refused before anything was written or started


def test_a_misspelt_name_is_refused_with_the_named_datasets(data_home):
    with pytest.raises(SpecError, match=r"named dataset \(digits, cifar10\)"):
        load_spec(None, ["data.uri=cifr10"])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_shipped_cifar10_configs_validate_without_the_data(config, data_home):
    spec = load_spec(str(config))
    assert spec.data.uri == "cifar10"
    normalize = [op for op in spec.augment.ops if op["op"] == "normalize"]
    assert normalize[0]["mean"] == [0.4914, 0.4822, 0.4465] and normalize[0]["std"] == [0.2470, 0.2435, 0.2616]
    assert [op["op"] for op in spec.augment.ops] == ["random_crop", "hflip", "normalize"]


# ---- raykit data get


def test_get_converts_an_archive_laid_out_like_the_official_one_exactly(tmp_path, data_home):
    archive, md5, expected = release_archive(tmp_path)
    summary = get("cifar10", archive.as_uri(), md5=md5)
    target = data_home / "cifar10"
    assert summary.directory == str(target)
    for split, (x, y) in expected.items():
        images, labels = read_back(target / f"{split}.parquet")
        assert images.dtype == np.uint8 and np.array_equal(images, x)  # PNG: lossless, in the release's order
        assert np.array_equal(labels, y)
    source = json.loads((target / "SOURCE.json").read_text())
    assert source["encoding"] == "png" and source["md5"] == md5 and source["class_names"] == CLASS_NAMES
    assert source["rows"] == {"train": 15, "test": 4} and archive.as_uri() in source["source"]
    assert sorted(p.name for p in data_home.iterdir()) == ["cifar10"]  # no archive or temporary directory left


def test_a_wrong_md5_is_refused_and_leaves_no_cache_directory(tmp_path, data_home):
    archive, md5, _ = release_archive(tmp_path)
    with pytest.raises(DataError, match=f"MD5 is {md5}, expected {CIFAR10.md5}"):
        get("cifar10", archive.as_uri())  # the official MD5 is expected unless --md5 says otherwise
    assert list(data_home.iterdir()) == []


def test_an_unreachable_url_is_a_data_error_that_leaves_nothing(data_home):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DataError, match="cannot download"):
        get("cifar10", f"http://127.0.0.1:{port}/cifar-10-binary.tar.gz")
    assert list(data_home.iterdir()) == []


def test_get_downloads_over_http_through_the_cli(tmp_path, capsys):
    archive, md5, expected = release_archive(tmp_path)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = tmp_path / "elsewhere"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        code = main(["data", "get", "cifar10", "--from", url, "--md5", md5, "--dest", str(home), "--no-progress"])
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0
    out = capsys.readouterr().out
    assert str(home / "cifar10") in out and url in out and "RAYKIT_DATA_HOME" in out
    assert np.array_equal(read_back(home / "cifar10" / "test.parquet")[1], expected["test"][1])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_get_from_a_directory_copies_its_files_and_records_the_jpeg_re_encoding(tmp_path, data_home):
    src = tmp_path / "shared-copy"
    src.mkdir()
    for name in ("train.parquet", "test.parquet"):
        shutil.copyfile(SLICE / name, src / name)
    (src / "README.md").write_text("# CIFAR-10 (JPEG copy) as Parquet\n\nmore\n")
    get("cifar10", str(src))
    target = data_home / "cifar10"
    assert (target / "train.parquet").read_bytes() == (SLICE / "train.parquet").read_bytes()
    source = json.loads((target / "SOURCE.json").read_text())
    assert source["encoding"] == "jpeg" and source["from"] == str(src)
    assert f"copied from {src}" in source["source"] and "JPEG re-encoding" in source["source"]
    assert "CIFAR-10 (JPEG copy) as Parquet" in source["source"]


def test_get_leaves_a_filled_cache_alone_unless_forced(tmp_path, cached_slice):
    archive, md5, _ = release_archive(tmp_path)
    assert get("cifar10", archive.as_uri(), md5=md5).already_there
    assert pq.ParquetFile(cached_slice / "test.parquet").metadata.num_rows == 500  # untouched
    get("cifar10", archive.as_uri(), md5=md5, force=True)
    assert pq.ParquetFile(cached_slice / "test.parquet").metadata.num_rows == 4
    assert sorted(p.name for p in cached_slice.parent.iterdir()) == ["cifar10"]


def test_the_shipped_slice_is_tracked_not_ignored():
    import subprocess

    ignored = subprocess.run(["git", "check-ignore", "-q", str(SLICE / "train.parquet")], cwd=REPO)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 1  # 1: not ignored (0: a fresh clone would lack it)
