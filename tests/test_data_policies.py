"""Data policies of issue 14: huge images refused from their header, broken links and truncated files reported by
name, output folders checked before they are created, outputs with the umask's permissions."""

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from tfattack import data

BIG_SIDE = 10000  # 100 megapixels: over data.MAX_IMAGE_PIXELS, and over PIL's warning threshold too


def write_constant_png(path, width, height, rgb=(90, 120, 150)):
    """A real 8-bit RGB PNG of one colour, written without ever holding its pixels in memory.

    Each row is deflated once and followed by a full flush, which resets the compressor: every row then
    compresses to the same bytes, so the IDAT stream is that block repeated, then the final block and the
    Adler-32 of all the rows.
    """
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    row_deflated = deflate.compress(row) + deflate.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(height):
        checksum = zlib.adler32(row, checksum)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        handle.write(chunk(b"IDAT", b"\x78\xda"))  # zlib header: deflate, 32K window, best compression
        for start in range(0, height, 1000):
            handle.write(chunk(b"IDAT", row_deflated * min(1000, height - start)))
        handle.write(chunk(b"IDAT", deflate.flush() + struct.pack(">I", checksum)) + chunk(b"IEND", b""))
    return str(path)


def too_large_reason(path, width, height):
    return f"{path}: {width}x{height} pixels is over the 40000000-pixel limit (tfattack.data.MAX_IMAGE_PIXELS)"


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """big.png (10000x10000 RGB, a few hundred KB on disk) and ok.png (64x48)."""
    folder = tmp_path_factory.mktemp("big")
    write_constant_png(folder / "big.png", BIG_SIDE, BIG_SIDE)
    Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(folder / "ok.png")
    return folder


class Decoded(Exception):
    """Raised by the spy instead of decoding the big image: the test fails without allocating gigabytes."""


@pytest.fixture
def decoded(monkeypatch, big_folder):
    """Names of the files PIL decodes (ImageFile.load) during the test; decoding big.png raises Decoded."""
    names = []
    load = ImageFile.ImageFile.load

    def spy(self):
        names.append(os.path.basename(self.filename))
        if names[-1] == "big.png":
            raise Decoded(self.filename)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return names


def no_bomb_warnings(recwarn):
    return not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_constant_png_writer_makes_real_pngs(tmp_path):
    path = write_constant_png(tmp_path / "small.png", 37, 23, (1, 2, 3))
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (23, 37, 3) and (pixels == [1, 2, 3]).all()


def test_limit_fits_imagenet_work_and_is_below_pils():
    assert data.MAX_IMAGE_PIXELS == 40_000_000
    assert 7000 * 5700 <= data.MAX_IMAGE_PIXELS < BIG_SIDE * BIG_SIDE
    # Otherwise PIL's warning or error, not our message, would be what a user meets first.
    assert data.MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS


def test_image_over_the_limit_is_skipped_from_its_header_and_never_decoded(big_folder, decoded, recwarn):
    big, ok = str(big_folder / "big.png"), str(big_folder / "ok.png")
    with pytest.warns(Image.DecompressionBombWarning):  # what PIL alone says of this file
        Image.open(big).close()
    recwarn.clear()
    reason = too_large_reason(big, BIG_SIDE, BIG_SIDE)

    ds = data.read_dataset(str(big_folder))
    assert ds.ids == ("ok",)
    assert ds.skipped == (data.Skipped(big, reason, data.TOO_LARGE),)
    assert f"1 file(s) in {big_folder} skipped, too large: {reason}" in ds.notes

    for decode in (data.read_image_uint8, data.load_image):
        with pytest.raises(data.ImageTooLargeError) as err:
            decode(big)
        assert str(err.value) == reason
    images, skipped = data.load_images([big, ok])
    assert len(images) == 1 and images[0].shape == (48, 64, 3)
    assert skipped == [data.Skipped(big, reason, data.TOO_LARGE)]
    assert set(decoded) == {"ok.png"} and no_bomb_warnings(recwarn)


