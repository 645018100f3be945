"""Attacking a folder of images: batches of equal size, resumable, atomic PNG outputs.

`attack_dataset` is what `scripts/attack.py` runs once it has parsed its flags: it never reads FLAGS
and never writes outside `output_dir`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfattack import data, files
from tfattack import record as record_lib
from tfattack.attacks import quantize
from tfattack.names import first_few
from tfattack.record import RecordError, RunRecord


@dataclasses.dataclass
class RunSummary:
    written: List[str] = dataclasses.field(default_factory=list)
    already_done: List[str] = dataclasses.field(default_factory=list)
    failed: List[Dict[str, str]] = dataclasses.field(default_factory=list)
    predicted_labels: Dict[str, int] = dataclasses.field(default_factory=dict)
    notes: List[str] = dataclasses.field(default_factory=list)  # what the resume decided, said once
    record: Optional[RunRecord] = None
    seconds: float = 0.0
    checked_only: bool = False  # a finished folder, read without its lock: nothing written, the record untouched

    @property
    def images_per_second(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0


def predict(model, images: np.ndarray) -> np.ndarray:
    return np.argmax(model(tf.constant(images)).numpy(), axis=-1).astype(np.int64)


def clean_predictions(dataset: "data.Dataset", model, batch_size: int) -> Dict[str, int]:
    """`model`'s clean top-1 per ImageId: the labels an unlabelled run attacks."""
    found = {}
    for batch in data.batches(dataset, batch_size):
        found.update({i: int(l) for i, l in zip(batch.ids, predict(model, batch.images))})
    return found


# Admix draws x' from the other images of the batch: at 2 per batch it transferred worse than TI-DI-MI without it
# (README, "Transfer"); the benchmark crafts it at 10.
ADMIX_MIN_BATCH = 8


