"""What the workflow scripts share: model lists, ensembles from names, run records, progress.

Library code: it never reads absl FLAGS; scripts pass plain values in.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from tfattack import files
from tfattack.errors import UserError


class UsageError(UserError):
    """Bad command-line input: the scripts print it as one line and exit with code 2."""


def parse_models(entries: Sequence[str], flag: str = "--models", surrogates: bool = False) -> List[Tuple[str, float]]:
    """["ens3_adv_inception_v3", "inception_v3:0.5"] -> [(name, weight)], weights default 1.

    Each name once, each weight a finite number > 0; with `surrogates`, only models with input gradients
    (a black-box interpreter such as the int8 TFLite models can be a victim, not a surrogate).
    """
    import tfattack
    from tfattack.names import did_you_mean

    known = sorted(tfattack.models.available())
    parsed = []
    for entry in entries:
        name, _, weight = entry.strip().partition(":")
        if not name:
            continue
        if name not in known:
            raise UsageError(f"{flag}: unknown model {name!r}{did_you_mean(name, known)}; known models: "
                             f"{', '.join(known)}")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise UsageError(f"{flag}: weight of {name!r} must be a number, got {weight!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"{flag}: weight of {name!r} must be a finite number > 0, got {weight}")
        if any(name == earlier for earlier, _ in parsed):
            raise UsageError(f"{flag}: {name!r} is listed twice; list it once (with a weight, {name}:2, to count "
                             f"it more)")
        if surrogates and not tfattack.models.get(name).differentiable:
            raise UsageError(f"{flag}: {name!r} is a black-box model ({tfattack.models.get(name).source}, no input "
                             f"gradients): it can be a victim (evaluate.py --models) but not a surrogate")
        parsed.append((name, value))
    if not parsed:
        raise UsageError(f"{flag}: give at least one model; known models: {', '.join(known)}")
    return parsed


def parse_checkpoints(entries: Sequence[str], flag: str = "--checkpoints") -> Dict[str, str]:
    """["inception_v3=/path/ckpt", ...] -> {name: path}."""
    out = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"{flag}: entries are name=path, got {entry!r}")
        out[name.strip()] = path.strip()
    return out


def load_models(names: Sequence[str], checkpoints: Optional[Dict[str, str]] = None, model_dir=None,
                random_weights: bool = False, flag: str = "--models"):
    """Loads each named model; a missing or bad checkpoint becomes a one-line UsageError."""
    import tfattack

    checkpoints = dict(checkpoints or {})
    unused = sorted(set(checkpoints) - set(names))
    if unused:
        raise UsageError(f"--checkpoints names model(s) not in {flag}: {', '.join(unused)}")
    models = []
    for name in names:
        try:
            models.append(tfattack.models.load(name, checkpoint=checkpoints.get(name), model_dir=model_dir,
                                               random_weights=random_weights))
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"{flag}: {err}") from None
    return models


def build_ensemble(entries: Sequence[Tuple[str, float]], checkpoints=None, model_dir=None, fuse: str = "logits",
                   random_weights: bool = False):
    import tfattack

    models = load_models([n for n, _ in entries], checkpoints, model_dir, random_weights)
    return tfattack.models.Ensemble(models, [w for _, w in entries], fuse=fuse)


@functools.lru_cache(maxsize=None)
def source_digest(package: Optional[str] = None) -> str:
    """The first 12 hex digits of SHA-256 over a package's Python sources (relative paths and bytes; default: this
    installed tfattack): which code made a result, where the version number says too little (a checkout between
    releases)."""
    import hashlib

    package = package or os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(package):
        dirs.sort()
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, package).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:12]


# Thread-pool sizes set in the environment; with oneDNN's rewrites on, how a kernel splits its work can change
# a result's last bits, so a run that sets them says so (unset: TensorFlow's default, one per core).
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def kernels(environ: Optional[Mapping[str, str]] = None, device: Optional[str] = None) -> str:
    """Which kernels a run computes with, in the words that set them: the device kind, TensorFlow's oneDNN switch
    (its rewrites change a result's last bits; unset is TensorFlow's default, on for x86 Linux) and the thread-pool
    sizes where the environment sets them. Two runs of the same sources and settings give the same bytes when this
    is equal and says `TF_ENABLE_ONEDNN_OPTS=0`. `environ` and `device` ("CPU" or "GPU"): another process's (a Ray
    worker's), instead of this one's."""
    if environ is None:
        environ = os.environ
    if device is None:
        import tensorflow as tf
        device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    threads = "".join(f" {name}={environ[name]}" for name in THREAD_VARIABLES if name in environ)
    return f"{device} TF_ENABLE_ONEDNN_OPTS={environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}{threads}"


def environment() -> dict:
    """Versions and machine facts recorded next to every result."""
    import numpy
    import tensorflow as tf

    import tfattack

    return {"tfattack": tfattack.__version__, "tfattack_sources": source_digest(), "tensorflow": tf.__version__,
            "numpy": numpy.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "devices": [d.name for d in tf.config.list_logical_devices()],
            # oneDNN's rewrites change the last bits of results, and which graph they run can vary per process
            # (README, "Transfer"); None is TensorFlow's default (on for x86 Linux).
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}


def check_output_folder(folder: str, what: str) -> None:
    """UsageError, before any work, when files cannot be created in `folder` (or, if it does not exist yet,
    when it cannot be made: its nearest existing parent must be a writable folder). Creates nothing."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{what} {folder}: {existing} is not a folder")
    try:
        files.check_writable(existing, f"{what} {folder}")
    except PermissionError as err:
        raise UsageError(str(err)) from None