def test_batch_reader_refuses_an_image_that_grew_past_the_limit(big_folder, decoded, monkeypatch):
    big = str(big_folder / "big.png")
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 2 * BIG_SIDE * BIG_SIDE)
    ds = data.read_dataset(str(big_folder))  # headers only: nothing decoded even when big.png is allowed
    assert ds.ids == ("big", "ok") and decoded == []
    with pytest.raises(Decoded):  # the spy does see a decode of big.png when the limit allows it
        data.read_image_uint8(big)
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 40_000_000)
    decoded.clear()

    reader = data.batches(ds, batch_size=2)
    assert [b.ids for b in reader] == [("ok",)]
    assert reader.skipped == [data.Skipped(big, too_large_reason(big, BIG_SIDE, BIG_SIDE), data.TOO_LARGE)]
    assert set(decoded) == {"ok.png"}


def test_refusing_a_huge_image_keeps_memory_low(big_folder):
    # In a fresh process, so the peak resident size is this check's alone: VmHWM, the peak of the process's own
    # memory (ru_maxrss would include what the forking pytest process had used before the exec). Decoding big.png
    # would need 300 MB as uint8 and 1.2 GB as float32.
    script = f"""if True:
        from tfattack import data
        big = {str(big_folder / "big.png")!r}
        ds = data.read_dataset({str(big_folder)!r})
        assert ds.ids == ("ok",), ds.ids
        assert len(data.load_images([big])[1]) == 1
        try:
            data.read_image_uint8(big)
        except data.ImageTooLargeError:
            pass
        with open("/proc/self/status") as status:
            print([int(line.split()[1]) // 1024 for line in status if line.startswith("VmHWM:")][0])
    """
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(root)))
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) < 200  # MB


def test_pil_decompression_bomb_error_gives_our_message(big_folder, decoded, monkeypatch, recwarn):
    big = str(big_folder / "big.png")
    # A PIL limit this low makes Image.open itself raise for big.png, as it does by default past 179 megapixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(big)
    reason = too_large_reason(big, BIG_SIDE, BIG_SIDE)
    ds = data.read_dataset(str(big_folder))
    assert ds.skipped == (data.Skipped(big, reason, data.TOO_LARGE),)
    with pytest.raises(data.ImageTooLargeError) as err:
        data.read_image_uint8(big)
    assert str(err.value) == reason
    assert decoded == [] and no_bomb_warnings(recwarn)


def test_jpeg_past_pils_error_threshold_gives_our_message(tmp_path, recwarn):
    # A real JPEG whose frame header (SOF0) says 20000x20000: 400 megapixels, where PIL's Image.open itself
    # raises DecompressionBombError by default. Only the header is read, so the missing pixel data never matters.
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, "JPEG")
    blob = bytearray(buffer.getvalue())
    frame = blob.index(b"\xff\xc0")
    blob[frame + 5:frame + 9] = struct.pack(">HH", 20000, 20000)  # height, width
    path = tmp_path / "huge.jpg"
    path.write_bytes(bytes(blob))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    ds = data.read_dataset(str(tmp_path))
    assert ds.ids == ("ok",)
    assert ds.skipped == (data.Skipped(str(path), too_large_reason(path, 20000, 20000), data.TOO_LARGE),)
    with pytest.raises(data.ImageTooLargeError, match="20000x20000 pixels is over the 40000000-pixel limit"):
        data.read_image_uint8(str(path))
    assert no_bomb_warnings(recwarn)


# --- every skipped file is named, with its reason ------------------------------------------------------------------