def admix_batch_warning(config, batch_size: int, num_images: int, replicas: int = 1) -> Optional[str]:
    """A one-line warning when an Admix attack would see fewer than ADMIX_MIN_BATCH images per batch (per replica:
    a mirrored attack splits each batch), else None."""
    per_batch = -(-min(batch_size, num_images) // replicas)
    from tfattack.attacks.transforms import Admix
    admix = config.find(Admix)
    if admix is None or admix.strength <= 0 or per_batch >= ADMIX_MIN_BATCH or num_images == 0:
        return None
    where = f"batch size {batch_size}, {num_images} image(s)" + (f", {replicas} replicas" if replicas > 1 else "")
    return (f"Admix mixes each image with others of its batch, and batches here hold at most {per_batch} image(s) "
            f"({where}): each image can mix with at most {max(per_batch - 1, 0)} other(s), which transfers worse; "
            f"use a batch of >= {ADMIX_MIN_BATCH}" + (" per replica" if replicas > 1 else ""))


def run_settings(model, attack, *, targeted: bool, label_source: str, batch_size: int) -> dict:
    """The record's settings for attacking with `model` (a Classifier or an Ensemble) and `attack`."""
    members = getattr(model, "members", None)
    weights = getattr(model, "weights", None) if members is not None else [1.0]
    members = members if members is not None else [model]
    replicas = getattr(getattr(attack, "strategy", None), "num_replicas_in_sync", 1)
    return record_lib.settings(attack_config=attack.config.to_dict(), max_epsilon=round(attack.config.eps * 255, 6),
                               targeted=targeted, label_source=label_source,
                               models=[record_lib.model_identity(m, w) for m, w in zip(members, weights)],
                               fuse=getattr(model, "fuse", None), batch_size=batch_size, replicas=replicas)


def craft_batch(model, attack, batch: "data.Batch", targeted: bool):
    """`(labels, legal)` for one batch: its labels (the metadata's, else `model`'s clean predictions) and the
    adversarial images rounded to legal 8-bit values. Depends only on the batch and the settings (the attack
    resets its generator from its seed at every call), so any process holding the same model and attack
    computes the same result."""
    labels = batch.labels if batch.labels is not None else predict(model, batch.images)
    adv = attack(model, batch.images, labels, target=batch.targets if targeted else None)
    return labels, quantize(adv.numpy(), batch.images, attack.config.eps, attack.config.norm)


class LocalCrafter:
    """Crafts batches in this process, one after the other: `craft(batches)` yields `(batch, labels, legal)`.

    The contract `attack_dataset` relies on (`tfattack.scale.RayCrafter` keeps it too): every batch it is given
    comes back exactly once, in any order, or the iteration raises."""

    def __init__(self, model, attack, targeted: bool):
        self.model, self.attack, self.targeted = model, attack, targeted

    def craft(self, batches: Iterable["data.Batch"]) -> Iterator[Tuple["data.Batch", np.ndarray, np.ndarray]]:
        for batch in batches:
            yield (batch,) + tuple(craft_batch(self.model, self.attack, batch, self.targeted))


@dataclasses.dataclass
class _Plan:
    pending: List[str]
    kept: Dict[str, dict]
    notes: List[str]


def _plan(dataset: "data.Dataset", output_dir: str, earlier: Optional[RunRecord], current: dict,
          targeted: bool, overwrite: bool) -> _Plan:
    """Which images to attack and which earlier outputs to keep; RecordError before any work when the
    folder holds images this run cannot vouch for."""
    present = [i for i in dataset.ids if os.path.exists(data.output_path(output_dir, i))]
    if overwrite or not present:
        return _Plan(list(dataset.ids), {}, [])
    if earlier is None:
        raise RecordError(f"output_dir {output_dir} already holds {len(present)} of this run's images "
                          f"({first_few([i + '.png' for i in present])}) but no run record says how they "
                          f"were made: pass --overwrite to attack them again, or choose another output folder")
    differences = earlier.differences(current)
    if differences:
        raise RecordError(f"output_dir {output_dir} was made with other settings ({'; '.join(differences[:4])}"
                          f"{'; ...' if len(differences) > 4 else ''}): pass --overwrite to attack its images "
                          f"again with these, or choose another output folder")
    index = {image_id: position for position, image_id in enumerate(dataset.ids)}
    labels, targets = dataset.labels, dataset.targets if targeted else None
    kept, notes, redo = {}, [], []
    legacy_labels = (earlier.info.get("predicted_labels") or {}) if earlier.legacy else {}
    for image_id in present:
        position = index[image_id]
        source = record_lib.file_sha256(dataset.paths[position])
        label = int(labels[position]) if labels is not None else None
        target = int(targets[position]) if targets is not None else None
        output = data.output_path(output_dir, image_id)
        if earlier.legacy:
            label = label if label is not None else legacy_labels.get(image_id)
            if label is None:
                redo.append(image_id)
                continue
            kept[image_id] = {"source": source, "output": record_lib.file_sha256(output), "label": int(label),
                              "target": target, "adopted": "tfattack 0.1 record"}
        elif earlier.made_here(image_id, source, output, label, target):
            kept[image_id] = earlier.images[image_id]
        else:
            redo.append(image_id)
    if earlier.legacy and kept:
        notes.append(f"{earlier.path} was written by tfattack 0.1: it records no weight files, batch size or "
                     f"inputs, so {len(kept)} image(s) are reused on the settings it does record (eps, attack, "
                     f"models, mode); pass --overwrite to make them again")
    if redo:
        notes.append(f"{len(redo)} image(s) in {output_dir} are not vouched for by its run record (a killed batch, "
                     f"a changed input or label, or a file put there): attacking them again "
                     f"({first_few(redo)})")
    return _Plan([i for i in dataset.ids if i not in kept], kept, notes)


def _finished(dataset: "data.Dataset", output_dir: str, record_name: str, current: dict,
              targeted: bool) -> Optional[RunSummary]:
    """The summary of a folder whose complete record vouches for every image of `dataset` with these settings, read
    without the folder's lock and without writing anything (so a run that only checks a finished folder, such as a
    scoring run beside a crafting run, never meets the writer's lock); None when anything is left to do or to say,
    which the locked path then decides."""
    if dataset.skipped:
        return None
    try:
        earlier = RunRecord.load(os.path.join(output_dir, record_name))
        if earlier is None or earlier.info.get("status") != "complete":
            return None
        plan = _plan(dataset, output_dir, earlier, current, targeted, overwrite=False)
    except (RecordError, OSError):  # a writer may be replacing files right now: the locked path answers
        return None
    if plan.pending or plan.notes:
        return None
    summary = RunSummary(already_done=list(plan.kept), record=earlier, checked_only=True)
    if current["label_source"] == "clean_prediction":
        summary.predicted_labels = {i: e["label"] for i, e in earlier.images.items()}
    return summary


def attack_dataset(dataset: "data.Dataset", output_dir: str, model, attack, *, batch_size: int, targeted: bool,
                   overwrite: bool = False, record_name: str = record_lib.RECORD, info: Optional[dict] = None,
                   progress: Optional[Callable[[int], Callable[[int], None]]] = None,
                   clock: Callable[[], float] = None, crafter=None) -> RunSummary:
    """Attacks every image of `dataset` whose output in `output_dir` this run's record cannot vouch for,
    writes `<ImageId>.png` there and keeps the run record (`record_name`) up to date after every batch.

    Labels: the dataset's (0..999) where it has them, else `model`'s clean predictions (recorded).
    Targets: the dataset's, required when `targeted`. A folder made with other settings, or holding
    images without a record, is a RecordError before any work unless `overwrite`. Unreadable images
    are skipped and listed in `summary.failed`; the run goes on. `progress(total)` is called once with
    the number of images to attack and returns the per-batch update callback. `info` goes into the record.

    `crafter` computes the batches (default `LocalCrafter(model, attack, targeted)`: in this process, in order;
    `tfattack.scale.RayCrafter`: on Ray actors, in the order they finish). Whichever it is, this function plans
    the batches, writes every PNG and keeps the record, so a run can be resumed with either.
    """
    import time

    clock = clock or time.perf_counter
    start = clock()
    if targeted:
        dataset.require_targets()
    label_source = "metadata" if dataset.labels is not None else "clean_prediction"
    current = run_settings(model, attack, targeted=targeted, label_source=label_source, batch_size=batch_size)
    finished = None if overwrite else _finished(dataset, output_dir, record_name, current, targeted)
    if finished is not None:
        finished.seconds = clock() - start
        return finished
    data.make_output_dir(output_dir)  # only now: every earlier error leaves no folder behind
    summary = RunSummary()
    with record_lib.FolderLock(output_dir, record_name):
        files.remove_stale_temp_files(output_dir)
        path = os.path.join(output_dir, record_name)
        earlier = None if overwrite else RunRecord.load(path)
        plan = _plan(dataset, output_dir, earlier, current, targeted, overwrite)
        summary.notes, summary.already_done = plan.notes, list(plan.kept)
        record = RunRecord(path, current, dict(plan.kept), dict(info or {}, status="running"))
        record.save()
        update = progress(len(plan.pending)) if progress is not None else None
        position = {image_id: index for index, image_id in enumerate(dataset.ids)}
        reader = data.batches(dataset.select(plan.pending), batch_size)
        crafter = crafter if crafter is not None else LocalCrafter(model, attack, targeted)
        for batch, labels, legal in crafter.craft(reader):
            for image_id, image, label, target in zip(batch.ids, legal, labels, batch.targets if targeted
                                                      else [None] * batch.count):
                output = data.output_path(output_dir, image_id)
                data.write_png(image, output)
                record.images[image_id] = {
                    "source": record_lib.file_sha256(dataset.paths[position[image_id]]),
                    "output": record_lib.file_sha256(output), "label": int(label),
                    "target": None if target is None else int(target)}
                summary.written.append(image_id)
            record.save()  # after the batch's files: the record never lists an image that is not there
            if update is not None:
                update(batch.count)
        summary.failed = [{"image": s.path, "reason": s.reason} for s in list(dataset.skipped) + reader.skipped]
        summary.seconds = clock() - start
        if label_source == "clean_prediction":
            summary.predicted_labels = {i: e["label"] for i, e in record.images.items()}
        record.info.update(status="complete", images_written=len(summary.written),
                           images_already_done=len(summary.already_done), failed_images=summary.failed,
                           attack_seconds=summary.seconds, images_per_second=summary.images_per_second)
        record.save()
        summary.record = record
    return summary
