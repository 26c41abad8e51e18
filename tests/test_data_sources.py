"""Every data source by local path and by memory:// URI, the splits, the loader choice, bad data, and
``raykit data convert``. No Ray: the same readers run inside Ray Data tasks (see test_data_ray.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from raykit.cli import main as cli_main
from raykit.data import DataError, iter_split, load_splits, plan_data
from raykit.data.convert import convert
from raykit.spec import SpecError, load_spec
from tests import data_factory as make


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path) -> str:
    """A fresh directory: a local path, or a memory:// URI (fsspec, through pyarrow's wrapper)."""
    if request.param == "local":
        return str(tmp_path)
    return f"memory://raykit-tests/{uuid.uuid4().hex}"


def data_spec(**fields):
    return load_spec(None, {f"data.{key}": value for key, value in fields.items()}).data


def pixel_classes(x: np.ndarray) -> np.ndarray:
    """The class each test image carries in pixel (0, 0) (see data_factory.images)."""
    return np.rint(x[:, 0, 0, 0] * 255 / 20).astype(int)


def assert_labels_travel_with_images(splits, total: int) -> None:
    everything = [splits.train, splits.val, splits.test]
    assert sum(len(s) for s in everything) == total
    for split in everything:
        assert split.x.dtype == np.float32 and 0 <= split.x.min() and split.x.max() <= 1
        assert (pixel_classes(split.x) == split.y).all()


@pytest.mark.parametrize("layout", ["png", "tensor", "lists"])
def test_parquet_sources_read_by_path_and_uri(root, layout):
    x, y = make.images(40, classes=4)
    uri = make.write_parquet(f"{root}/pq-{layout}", x, y, layout=layout)
    splits = load_splits(data_spec(uri=uri))
    assert splits.input_shape == (8, 8, 3) and splits.num_classes == 4
    assert_labels_travel_with_images(splits, 40)


def test_npz_source_read_by_path_and_uri(root):
    x, y = make.images(40, classes=4, channels=1)
    uri = make.write_npz(f"{root}/train.npz", x[..., 0], y)
    splits = load_splits(data_spec(uri=uri))
    assert splits.input_shape == (8, 8, 1)
    assert_labels_travel_with_images(splits, 40)


def test_image_folder_source_read_by_path_and_uri(root):
    x, y = make.images(40, classes=4)
    uri = make.write_image_folder(f"{root}/folder", x, y)
    plan = plan_data(data_spec(uri=uri))
    assert plan.info.class_names == ["ant", "bee", "cat", "dog"]
    assert plan.splits["train"].source.format == "image_folder"
    assert_labels_travel_with_images(load_splits(data_spec(uri=uri)), 40)


def test_one_source_is_split_stratified_and_reproducibly(tmp_path):
    x, y = make.images(200, classes=4)
    uri = make.write_parquet(str(tmp_path / "pq"), x, y)
    first = load_splits(data_spec(uri=uri, val_fraction=0.2, test_fraction=0.1, split_seed=5))
    again = load_splits(data_spec(uri=uri, val_fraction=0.2, test_fraction=0.1, split_seed=5))
    assert np.array_equal(first.val.x, again.val.x)
    assert [int((first.val.y == c).sum()) for c in range(4)] == [10, 10, 10, 10]
    assert [int((first.test.y == c).sum()) for c in range(4)] == [5, 5, 5, 5]
    other = load_splits(data_spec(uri=uri, val_fraction=0.2, test_fraction=0.1, split_seed=6))
    assert not np.array_equal(first.val.x, other.val.x)


def test_splits_from_separate_uris(tmp_path):
    sets = {name: make.images(n, classes=3, seed=i) for i, (name, n) in enumerate([("train", 30), ("val", 9),
                                                                                    ("test", 12)])}
    uris = {f"{name}_uri": make.write_parquet(str(tmp_path / name), *xy) for name, xy in sets.items()}
    splits = load_splits(data_spec(**uris))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 9, 12)
    assert sorted(map(bytes, (splits.val.x * 255).round().astype(np.uint8))) == \
        sorted(map(bytes, sets["val"][0].astype(np.uint8)))


