"""The run record (`run.json`): the settings an output folder's images were made with, image by image.

One `RunRecord` per run (per shard of a sharded run: `run.shard-I-of-K.json`, joined by `merge`). It holds

  settings  everything that decides the pixels: the attack's resolved config (seed included), eps, targeted
            mode, label source, the surrogates with the identity of their weight files, the fusion, the batch
            size and the replica count. Two runs with equal settings make equal images.
  images    per ImageId: the sha256 of the input file, of the PNG written, and the label (and target)
            attacked. An image is reused by a rerun only if its entry, its input and its output still match.
  info      what describes the run without deciding its pixels (flags, command, environment, timing,
            failures, status).

The record is written before the first image and after every batch (atomically, `tfattack.files`), so a
killed run leaves a record that lists exactly the images it finished. A lock file per record keeps a
second process from writing the same run's images at the same time.

Records written by tfattack 0.1 (no `format` key) are read too: their settings lack the weight identity,
batch size and per-image inputs, so a rerun compares what they do record and says what it cannot check.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import textwrap
from typing import Dict, List, Optional, Sequence

from tfattack import files
from tfattack.errors import UserError

FORMAT = 2
RECORD = "run.json"
# Keys written at the top of the record for the readers of the 0.1 layout (evaluate.py, the transfer
# bench, users' scripts); derived from `settings` and `images`, never read back from a format-2 record.
_DERIVED = ("attack_config", "max_epsilon", "targeted", "label_source", "models", "fuse", "predicted_labels")
_FINGERPRINT_CHUNK = 1 << 20


class RecordError(UserError):
    """A run record that cannot be trusted or does not match this run."""


def record_name(num_shards: int = 1, shard_index: int = 0) -> str:
    """`run.json` for a whole run; one record per shard otherwise (scripts/merge_runs.py joins them)."""
    return RECORD if num_shards == 1 else f"run.shard-{shard_index}-of-{num_shards}.json"


def file_sha256(path: str) -> str:
    return files.file_digest(path, "sha256")


def _weight_files(path: str) -> List[str]:
    """The files that hold a model's weights, from the path its loader read."""
    if os.path.isdir(path):
        return sorted(os.path.join(path, n) for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))
    if os.path.isfile(path):
        if path.endswith(".json"):  # TF.js: model.json and its weight shards beside it
            folder = os.path.dirname(path)
            return [path] + sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".bin"))
        return [path]
    # A TF checkpoint prefix: model.ckpt.index, model.ckpt.data-00000-of-00001
    folder, stem = os.path.split(path)
    folder = folder or "."
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(stem + ".")) \
        if os.path.isdir(folder) else []


def weights_fingerprint(path: str) -> str:
    """A sha256 over each weight file's name, size, first and last MiB: tells weight files apart without
    reading gigabytes (a changed file changes its size or its ends in practice; the path is recorded too)."""
    digest = hashlib.sha256()
    found = _weight_files(path)
    if not found:
        raise RecordError(f"model weights {path}: no such file")
    for name in found:
        size = os.path.getsize(name)
        digest.update(f"{os.path.basename(name)}\0{size}\0".encode())
        with open(name, "rb") as stream:
            digest.update(stream.read(_FINGERPRINT_CHUNK))
            if size > 2 * _FINGERPRINT_CHUNK:
                stream.seek(-_FINGERPRINT_CHUNK, os.SEEK_END)
                digest.update(stream.read(_FINGERPRINT_CHUNK))
    return digest.hexdigest()


def model_identity(model, weight: float) -> dict:
    """One surrogate as the settings record it: name, fusion weight and which weights it ran with."""
    info = getattr(model, "info", {}) or {}
    entry = {"name": model.spec.name, "weight": float(weight), "compute_dtype": getattr(model, "compute_dtype", None)}
    if info.get("random_weights"):
        entry["weights"] = {"random_weights": True, "seed": info.get("seed")}
    elif info.get("checkpoint"):
        path = os.path.abspath(str(info["checkpoint"]))
        entry["weights"] = {"path": path, "fingerprint": weights_fingerprint(path)}
    else:
        entry["weights"] = {"unknown": True}
    return entry


