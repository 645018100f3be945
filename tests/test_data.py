"""The data boundary: folders, NIPS'17 CSVs, conversions, skipped files, atomic PNGs, shards, batches."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from tfattack import data

ROOT = Path(__file__).resolve().parents[1]
HEADER = "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,AuthorProfileURL"


def rgb(seed, height=299, width=299):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path, array, mode=None):
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return str(path)


def write_dev_csv(path, rows):
    """rows: (ImageId, TrueLabel, TargetClass) in the DEV set's 12-column layout."""
    lines = [HEADER] + [f"{i},http://x/{i}.jpg,0,0,1,1,{label},{target},http://x,cc,a,http://a" for i, label, target in rows]
    Path(path).write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def folder(tmp_path):
    """dataset/images/{a,b,c}.png (299 RGB) + dataset/dev_dataset.csv, the DEV layout."""
    images = tmp_path / "dataset" / "images"
    images.mkdir(parents=True)
    for k, image_id in enumerate("abc"):
        save(images / f"{image_id}.png", rgb(k))
    write_dev_csv(tmp_path / "dataset" / "dev_dataset.csv", [("a", 306, 779), ("b", 1, 1000), ("c", 1000, 2)])
    return images


# --- labels ---------------------------------------------------------------------------------------


def test_dev_layout_labels_and_targets_are_converted_once(folder):
    ds = data.read_dataset(str(folder))
    assert ds.ids == ("a", "b", "c")
    assert ds.labels.tolist() == [305, 0, 999] and ds.labels.dtype == np.int64
    assert ds.targets.tolist() == [778, 999, 1]
    assert ds.label_file == str(folder.parent / "dev_dataset.csv")
    assert ds.sizes == ((299, 299),) * 3 and ds.modes == ("RGB",) * 3
    assert ds.notes[0] == f"labels: TrueLabel from {ds.label_file} (1..1000 converted to 0..999)"


def test_real_samples_match_their_csv():
    ds = data.read_dataset(str(ROOT / "samples" / "images"))
    with open(ROOT / "samples" / "dev_dataset.csv") as handle:
        rows = {r["ImageId"]: r for r in csv.DictReader(handle)}
    assert len(ds) == 8 and set(ds.ids) == set(rows)
    assert ds.labels.tolist() == [int(rows[i]["TrueLabel"]) - 1 for i in ds.ids]
    assert ds.targets.tolist() == [int(rows[i]["TargetClass"]) - 1 for i in ds.ids]
    assert ds.labels[ds.ids.index("0c7ac4a8c9dfa802")] == 305  # dung beetle


def test_images_csv_next_to_images_and_rows_without_image_are_ignored(tmp_path):
    save(tmp_path / "x.png", rgb(0))
    (tmp_path / "images.csv").write_text("ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass\n"
                                         "x,u,0,0,1,1,10,20\nnot_here,u,0,0,1,1,11,21\n")
    ds = data.read_dataset(str(tmp_path))
    assert ds.labels.tolist() == [9] and ds.targets.tolist() == [19]
    assert "1 CSV row(s) have no image here (ignored)" in ds.notes[0]


def test_no_csv_means_no_labels_and_says_so(tmp_path):
    save(tmp_path / "x.png", rgb(0))
    ds = data.read_dataset(str(tmp_path))
    assert ds.labels is None and ds.targets is None and ds.label_file is None
    assert ds.notes[0].startswith("labels: no metadata CSV (dev_dataset.csv or images.csv)")
    with pytest.raises(data.DataError, match=r"^.*: no ground-truth labels \(no dev_dataset.csv or images.csv"):
        ds.require_labels()
    with pytest.raises(data.DataError, match="a targeted run needs target classes"):
        ds.require_targets()


def test_csv_without_target_column_has_no_targets(tmp_path):
    save(tmp_path / "x.png", rgb(0))
    (tmp_path / "images.csv").write_text("ImageId,TrueLabel\nx,5\n")
    ds = data.read_dataset(str(tmp_path))
    assert ds.labels.tolist() == [4] and ds.targets is None


def test_target_class_csv_replaces_csv_targets(folder, tmp_path):
    targets = tmp_path / "target_class.csv"
    targets.write_text("a.png,1\nb.png,500\nc.png,1000\n")
    ds = data.read_dataset(str(folder), target_class_csv=str(targets))
    assert ds.targets.tolist() == [0, 499, 999] and ds.target_file == str(targets)
    assert ds.labels.tolist() == [305, 0, 999]