def test_a_missing_test_uri_is_carved_from_the_training_source(tmp_path):
    train = make.write_parquet(str(tmp_path / "train"), *make.images(40, classes=4))
    val = make.write_parquet(str(tmp_path / "val"), *make.images(8, classes=4, seed=1))
    plan = plan_data(data_spec(train_uri=train, val_uri=val, test_fraction=0.2))
    assert plan.info.sizes == {"train": 32, "val": 8, "test": 8}


def test_the_loader_streams_only_what_exceeds_the_memory_limit(tmp_path):
    uri = make.write_parquet(str(tmp_path / "pq"), *make.images(100, classes=4))
    assert plan_data(data_spec(uri=uri)).loader == "memory"
    plan = plan_data(data_spec(uri=uri, memory_limit_mb=1))
    assert plan.decoded_bytes == 68 * 8 * 8 * 3 * 4 and plan.loader == "memory"
    big = make.write_parquet(str(tmp_path / "big"), *make.images(3000, classes=4, size=16), rows_per_group=500)
    assert plan_data(data_spec(uri=big, memory_limit_mb=1)).loader == "stream"
    assert plan_data(data_spec(uri=big, memory_limit_mb=1, loader="memory")).loader == "memory"


def test_streaming_is_refused_for_sources_read_whole(tmp_path):
    uri = make.write_npz(str(tmp_path / "d.npz"), *make.images(20, classes=2))
    with pytest.raises(SpecError, match="data.loader"):
        load_spec(None, {"data.uri": uri, "data.loader": "stream"})


def test_iter_split_reads_the_same_rows_as_the_memory_loader(tmp_path):
    uri = make.write_parquet(str(tmp_path / "pq"), *make.images(60, classes=3), rows_per_group=5)
    plan = plan_data(data_spec(uri=uri))
    streamed = np.concatenate([x for x, _ in iter_split(plan, "test", batch_size=4)])
    in_memory = load_splits(data_spec(uri=uri)).test.x
    assert sorted(map(bytes, streamed)) == sorted(map(bytes, in_memory))


def test_resize_reads_mixed_shapes_to_one(tmp_path):
    x, y = make.images(12, classes=2)
    make.write_image_folder(str(tmp_path / "folder"), x, y)
    big, _ = make.images(1, classes=2, size=11)
    make.write_image_folder(str(tmp_path / "folder"), big, np.array([1]))
    with pytest.raises(DataError, match=r"differ in shape.*data\.resize"):
        load_splits(data_spec(uri=str(tmp_path / "folder")))
    splits = load_splits(data_spec(uri=str(tmp_path / "folder"), resize=[6, 6]))
    assert splits.input_shape == (6, 6, 3)


def test_color_mode_converts_channels(tmp_path):
    uri = make.write_image_folder(str(tmp_path / "folder"), *make.images(8, classes=2))
    assert load_splits(data_spec(uri=uri, color_mode="grayscale")).input_shape == (8, 8, 1)


# Bad data: each gives raykit's own error naming the field or file.

def test_missing_label_column_names_the_field_and_the_columns(tmp_path):
    uri = make.write_parquet(str(tmp_path / "pq"), *make.images(20, classes=2), label_column="target")
    with pytest.raises(DataError, match=r"data.label_column: no column 'label' in .*columns: image, target"):
        plan_data(data_spec(uri=uri))


def test_missing_image_column_names_the_field(tmp_path):
    uri = make.write_parquet(str(tmp_path / "pq"), *make.images(20, classes=2))
    with pytest.raises(DataError, match="data.image_column: no column 'pixels'"):
        plan_data(data_spec(uri=uri, image_column="pixels"))


