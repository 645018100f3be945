"""What the workflow scripts share: model lists, ensembles from names, run records, progress.

Library code: it never reads absl FLAGS; scripts pass plain values in.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

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


def environment() -> dict:
    """Versions and machine facts recorded next to every result."""
    import numpy
    import tensorflow as tf

    import tfattack

    return {"tfattack": tfattack.__version__, "tensorflow": tf.__version__, "numpy": numpy.__version__,
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


class Progress:
    """A one-line progress bar on a terminal (images done, images/s, ETA); plain lines otherwise."""

    def __init__(self, total: int, stream=None, label: str = "images"):
        self.total = max(int(total), 0)
        self.done = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self._interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_print = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def update(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if not self._interactive and now - self._last_print < 10 and self.done < self.total:
            return
        self._last_print = now
        remaining = (self.total - self.done) / self.rate if self.rate > 0 else float("inf")
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if remaining != float("inf") else "--:--:--"
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.label} "
                f"{self.rate:.2f} {self.label}/s ETA {eta}")
        self.stream.write(("\r" + line) if self._interactive else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self._interactive:
            self.stream.write("\n")
            self.stream.flush()
