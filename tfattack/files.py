"""Writing output files: whole or not at all, with the permissions the user's umask asks for.

Every file tfattack writes (adversarial PNGs, run records, reports) goes through `atomic_write`: the bytes
go to a hidden temporary file in the same folder, are flushed to disk, then renamed over the target, so a
killed process or a full disk leaves the old file or the complete new one, never half of one. Temporary
files are created 0600 by the OS; they get `0666 & ~umask` before the rename, like a plain `open()`
would give, so a folder shared with a group stays readable by it.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import tempfile
import threading
from typing import Callable, IO, List

TEMP_PREFIX = ".tmp-"
_UMASK_LOCK = threading.Lock()


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in blocks: hashlib.file_digest where Python has it (3.11+)."""
    with open(path, "rb") as stream:
        if hasattr(hashlib, "file_digest"):
            return hashlib.file_digest(stream, algorithm).hexdigest()
        digest = hashlib.new(algorithm)
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
        return digest.hexdigest()


def current_umask() -> int:
    """The process's umask, read without changing it where the kernel shows it (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere os.umask can only be read by setting it: set it straight back, and meanwhile to the strictest
    # value, so a file another thread creates in between is at worst too private, never too open.
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write(stream)` on a temporary file next to `path`, then renames it to `path`.

    A failure (including ENOSPC and KeyboardInterrupt) removes the temporary file and re-raises; `path`
    keeps its old content. Raises OSError with the path in its message for an unwritable folder.
    """
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    try:
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=suffix)
    except OSError as err:
        # mkstemp's message names the random temporary name; the user needs the file they asked for.
        raise OSError(err.errno, f"cannot create a temporary file next to it ({err.strerror})", path) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        if err.filename is not None:
            raise
        # A failed write() (a full disk, a file-size limit) names no file: say which output it was.
        raise OSError(err.errno, err.strerror or str(err), path) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def stale_temp_files(folder: str) -> List[str]:
    """Temporary files a killed writer left in `folder` (never complete outputs: those were renamed)."""
    return sorted(glob.glob(os.path.join(glob.escape(folder), TEMP_PREFIX + "*")))


def remove_stale_temp_files(folder: str) -> int:
    """Deletes `stale_temp_files(folder)`; call it only while holding the folder's lock. Returns the count."""
    removed = 0
    for path in stale_temp_files(folder):
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def check_writable(folder: str, what: str) -> None:
    """Checks, before any long work, that files can be created in `folder` (which exists), by creating and
    deleting a probe file.

    Raises PermissionError, whatever stops the probe (no permission, read-only or full file system, no such
    folder), with a one-line message naming `what` (e.g. "--output_dir out/") and the reason.
    """
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".probe")
    except OSError as err:
        reason = "not writable" if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else err.strerror
        raise PermissionError(f"{what}: cannot create files there ({reason})") from None
    os.close(handle)
    os.unlink(probe)