def test_skip_reasons_start_with_the_file(tmp_path):
    assert data.Skipped("x/a.png", "cannot read").reason == "x/a.png: cannot read"
    assert data.Skipped("x/a.png", "x/a.png: cannot read").reason == "x/a.png: cannot read"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "whole.png")
    blob = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(blob[: len(blob) // 2])  # header intact, pixel data cut
    (tmp_path / "garbage.png").write_bytes(b"not a png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "gone.png")

    ds = data.read_dataset(str(tmp_path))
    assert ds.ids == ("truncated", "whole")
    reader = data.batches(ds, batch_size=4)
    assert [b.ids for b in reader] == [("whole",)]
    _, loaded_skips = data.load_images(ds.paths)
    skipped = list(ds.skipped) + reader.skipped + loaded_skips
    assert sorted(os.path.basename(s.path) for s in skipped) == ["garbage.png", "gone.png", "truncated.png",
                                                                 "truncated.png"]
    for skip in skipped:
        assert skip.reason.startswith(f"{skip.path}: ") and "\n" not in skip.reason
    assert reader.skipped[0].reason.startswith(f"{tmp_path / 'truncated.png'}: cannot read image (")


def test_broken_symbolic_links_are_listed_not_lost(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(elsewhere / "real.png")
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "ok.png")
    os.symlink(elsewhere / "real.png", folder / "linked.png")
    os.symlink(elsewhere / "deleted.png", folder / "gone.png")
    os.symlink("loop.png", folder / "loop.png")
    os.symlink(elsewhere, folder / "a_folder.png")  # a link to a folder is no image file: not listed

    ds = data.read_dataset(str(folder))
    assert ds.ids == ("linked", "ok")
    gone = f"{folder / 'gone.png'}: broken symbolic link to {elsewhere / 'deleted.png'} (No such file or directory)"
    loop = f"{folder / 'loop.png'}: broken symbolic link to loop.png (Too many levels of symbolic links)"
    assert ds.skipped == (data.Skipped(str(folder / "gone.png"), gone, data.BROKEN_LINK),
                          data.Skipped(str(folder / "loop.png"), loop, data.BROKEN_LINK))
    assert f"2 file(s) in {folder} skipped, broken symbolic link: {gone}; {loop}" in ds.notes

    for name in ("ok.png", "linked.png", "loop.png"):
        (folder / name).unlink()
    with pytest.raises(data.DataError) as err:
        data.read_dataset(str(folder))
    assert str(err.value) == f"input_dir {folder}: none of its 1 image file(s) can be read (first: {gone})"


# --- output folder: checked first, created later -------------------------------------------------------------------


def test_check_output_dir_creates_nothing_and_make_output_dir_creates(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    out = tmp_path / "runs" / "adv"
    with pytest.raises(data.DataError, match="is inside input_dir"):
        data.check_output_dir(str(images), str(images / "adv"))
    assert data.check_output_dir(str(images), str(out)) == str(out)
    assert sorted(os.listdir(tmp_path)) == ["images"]

    assert data.make_output_dir(str(out)) == str(out) and out.is_dir()
    assert data.make_output_dir(str(out)) == str(out)  # already there: fine
    assert os.listdir(out) == []  # the writability probe is gone

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(data.DataError) as err:
        data.check_output_dir(str(images), str(tmp_path / "a_file"))
    assert str(err.value) == f"output_dir {tmp_path / 'a_file'}: exists and is not a folder"
    with pytest.raises(data.DataError) as err:
        data.make_output_dir(str(tmp_path / "a_file"))
    assert str(err.value) == f"output_dir {tmp_path / 'a_file'}: exists and is not a folder"
    with pytest.raises(data.DataError) as err:
        data.make_output_dir(str(tmp_path / "a_file" / "adv"))
    assert str(err.value) == f"output_dir {tmp_path / 'a_file' / 'adv'}: cannot be created (Not a directory)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_make_output_dir_in_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(data.DataError) as err:
            data.make_output_dir(str(locked / "adv"))
        assert str(err.value) == f"output_dir {locked / 'adv'}: cannot be created (Permission denied)"
        with pytest.raises(data.DataError) as err:
            data.make_output_dir(str(locked))
        assert str(err.value) == f"output_dir {locked}: cannot create files there (not writable)"
    finally:
        locked.chmod(0o755)


# --- output permissions --------------------------------------------------------------------------------------------


@pytest.fixture
def umask():
    """Sets the process umask for one test: umask(value); restores the old one afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_write_png_mode_follows_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = str(tmp_path / "x.png")
    data.write_png(np.zeros((4, 4, 3), np.uint8), path)
    assert os.stat(path).st_mode & 0o777 == mode
    os.chmod(path, 0o600)
    data.write_png(np.ones((4, 4, 3), np.uint8), path)  # an overwrite gets the umask's mode too
    assert os.stat(path).st_mode & 0o777 == mode
    assert os.listdir(tmp_path) == ["x.png"]
    assert Path(path).read_bytes().startswith(b"\x89PNG")