def test_explicit_csv_wins(folder, tmp_path):
    other = write_dev_csv(tmp_path / "other.csv", [("a", 2, 3), ("b", 4, 5), ("c", 6, 7)])
    assert data.read_dataset(str(folder), csv=other).labels.tolist() == [1, 3, 5]


# --- metadata errors: one line naming file, line and column ------------------------------------------


@pytest.mark.parametrize("content, message", [
    ("ImageId,URL\na,u\n", "{csv}: missing column(s) TrueLabel in the header (found: ImageId, URL)"),
    ("ImageId,TrueLabel\na,1\nb,1001\nc,3\n",
     "{csv}: line 3, column TrueLabel: class 1001 is out of range 1..1000 (NIPS 2017 labels count from 1)"),
    ("ImageId,TrueLabel\na,0\nb,1\nc,3\n",
     "{csv}: line 2, column TrueLabel: class 0 is out of range 1..1000 (NIPS 2017 labels count from 1)"),
    ("ImageId,TrueLabel,TargetClass\na,1,2\nb,2,x\nc,3,4\n",
     "{csv}: line 3, column TargetClass: expected an integer class 1..1000, got 'x'"),
    ("ImageId,TrueLabel\na,1\na,2\nc,3\n", "{csv}: line 3, column ImageId: 'a' appears twice"),
    ("ImageId,TrueLabel\na,1\nc,3\n",
     "{csv}: no row for ImageId 'b' (image {images}/b.png); 1 image(s) of {images} are not in the CSV"),
    ("", "{csv}: empty metadata CSV (expected a header with ImageId, TrueLabel)"),
])
def test_metadata_errors(folder, content, message):
    path = folder.parent / "dev_dataset.csv"
    path.write_text(content)
    with pytest.raises(data.DataError) as err:
        data.read_dataset(str(folder))
    assert str(err.value) == message.format(csv=path, images=folder)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content, message", [
    ("a.png,1\nb.png,2001\nc.png,3\n",
     "{t}: line 2, column class (column 2): class 2001 is out of range 1..1000 (NIPS 2017 labels count from 1)"),
    ("filename,class\n", "{t}: line 1, column class (column 2): expected an integer class 1..1000, got 'class'"),
    ("a.png;1\n", "{t}: line 1: expected 'filename,class' (no header), got 'a.png;1'"),
    ("a.png,1\nb.png,2\n", "{t}: no line for image c.png; 1 image(s) of {images} have no target class"),
])
def test_target_class_csv_errors(folder, tmp_path, content, message):
    path = tmp_path / "target_class.csv"
    path.write_text(content)
    with pytest.raises(data.DataError) as err:
        data.read_dataset(str(folder), target_class_csv=str(path))
    assert str(err.value) == message.format(t=path, images=folder)


