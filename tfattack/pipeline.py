"""Attacking a folder of images: batches of equal size, resumable, atomic PNG outputs.

`attack_dataset` is what `scripts/attack.py` runs once it has parsed its flags: it never reads FLAGS
and never writes outside `output_dir`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfattack import data
from tfattack.attacks import quantize


@dataclasses.dataclass
class RunSummary:
    written: List[str] = dataclasses.field(default_factory=list)
    already_done: List[str] = dataclasses.field(default_factory=list)
    failed: List[Dict[str, str]] = dataclasses.field(default_factory=list)
    predicted_labels: Dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

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


def attack_dataset(dataset: "data.Dataset", output_dir: str, model, attack, *, batch_size: int, targeted: bool,
                   overwrite: bool = False, progress: Optional[Callable[[int], None]] = None,
                   clock: Callable[[], float] = None) -> RunSummary:
    """Attacks every image of `dataset` not yet in `output_dir` and writes `<ImageId>.png` there.

    Labels: the dataset's (0..999) where it has them, else `model`'s clean predictions (recorded in
    the summary). Targets: the dataset's, required when `targeted`. Unreadable images are skipped
    and listed in `summary.failed`; the run goes on.
    """
    import time

    clock = clock or time.perf_counter
    start = clock()
    summary = RunSummary()
    eps, norm = attack.config.eps, attack.config.norm
    pending = []
    for image_id in dataset.ids:
        if not overwrite and os.path.exists(data.output_path(output_dir, image_id)):
            summary.already_done.append(image_id)
        else:
            pending.append(image_id)
    if targeted:
        dataset.require_targets()
    reader = data.batches(dataset.select(pending), batch_size)
    for batch in reader:
        if batch.labels is not None:
            labels = batch.labels
        else:
            labels = predict(model, batch.images)
            summary.predicted_labels.update({i: int(l) for i, l in zip(batch.ids, labels)})
        adv = attack(model, batch.images, labels, target=batch.targets if targeted else None)
        legal = quantize(adv.numpy(), batch.images, eps, norm)
        for image_id, image in zip(batch.ids, legal):
            data.write_png(image, data.output_path(output_dir, image_id))
            summary.written.append(image_id)
        if progress is not None:
            progress(batch.count)
    summary.failed = [{"image": s.path, "reason": s.reason} for s in list(dataset.skipped) + reader.skipped]
    summary.seconds = clock() - start
    return summary
