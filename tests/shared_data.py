"""The shared real data for tests: `../shared` next to the project (CI has it), and the NIPS'17 DEV images.

    from shared_data import requires_shared, load_nips17_dev

    @requires_shared
    def test_real_accuracy():
        images, labels = load_nips17_dev(100)   # float32 [100, 299, 299, 3] in [0, 1], labels 0..999
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfattack.models.labels import nips17_to_index

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NIPS17_DEV = SHARED / "nips17_dev"
NIPS17_DEV_CSV = NIPS17_DEV / "dev_dataset.csv"

requires_shared = pytest.mark.skipif(
    not NIPS17_DEV_CSV.exists(),
    reason=f"needs the shared real data at {SHARED} (../shared, with nips17_dev/); CI has it")


@functools.lru_cache(maxsize=None)
def nips17_dev_rows() -> tuple:
    """The DEV metadata rows (dicts keyed by the CSV header), in file order."""
    with open(NIPS17_DEV_CSV, newline="") as handle:
        return tuple(csv.DictReader(handle))


@functools.lru_cache(maxsize=4)
def load_nips17_dev(count: int):
    """The first `count` DEV images (CSV order) as float32 [count, 299, 299, 3] RGB in [0, 1], and their
    standard labels (TrueLabel - 1). Cached and read-only: copy before changing them."""
    rows = nips17_dev_rows()
    if not 0 < count <= len(rows):
        raise ValueError(f"count must be in 1..{len(rows)}, got {count}")
    images = np.stack([np.asarray(Image.open(NIPS17_DEV / "images" / f"{row['ImageId']}.png").convert("RGB"))
                       for row in rows[:count]]).astype(np.float32) / 255.0
    labels = nips17_to_index([int(row["TrueLabel"]) for row in rows[:count]])
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