def test_folder_errors(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.read_dataset(str(tmp_path / "absent"))
    assert str(err.value) == f"input_dir {tmp_path / 'absent'}: no such folder"
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(data.DataError) as err:
        data.read_dataset(str(tmp_path))
    assert str(err.value) == f"input_dir {tmp_path}: no images (.png, .jpg, .jpeg) in it"
    save(tmp_path / "a.png", rgb(0))
    save(tmp_path / "a.jpg", rgb(0))
    with pytest.raises(data.DataError, match=r"ImageId 'a' is ambiguous \(a.jpg, a.png\)"):
        data.read_dataset(str(tmp_path))
    (tmp_path / "a.jpg").unlink()
    with pytest.raises(data.DataError, match="metadata CSV .*missing.csv: no such file"):
        data.read_dataset(str(tmp_path), csv=str(tmp_path / "missing.csv"))


# --- odd images -------------------------------------------------------------------------------------


@pytest.fixture
def odd_folder(tmp_path):
    """RGB 299, grey 256x256, RGBA, palette, 16-bit grey, a truncated PNG, a non-image .png, a .txt."""
    folder = tmp_path / "odd"
    folder.mkdir()
    save(folder / "rgb.png", rgb(0))
    grey = rgb(1, 256, 256)[..., 0]
    save(folder / "grey.png", grey)
    rgba = np.concatenate([rgb(2, 64, 80), np.full((64, 80, 1), 7, np.uint8)], axis=-1)
    save(folder / "rgba.png", rgba)
    Image.fromarray(rgb(3, 32, 32)).convert("P").save(folder / "palette.png")
    wide = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30)
    save(folder / "grey16.png", wide)
    full = folder / "whole.png"
    save(full, rgb(4))
    blob = full.read_bytes()
    (folder / "truncated.png").write_bytes(blob[: len(blob) // 2])
    full.unlink()
    (folder / "garbage.png").write_bytes(b"this is not a png at all")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    return folder, {"grey": grey, "rgba": rgba, "wide": wide}


def test_odd_images_are_converted_kept_at_size_and_said_once(odd_folder):
    folder, raw = odd_folder
    ds = data.read_dataset(str(folder))
    assert ds.ids == ("grey", "grey16", "palette", "rgb", "rgba", "truncated")
    assert [s.path for s in ds.skipped] == [str(folder / "garbage.png")]
    assert ds.skipped[0].reason.startswith(f"{folder / 'garbage.png'}: cannot read image (cannot identify image file")
    assert dict(zip(ds.ids, ds.sizes))["grey"] == (256, 256) and dict(zip(ds.ids, ds.sizes))["rgba"] == (64, 80)
    notes = "\n".join(ds.notes)
    for text in ("1 image(s) greyscale: the grey channel is repeated as R, G and B (grey)",
                 "1 image(s) RGBA: the alpha channel is dropped (stored colour values kept, no compositing) (rgba)",
                 "1 image(s) palette: expanded to RGB", "16-bit greyscale: rounded to 8 bits",
                 "file(s) in " + str(folder) + " skipped, unreadable"):
        assert notes.count(text) == 1, text
    assert "not 299x299 (32x32: 1, 50x40: 1, 80x64: 1, 256x256: 1)" in notes

    grey = data.load_image(ds.paths[ds.ids.index("grey")])
    assert grey.shape == (256, 256, 3) and grey.dtype == np.float32
    np.testing.assert_array_equal(np.round(grey * 255).astype(np.uint8), np.repeat(raw["grey"][..., None], 3, -1))
    rgba = data.read_image_uint8(ds.paths[ds.ids.index("rgba")])
    np.testing.assert_array_equal(rgba, raw["rgba"][..., :3])
    wide = data.read_image_uint8(ds.paths[ds.ids.index("grey16")])
    np.testing.assert_array_equal(wide[..., 1], np.round(raw["wide"] / 257.0).astype(np.uint8))
    palette = data.read_image_uint8(ds.paths[ds.ids.index("palette")])
    np.testing.assert_array_equal(palette, np.asarray(Image.open(folder / "palette.png").convert("RGB")))


def test_truncated_image_is_skipped_and_listed_while_the_rest_loads(odd_folder):
    folder, _ = odd_folder
    ds = data.read_dataset(str(folder))
    images, skipped = data.load_images(ds.paths)
    assert len(images) == len(ds) - 1
    assert [s.path for s in skipped] == [str(folder / "truncated.png")]
    assert skipped[0].reason.startswith(f"{folder / 'truncated.png'}: cannot read image (")
    reader = data.batches(ds, batch_size=4)
    seen = [i for batch in reader for i in batch.ids]
    assert sorted(seen) == sorted(set(ds.ids) - {"truncated"})
    assert [s.path for s in reader.skipped] == [str(folder / "truncated.png")]
    with pytest.raises(data.ImageReadError):
        data.load_image(str(folder / "truncated.png"))


# --- batches ----------------------------------------------------------------------------------------


def test_batches_group_equal_sizes_cover_everything_and_pad(tmp_path):
    sizes = [(299, 299), (256, 256), (299, 299), (299, 299), (256, 256), (100, 120)]
    for k, (h, w) in enumerate(sizes):
        save(tmp_path / f"im{k}.png", rgb(k, h, w))
    ds = data.read_dataset(str(tmp_path))
    plan = data.batches_by_size(range(len(ds)), ds.sizes, 2)
    assert sorted(i for b in plan for i in b) == list(range(6))
    assert all(len(b) <= 2 and len({ds.sizes[i] for i in b}) == 1 for b in plan)
    assert plan == [[0, 2], [1, 4], [3], [5]]
    batches = list(data.batches(ds, 2, pad=True))
    assert [b.images.shape for b in batches] == [(2, 299, 299, 3), (2, 256, 256, 3), (2, 299, 299, 3), (2, 100, 120, 3)]
    assert batches[2].count == 1 and not batches[2].images[1].any()
    np.testing.assert_array_equal(np.round(batches[1].images[1] * 255).astype(np.uint8), rgb(4, 256, 256))
    assert batches[0].labels is None


# --- shards -----------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text("abcdef0123456789", min_size=1, max_size=8), unique=True, max_size=40),
       st.integers(1, 9), st.randoms(use_true_random=False))
def test_shards_cover_every_id_once_and_ignore_listing_order(ids, num_shards, rnd):
    shards = [data.shard(ids, num_shards, k) for k in range(num_shards)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    shuffled = list(ids)
    rnd.shuffle(shuffled)
    assert [data.shard(shuffled, num_shards, k) for k in range(num_shards)] == shards


def test_shard_errors_and_select(folder):
    with pytest.raises(data.DataError, match=r"shard_index must be in 0..2, got 3"):
        data.shard(["a"], 3, 3)
    with pytest.raises(data.DataError, match="num_shards must be an integer >= 1, got 0"):
        data.shard(["a"], 0, 0)
    ds = data.read_dataset(str(folder))
    part = ds.select(data.shard(list(reversed(ds.ids)), 2, 1))
    assert part.ids == ("c",) and part.labels.tolist() == [999] and part.targets.tolist() == [1]
    with pytest.raises(data.DataError, match="no image with ImageId 'zz'"):
        ds.select(["zz"])


# --- output -----------------------------------------------------------------------------------------


def test_write_png_is_lossless_named_like_the_input_and_leaves_no_temporary(tmp_path):
    pixels = rgb(7, 31, 17)
    path = data.output_path(str(tmp_path), "abc")
    assert path == str(tmp_path / "abc.png")
    data.write_png(pixels.astype(np.float32) / 255.0, path)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels)
    data.write_png(pixels[::-1].copy(), path)  # uint8 in, overwrite
    np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels[::-1])
    assert os.listdir(tmp_path) == ["abc.png"]