def write_json_atomic(path: str, payload) -> None:
    """Writes JSON whole or not at all (`tfattack.files.atomic_write`): readers never see half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True, default=str))


def unit_of(label: str) -> str:
    """tqdm's unit for a count of `label`: 'images' -> 'img' (tqdm writes rates as 'img/s' and 's/img')."""
    return {"images": "img"}.get(label, label)


class _LogLines:
    """A file for tqdm that is not a terminal: each status tqdm redraws with a carriage return becomes a line of its
    own, so a log shows a line per refresh instead of one very long line."""

    def __init__(self, stream):
        self.stream = stream
        self.last = None

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            line = line.rstrip()
            count = line.split("|")[-1].split("[")[0].strip()  # 'n/total': not the bar (its width varies) or times
            if line.strip() and count != self.last:  # closing redraws the final count once more
                self.stream.write(line + "\n")
                self.last = count

    def flush(self) -> None:
        self.stream.flush()


class Progress:
    """Progress on stderr through tqdm (count, rate, ETA): a live bar on a terminal; elsewhere (a log file, a pipe)
    a plain line at most every `log_interval` seconds and one at the end. `count_bytes=True` counts bytes
    (downloads)."""

    def __init__(self, total: Optional[int], stream=None, label: str = "images", *, count_bytes: bool = False,
                 description: Optional[str] = None, log_interval: float = 10.0):
        from tqdm import tqdm

        stream = stream or sys.stderr
        interactive = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=None if total is None else max(int(total), 0), desc=description,
                        unit="B" if count_bytes else unit_of(label), unit_scale=count_bytes,
                        unit_divisor=1024 if count_bytes else 1000,
                        file=stream if interactive else _LogLines(stream), ascii=not interactive,
                        dynamic_ncols=interactive, ncols=None if interactive else 100,
                        mininterval=0.1 if interactive else log_interval,
                        maxinterval=log_interval)

    @property
    def done(self) -> int:
        return self.bar.n

    def update(self, count: int) -> None:
        self.bar.update(count)

    def update_to(self, done: int, total: Optional[int] = None) -> None:
        """For callers that report totals so far (downloads: bytes on disk, file size)."""
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()
