"""ImageNet class names and the one conversion from the NIPS 2017 CSV labels.

Standard order = the ILSVRC-2012 synsets sorted by wnid, indices 0..999. The NIPS 2017 competition CSVs
(`TrueLabel`, `TargetClass`) and TF-slim's 1001-way outputs count from 1 with 0 = background:
standard index = NIPS label - 1. Names come from Google's ImageNet label list (the Coral TFLite
models' `imagenet_labels.txt`), wnids from the ILSVRC-2012 synset list.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import scipy.special

_TABLE = Path(__file__).with_name("data") / "imagenet_classes.tsv"


@functools.lru_cache(maxsize=1)
def _rows():
    rows = []
    for line in _TABLE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        index, wnid, name = line.split("\t")
        rows.append((int(index), wnid, name))
    assert [r[0] for r in rows] == list(range(1000)), f"{_TABLE} is not indexed 0..999"
    return rows


def class_names():
    """List of the 1000 human-readable names, standard order."""
    return [r[2] for r in _rows()]


def wnids():
    return [r[1] for r in _rows()]


def nips17_to_index(labels):
    """NIPS 2017 CSV labels (1..1000) -> standard indices (0..999). Raises on anything else."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 1 or labels.max() > 1000):
        bad = labels[(labels < 1) | (labels > 1000)]
        raise ValueError(f"NIPS 2017 labels must be in 1..1000, got {bad[:5].tolist()}")
    return (labels - 1).astype(np.int64)


def index_to_nips17(indices):
    return np.asarray(indices).astype(np.int64) + 1


def top_k(logits, k: int = 5):
    """[(index, name, probability), ...] per image, from [N, 1000] logits."""
    logits = np.asarray(logits, np.float64)
    probs = scipy.special.softmax(logits, axis=1)
    names = class_names()
    order = np.argsort(-probs, axis=1)[:, :k]
    return [[(int(i), names[i], float(p[i])) for i in row] for row, p in zip(order, probs)]