def settings(*, attack_config: dict, max_epsilon: float, targeted: bool, label_source: str, models: Sequence[dict],
             fuse: str, batch_size: int, replicas: int = 1) -> dict:
    """The settings that decide a run's pixels (see the module doc), JSON-normalised."""
    return _normalised({"attack": attack_config, "max_epsilon": float(max_epsilon), "targeted": bool(targeted),
                        "label_source": label_source, "models": list(models), "fuse": fuse,
                        "batch_size": int(batch_size), "replicas": int(replicas)})


def _current_attack_fields(recorded: dict) -> dict:
    """The recorded attack config as this version writes it: fields added since it was recorded get their
    defaults (which reproduce the old behaviour), so only real differences show."""
    from tfattack.attacks import AttackConfig
    if isinstance(recorded.get("attack"), dict):
        try:
            recorded = dict(recorded, attack=_normalised(AttackConfig.from_dict(recorded["attack"]).to_dict()))
        except (ValueError, TypeError):
            pass  # left as recorded: the comparison then names what differs
    return recorded


def _normalised(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flatten(value, prefix: str = "") -> Dict[str, object]:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {f"{prefix}.count": len(value)}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


def _short(value, limit: int = 48) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    if len(text) <= limit:
        return text
    # At a word boundary where there is one; a single long token (a path, a digest) is cut inside it.
    shortened = textwrap.shorten(text, limit, placeholder="...")
    return shortened if shortened != "..." else text[:limit - 3] + "..."


@dataclasses.dataclass
class RunRecord:
    path: str
    settings: dict
    images: Dict[str, dict] = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)
    legacy: bool = False  # read from a tfattack 0.1 record: settings partial, no per-image entries

    # --- reading and writing --------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str) -> Optional["RunRecord"]:
        """The record at `path`, None if there is none; RecordError (one line) if it is unreadable."""
        if not os.path.exists(path):
            return None
        try:
            with open(path) as stream:
                payload = json.load(stream)
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
            if "format" not in payload:
                return cls._from_legacy(path, payload)
            if payload["format"] != FORMAT:
                raise ValueError(f"record format {payload['format']!r}, this tfattack reads {FORMAT}")
            images = payload["images"]
            if not isinstance(images, dict) or not isinstance(payload["settings"], dict):
                raise ValueError("'settings' and 'images' must be objects")
            info = {k: v for k, v in payload.items() if k not in ("format", "settings", "images") + _DERIVED}
            return cls(path, _current_attack_fields(payload["settings"]), images, info)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RecordError(f"{path}: not a readable run record ({' '.join(str(err).split())}); move it away "
                              f"or pass --overwrite to attack every image again") from None

    @classmethod
    def _from_legacy(cls, path: str, payload: dict) -> "RunRecord":
        from tfattack.attacks import AttackConfig
        recorded = {}
        if payload.get("attack_config"):
            recorded["attack"] = AttackConfig.from_dict(payload["attack_config"]).to_dict()
        for key in ("max_epsilon", "targeted", "label_source", "fuse"):
            if key in payload:
                recorded[key] = payload[key]
        # The transfer bench's 0.1 records list its surrogates by name: an ensemble of equal, normalised weights.
        named = payload.get("surrogates", [])
        models = payload.get("models") or [{"name": n, "weight": 1.0 / len(named)} for n in named]
        if models:
            recorded["models"] = [{"name": m["name"], "weight": float(m.get("weight", 1.0))} for m in models]
        if "max_epsilon" in recorded:
            recorded["max_epsilon"] = float(recorded["max_epsilon"])
        return cls(path, _normalised(recorded), {}, dict(payload), legacy=True)

    def to_json(self) -> dict:
        """The record as written: format, settings, images, the 0.1 top-level keys, then `info`."""
        s = self.settings
        derived = {"attack_config": s.get("attack"), "max_epsilon": s.get("max_epsilon"),
                   "targeted": s.get("targeted"), "label_source": s.get("label_source"),
                   "models": s.get("models"), "fuse": s.get("fuse")}
        if s.get("label_source") == "clean_prediction":
            derived["predicted_labels"] = {i: e["label"] for i, e in sorted(self.images.items())}
        return {**self.info, **derived, "format": FORMAT, "settings": self.settings,
                "images": dict(sorted(self.images.items()))}

    def save(self) -> None:
        text = json.dumps(self.to_json(), indent=1, sort_keys=True, default=str)
        files.atomic_write_text(self.path, text + "\n")

    # --- questions ------------------------------------------------------------------------------------

    def differences(self, current: dict) -> List[str]:
        """What differs between the recorded settings and `current`, one short phrase each ([] if equal).
        A 0.1 record is compared on what it recorded (model names and weights, not their files)."""
        recorded = _flatten(self.settings)
        now = _flatten(_normalised(current))
        if self.legacy:
            now = {k: v for k, v in now.items() if k in recorded or k.endswith(".count")}
            now = {k: v for k, v in now.items() if k.split(".")[0] in self.settings}
        keys = sorted(set(recorded) | set(now))
        out = []
        for key in keys:
            if key not in now and self.legacy:
                continue
            if recorded.get(key, "(absent)") != now.get(key, "(absent)"):
                out.append(f"{key} {_short(recorded.get(key, '(absent)'))} there, {_short(now.get(key, '(absent)'))} now")
        return out

    def made_here(self, image_id: str, source_sha256: str, output_path: str, label: Optional[int] = None,
                  target: Optional[int] = None) -> bool:
        """Was `output_path` made for this input by this record's settings (and, when given, this label/target)?"""
        entry = self.images.get(image_id)
        if not entry or entry.get("source") != source_sha256:
            return False
        if label is not None and entry.get("label") != int(label):
            return False
        if target is not None and entry.get("target") != int(target):
            return False
        try:
            return file_sha256(output_path) == entry.get("output")
        except OSError:
            return False

    # --- shards ---------------------------------------------------------------------------------------

    @classmethod
    def merge(cls, records: Sequence["RunRecord"], path: str) -> "RunRecord":
        """One record for a run whose shards each wrote theirs; RecordError if they are not one complete run."""
        if not records:
            raise RecordError("no shard records to merge")
        totals = {r.info.get("shard", {}).get("num_shards") for r in records}
        if len(totals) != 1 or None in totals:
            raise RecordError(f"shard records disagree on the number of shards: {sorted(map(str, totals))}")
        total = totals.pop()
        indices = sorted(r.info["shard"]["shard_index"] for r in records)
        if indices != list(range(total)):
            missing = sorted(set(range(total)) - set(indices))
            raise RecordError(f"shards missing: {missing} of {total} (run them, then merge again)")
        for record in records[1:]:
            differing = records[0].differences(record.settings) if not record.legacy else []
            if differing or record.legacy != records[0].legacy:
                raise RecordError(f"{record.path} and {records[0].path} are not one run: "
                                  f"{'; '.join(differing[:3]) or 'one is a tfattack 0.1 record'}")
        unfinished = [r for r in records if r.info.get("status") not in (None, "complete")]
        if unfinished:
            raise RecordError(f"{unfinished[0].path} is not complete (status {unfinished[0].info.get('status')!r}); "
                              f"rerun that shard, then merge again")
        ids = [i for r in records for i in r.info["shard"]["image_ids"]]
        if len(ids) != len(set(ids)):
            raise RecordError("an image appears in two shards")
        info = dict(records[0].info)
        info["shard"] = {"num_shards": total, "merged_from": [os.path.basename(r.path) for r in records],
                         "image_ids": ids}
        for key in ("images_written", "images_already_done", "attack_seconds"):
            info[key] = sum(r.info.get(key, 0) for r in records)
        info["failed_images"] = [f for r in records for f in r.info.get("failed_images", [])]
        info["images_per_second"] = info["images_written"] / info["attack_seconds"] if info["attack_seconds"] else 0.0
        images = {k: v for r in records for k, v in r.images.items()}
        return cls(path, records[0].settings, images, info, legacy=records[0].legacy)


def shard_records(folder: str) -> List[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.startswith("run.shard-") and n.endswith(".json"))


class FolderLock:
    """An exclusive lock on one record of a folder, held while a run writes its images (released by the
    kernel if the process dies). A second run on the same record fails at once with a one-line error."""

    def __init__(self, folder: str, record: str = RECORD):
        self.path = os.path.join(folder, f".{record}.lock")
        self._handle = None

    def __enter__(self) -> "FolderLock":
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RecordError(f"{os.path.dirname(self.path)} is being written by another run ({holder}); "
                                  f"wait for it or choose another output folder") from None
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
