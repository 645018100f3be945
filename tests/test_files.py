"""tfattack.files: whole-or-nothing writes, the umask's permissions, stale temporary files, writability checks."""

import errno
import os
from pathlib import Path

import pytest

from tfattack import files

skip_as_root = pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")


@pytest.fixture
def umask():
    """Sets the process umask for one test: umask(value); restores the old one afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = str(tmp_path / "record.json")
    files.atomic_write(path, lambda stream: stream.write(b"first"))
    files.atomic_write_text(path, "second \u00e9")
    assert Path(path).read_text(encoding="utf-8") == "second \u00e9"
    assert os.listdir(tmp_path) == ["record.json"]


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    ValueError("the writer's own bug"),
    KeyboardInterrupt(),
])
def test_failed_write_keeps_the_old_content_and_leaves_no_temporary(tmp_path, failure):
    path = tmp_path / "x.png"
    path.write_bytes(b"old image")

    def write(stream):
        stream.write(b"half of a new ")
        raise failure

    with pytest.raises(type(failure)) as err:
        files.atomic_write(str(path), write)
    if isinstance(failure, OSError):  # the same error, now naming the output it was writing
        assert (err.value.errno, err.value.filename) == (failure.errno, str(path))
    else:
        assert err.value is failure
    assert path.read_bytes() == b"old image"
    assert os.listdir(tmp_path) == ["x.png"] and files.stale_temp_files(str(tmp_path)) == []


def test_failed_first_write_leaves_nothing(tmp_path):
    def write(stream):
        stream.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        files.atomic_write(str(tmp_path / "new.txt"), write)
    assert err.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("proc", [True, False], ids=["proc", "no_proc"])
def test_current_umask_reads_without_changing_it(umask, monkeypatch, proc):
    opened = []
    if not proc:  # a system without /proc/self/status: the set-and-restore path
        def no_proc(name, *args, **kwargs):
            opened.append(name)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)
        monkeypatch.setattr(files, "open", no_proc, raising=False)
    umask(0o027)
    assert files.current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # still in place after the read
    assert opened == ([] if proc else ["/proc/self/status"])


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o000, 0o666)])
def test_permissions_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = tmp_path / "out.txt"
    files.atomic_write_text(str(path), "a")
    assert path.stat().st_mode & 0o777 == mode
    path.chmod(0o600)
    files.atomic_write_text(str(path), "b")
    assert path.stat().st_mode & 0o777 == mode and path.read_text() == "b"


def test_stale_temp_files_are_found_and_removed(tmp_path):
    (tmp_path / f"{files.TEMP_PREFIX}abc.png").write_bytes(b"half")
    (tmp_path / f"{files.TEMP_PREFIX}def.json").write_bytes(b"{")
    (tmp_path / "done.png").write_bytes(b"whole")
    (tmp_path / "tmp-not-ours.png").write_bytes(b"whole")
    (tmp_path / "[odd] folder").mkdir()
    (tmp_path / "[odd] folder" / f"{files.TEMP_PREFIX}x").write_bytes(b"")
    assert files.stale_temp_files(str(tmp_path)) == [str(tmp_path / f"{files.TEMP_PREFIX}abc.png"),
                                                     str(tmp_path / f"{files.TEMP_PREFIX}def.json")]
    assert files.stale_temp_files(str(tmp_path / "[odd] folder")) == [
        str(tmp_path / "[odd] folder" / f"{files.TEMP_PREFIX}x")]  # glob characters in the folder name
    assert files.remove_stale_temp_files(str(tmp_path)) == 2
    assert sorted(os.listdir(tmp_path)) == ["[odd] folder", "done.png", "tmp-not-ours.png"]
    assert files.remove_stale_temp_files(str(tmp_path)) == 0


def test_check_writable_leaves_nothing_and_names_the_folder(tmp_path):
    files.check_writable(str(tmp_path), "--output_dir out/")
    assert os.listdir(tmp_path) == []
    with pytest.raises(PermissionError) as err:
        files.check_writable(str(tmp_path / "absent"), "--output_dir out/")
    assert str(err.value) == "--output_dir out/: cannot create files there (No such file or directory)"


@skip_as_root
def test_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "x.txt").write_text("old")
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError) as err:
            files.check_writable(str(locked), "--output_dir locked/")
        assert str(err.value) == "--output_dir locked/: cannot create files there (not writable)"
        with pytest.raises(PermissionError) as err:
            files.atomic_write_text(str(locked / "x.txt"), "new")
        assert str(locked / "x.txt") in str(err.value) and files.TEMP_PREFIX not in str(err.value)
        assert (locked / "x.txt").read_text() == "old" and os.listdir(locked) == ["x.txt"]
    finally:
        locked.chmod(0o755)