def test_mixed_shapes_in_parquet_without_resize(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from raykit.data.images import encode_png

    small, big = make.images(3, classes=2)[0], make.images(3, classes=2, size=10)[0]
    table = pa.table({"image": [encode_png(i) for i in [*small, *big]], "label": [0, 1, 0, 1, 0, 1]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    (tmp_path / "mixed.parquet").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"mixed\.parquet.*row 3 is 10x10x3.*data\.resize"):
        load_splits(data_spec(uri=str(tmp_path / "mixed.parquet"), val_fraction=0.2, test_fraction=0.2))


def test_an_empty_class_folder_is_named(tmp_path):
    uri = make.write_image_folder(str(tmp_path / "folder"), *make.images(8, classes=2))
    (tmp_path / "folder" / "zebra").mkdir()
    with pytest.raises(DataError, match=r"class folder .*zebra holds no images"):
        plan_data(data_spec(uri=uri))


def test_an_unreadable_image_is_named(tmp_path):
    uri = make.write_image_folder(str(tmp_path / "folder"), *make.images(8, classes=2))
    (tmp_path / "folder" / "bee" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image .*bee/broken\.png"):
        load_splits(data_spec(uri=uri))


def test_labels_out_of_range_for_num_classes(tmp_path):
    uri = make.write_parquet(str(tmp_path / "pq"), *make.images(40, classes=4))
    with pytest.raises(DataError, match=r"model.num_classes: got 3, but .* has label 3; accepted: at least 4"):
        plan_data(data_spec(uri=uri), num_classes=3)


def test_npz_without_x_and_y_lists_what_it_holds(tmp_path):
    x, y = make.images(10, classes=2)
    uri = make.write_npz(str(tmp_path / "d.npz"), x, y)
    import numpy

    numpy.savez(tmp_path / "other.npz", images=x, labels=y)
    assert len(load_splits(data_spec(uri=uri, val_fraction=0.2, test_fraction=0.2)).train) == 6
    with pytest.raises(DataError, match=r"holds arrays \['images', 'labels'\]; accepted: .* 'x'"):
        plan_data(data_spec(uri=str(tmp_path / "other.npz")))


def test_a_missing_local_file_and_a_bad_scheme_fail_validation(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(None, {"data.uri": str(tmp_path / "nope.parquet"), "data.val_uri": "nosuchscheme://b/x"})
    text = str(caught.value)
    assert "data.uri: got" in text and "does not exist" in text
    assert "data.val_uri: got scheme 'nosuchscheme'" in text


def test_run_storage_on_memory_is_refused():
    with pytest.raises(SpecError, match="storage: got 'memory://runs'"):
        load_spec(None, {"storage": "memory://runs"})


# raykit data convert

def test_convert_round_trips_an_image_folder(root):
    x, y = make.images(50, classes=4)
    folder = make.write_image_folder(f"{root}/folder", x, y)
    summary = convert(folder, f"{root}/parquet", rows_per_file=20, rows_per_group=6, progress=False)
    assert summary.rows == 50 and len(summary.files) == 3 and summary.class_names == ["ant", "bee", "cat", "dog"]
    original = load_splits(data_spec(uri=folder, val_fraction=0.1, test_fraction=0.1))
    converted = load_splits(data_spec(uri=f"{root}/parquet", val_fraction=0.1, test_fraction=0.1))

    def rows(splits):
        both = [splits.train, splits.val, splits.test]
        return sorted((bytes((s.x[i] * 255).round().astype(np.uint8)), int(s.y[i])) for s in both
                      for i in range(len(s)))

    assert rows(converted) == rows(original)
    parquet = plan_data(data_spec(uri=f"{root}/parquet"))
    assert parquet.info.class_names == ["ant", "bee", "cat", "dog"]
    assert len(parquet.splits["train"].source.chunks) == 4 + 4 + 2  # files of 20, 20, 10 rows in groups of 6


def test_convert_command_writes_parquet_and_never_overwrites(tmp_path, capsys):
    folder = make.write_image_folder(str(tmp_path / "folder"), *make.images(12, classes=2))
    out = str(tmp_path / "out")
    assert cli_main(["data", "convert", folder, out, "--rows-per-file", "5", "--no-progress"]) == 0
    assert "wrote 12 rows, 2 classes to 3 Parquet file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in Path(out).iterdir()) == ["part-00000.parquet", "part-00001.parquet",
                                                           "part-00002.parquet"]
    assert cli_main(["data", "convert", folder, out]) == 2
    assert f"DST: {out} already holds files" in capsys.readouterr().err


def test_planning_decodes_one_image_per_source_not_its_row_group(tmp_path, decoded_images):
    """A plan learns the input shape from one image: it must not decode a whole row group (a Parquet file
    written by pyarrow is one group of up to a million rows: every image, once per plan)."""
    x, y = make.images(60, classes=4)
    uri = make.write_parquet(str(tmp_path / "pq"), x, y, files=1)
    decoded = decoded_images
    plan = plan_data(data_spec(uri=uri))
    assert plan.info.input_shape == (8, 8, 3)
    assert len(decoded) == 1, decoded
    decoded.clear()
    assert len(load_splits(data_spec(uri=uri)).train) > 0
    assert len(decoded) == 60 + 1  # every image once when the splits are read (and one for the plan)


# data.color_mode and data.resize apply to images held as arrays (digits, .npz) as they do to files.

@pytest.mark.parametrize("color_mode, resize", [("grayscale", (6, 5)), ("rgb", (12, 16)), ("grayscale", None)])
def test_arrays_get_the_channels_and_size_that_decoding_the_same_images_gives(color_mode, resize):
    from raykit.data.images import as_read, decode, encode_png

    for channels in (1, 3):
        x, _ = make.images(6, classes=3, channels=channels)
        from_files = np.stack([decode(encode_png(image), "image", color_mode, resize) for image in x])
        from_arrays = as_read(x.astype(np.float32) / 255, color_mode, resize, "the arrays")
        assert from_arrays.shape == from_files.shape and from_arrays.dtype == np.float32
        # Pillow resamples uint8 in fixed point and rounds to uint8; the arrays stay float.
        difference = np.abs(from_arrays * 255 - from_files)
        assert difference.max() <= 1.5 and difference.mean() < 0.5


def test_digits_and_npz_are_read_at_data_resize_in_data_color_mode(tmp_path):
    assert plan_data(data_spec(uri="digits")).info.input_shape == (8, 8, 1)
    digits = plan_data(data_spec(uri="digits", resize=[32, 24], color_mode="rgb"))
    assert digits.info.input_shape == (32, 24, 3)
    x, _ = digits.splits["train"].source.read_rows(np.arange(4))
    assert x.shape == (4, 32, 24, 3) and np.array_equal(x[..., 0], x[..., 2])  # gray repeated
    uri = make.write_npz(str(tmp_path / "images.npz"), *make.images(20, classes=2, channels=3))
    assert load_splits(data_spec(uri=uri, color_mode="grayscale", resize=[4, 4])).input_shape == (4, 4, 1)
    four = make.write_npz(str(tmp_path / "rgba.npz"), *make.images(20, classes=2, channels=4))
    assert load_splits(data_spec(uri=four)).input_shape == (8, 8, 4)  # auto: as stored
    with pytest.raises(DataError, match=r"data.color_mode: got 'rgb' for .*rgba.npz, whose images have 4 "
                                        r"channels; accepted: auto"):
        load_splits(data_spec(uri=four, color_mode="rgb"))


def test_convert_keeps_the_channels_of_arrays(tmp_path):
    uri = make.write_npz(str(tmp_path / "gray.npz"), *make.images(12, classes=2, channels=1))
    convert(uri, str(tmp_path / "parquet"), progress=False)
    assert load_splits(data_spec(uri=str(tmp_path / "parquet"))).input_shape == (8, 8, 1)