def test_interrupted_write_keeps_the_old_file_and_no_half_image(tmp_path, monkeypatch):
    path = str(tmp_path / "x.png")
    data.write_png(rgb(1, 8, 8), path)
    before = Path(path).read_bytes()

    def interrupted(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.write_png(rgb(2, 8, 8), path)
    assert Path(path).read_bytes() == before and os.listdir(tmp_path) == ["x.png"]


def test_write_png_rejects_bad_input(tmp_path):
    with pytest.raises(data.DataError, match=r"a.png: image values must be in \[0, 1\], got \[1.5, 1.5\]$"):
        data.write_png(np.full((4, 4, 3), 1.5), str(tmp_path / "a.png"))
    with pytest.raises(data.DataError, match="a.png: image has NaN or infinite values$"):
        data.write_png(np.full((4, 4, 3), np.nan), str(tmp_path / "a.png"))
    with pytest.raises(data.DataError, match=r"a.jpg: outputs are PNG files"):
        data.write_png(np.zeros((4, 4, 3)), str(tmp_path / "a.jpg"))
    with pytest.raises(data.DataError, match=r"expected an RGB image \[H, W, 3\], got shape \(4, 4\)"):
        data.write_png(np.zeros((4, 4)), str(tmp_path / "a.png"))
    assert os.listdir(tmp_path) == []


def test_output_dir_must_not_be_the_input_dir_or_inside_it(folder, tmp_path):
    with pytest.raises(data.DataError) as err:
        data.check_output_dir(str(folder), str(folder) + "/")
    assert str(err.value) == (f"output_dir {folder}/ is input_dir {folder}: outputs are never written next to the "
                              f"original images; choose another folder")
    with pytest.raises(data.DataError, match=r"is inside input_dir"):
        data.check_output_dir(str(folder), str(folder / "adv"))
    with pytest.raises(data.DataError, match=r"is inside input_dir"):
        data.check_output_dir(str(folder), str(folder / ".." / "images" / "sub" / "deeper"))
    assert not (folder / "adv").exists()
    out = tmp_path / "outputs" / "adv"
    assert data.check_output_dir(str(folder), str(out)) == str(out)
    assert not (tmp_path / "outputs").exists()  # checking creates nothing: make_output_dir does
    assert data.check_output_dir(str(folder), str(folder.parent)) == str(folder.parent)  # a parent is fine
