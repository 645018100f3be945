"""The flat attack arguments of tfattack 0.1 (`momentum=1.0, diversity_prob=0.5, ti_kernel=7, ...`), kept working.

`build("mi_fgsm", diversity_prob=0.5, ti_kernel=7)`, the scripts' piece flags (`--momentum`, `--ti_kernel`, ...)
and flat `attack_config` records of old `run.json` files translate to components here: each flat field belongs to
one slot; the fields given edit that slot's classic component in place, add it at its 0.1 position, or remove it
when set to its "off" value (p=0, m=1, kernel 1, N=0). The same arguments give the same images as in 0.1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict

from tfattack.attacks import components
from tfattack.attacks.components import ComponentError
from tfattack.attacks.config import AttackConfig, Execution
from tfattack.attacks.estimators import VT
from tfattack.attacks.filters import TI, Blur
from tfattack.attacks.objectives import CE, CW, Logit, PoTrip
from tfattack.attacks.transforms import AUGMENTATIONS, DI, SI, Admix, Augment
from tfattack.attacks.updates import MI, NI, Sign

# name -> (default, doc): the flat fields of 0.1 and their meaning.
FIELDS: Dict[str, tuple] = {
    "name": ("custom", "Preset this config came from (informational)."),
    "eps": (16 / 255, "Radius in [0, 1] pixel units (16/255 as in NIPS'17 and most transfer papers)."),
    "steps": (10, "Number of iterations T (Kurakin et al. 2017; T=10 in Dong et al. CVPR 2018)."),
    "step_size": (0.0, "Step alpha per iteration; 0 means eps/steps (Dong et al. CVPR 2018)."),
    "momentum": (0.0, "Momentum decay mu on L1-normalised gradients; 0 = I-FGSM, 1.0 = MI-FGSM (Dong et al. CVPR "
                      "2018). Same as --update=mi:MU."),
    "nesterov": (False, "Take the gradient at the look-ahead x + alpha*mu*g (NI-FGSM, Lin et al. ICLR 2020). Same as "
                        "--update=ni:MU."),
    "loss": ("ce", "Objective: ce, cw (margin), logit (Zhao et al. NeurIPS 2021), po_trip (Li et al. CVPR 2020)."),
    "label_smoothing": (0.0, "Label smoothing of the ce loss (0.1 in the NIPS'17 targeted sample attacks)."),
    "po_trip_lambda": (0.01, "Weight of the triplet term in po_trip (Li et al. CVPR 2020)."),
    "po_trip_margin": (0.007, "Triplet margin gamma in po_trip (Li et al. CVPR 2020)."),
    "aux_weight": (0.0, "Weight of the same loss on the auxiliary logits, for models with an aux head; 0.4 in the "
                        "NIPS'17 sample attacks and the MI-FGSM winner."),
    "label_source": ("given", "given: attack the labels passed in; predicted: the model's clean prediction (NIPS'17 "
                              "samples)."),
    "ti_kernel": (1, "Translation-invariant smoothing kernel size, odd; 1 = off (TI, Dong et al. CVPR 2019: 15; "
                     "SI-NI/VT/Admix code: 7). Same as --filters=ti:K."),
    "ti_nsig": (3.0, "TI Gaussian kernel spans [-nsig, nsig] standard deviations (Dong et al. CVPR 2019: 3)."),
    "vt_samples": (0, "Variance tuning neighbours N; 0 = off (VT, Wang & He CVPR 2021: 20). Same as "
                      "--estimators=vt:N."),
    "vt_beta": (1.5, "VT neighbourhood half-width as a multiple of eps (Wang & He CVPR 2021: 1.5)."),
    "delta_blur_kernel": (1, "Gaussian blur of the perturbation after each step, odd size; 1 = off. Same as "
                             "--post=blur:K."),
    "delta_blur_nsig": (3.0, "Perturbation blur kernel spans [-nsig, nsig] standard deviations."),
    "diversity_prob": (0.0, "Probability of the DI resize-and-pad view per step; 0 = off (DI, Xie et al. CVPR 2019: "
                            "0.5). Same as --transforms=di:P."),
    "diversity_resize_ratio": (330 / 299, "DI canvas size / image size (Xie et al. CVPR 2019: 330/299)."),
    "si_copies": (1, "Scale-invariance copies x/2^i, i<m; 1 = off (SI, Lin et al. ICLR 2020: 5). Same as "
                     "--transforms=si:M."),
    "admix_strength": (0.0, "Admix eta: copies x + eta*x' with x' another image of the batch, so keep the batch >= 8; "
                            "0 = off (Wang et al. ICCV 2021: 0.2). Same as --transforms=admix:ETA."),
    "admix_copies": (3, "Admix m2: admixed images per step (Wang et al. ICCV 2021: 3)."),
    "augmentations": ((), "Expectation-over-transformation augmentations, any of: " + ", ".join(AUGMENTATIONS)
                      + ". Same as --transforms=augment:ops=A+B."),
    "augment_mode": ("all", "all: each copy applies every listed augmentation; one: each copy applies one chosen at "
                            "random."),
    "augment_prob": (1.0, "Probability that each augmentation is applied to a copy."),
    "num_copies": (1, "Random copies per step (each with fresh DI/augmentation draws); gradients averaged. Same as "
                      "--views."),
    "rotate_degrees": (10.0, "rotate: maximum absolute angle in degrees."),
    "brightness_delta": (0.2, "brighten/darken: maximum additive change of intensity."),
    "noise_std": (0.05, "noise: standard deviation of additive Gaussian noise."),
    "translate_fraction": (0.1, "translate: maximum shift as a fraction of the image size."),
    "scale_range": ((0.9, 1.1), "scale: range of the random zoom factor."),
    "jpeg_quality": (75, "jpeg: quality 1..100 (straight-through gradient)."),
    "bit_depth": (5, "bit_depth: bits per channel kept (straight-through gradient)."),
    "filter_kernel": (3, "gaussian_filter: odd kernel size (nsig 3)."),
    "dct_keep": (0.5, "dct_lowpass: fraction of the lowest DCT frequencies kept per axis."),
    "dropout_rate": (0.1, "dropout: fraction of pixels zeroed (the origin write-up's input dropout)."),
    "start": ("zero", "Starting point: zero, uniform in the ball, or gaussian (std eps/2, clipped to the ball)."),
    "restarts": (1, "Restarts R; per image the adversarial with the highest objective is kept."),
    "seed": (0, "Seed of the tf.random.Generator feeding every random draw (same seed -> same output)."),
    "jit_compile": (False, "Compile the loop with XLA (not with the jpeg, rotate, translate or scale augmentations)."),
    "compute_dtype": ("float32", "dtype of the model's forward pass: float32, bfloat16 or float16."),
    "copies_per_pass": (0, "Input copies pushed through the model per forward/backward pass; 0 = all at once "
                           "(fastest). Smaller bounds the memory of the many-copy attacks."),
}
DOCS = {name: doc for name, (_, doc) in FIELDS.items()}

TOP_LEVEL = ("name", "eps", "steps", "step_size", "start", "restarts", "seed", "label_source")
EXECUTION = ("jit_compile", "compute_dtype", "copies_per_pass")
UPDATE = ("momentum", "nesterov")
OBJECTIVE = ("loss", "label_smoothing", "po_trip_lambda", "po_trip_margin", "aux_weight")
AUGMENT = {"augmentations": "ops", "augment_mode": "mode", "augment_prob": "prob", "rotate_degrees": "rotate_degrees",
           "brightness_delta": "brightness_delta", "noise_std": "noise_std",
           "translate_fraction": "translate_fraction", "scale_range": "scale_range", "jpeg_quality": "jpeg_quality",
           "bit_depth": "bit_depth", "filter_kernel": "filter_kernel", "dct_keep": "dct_keep",
           "dropout_rate": "dropout_rate"}
# Transform families in their 0.1 order (Admix -> SI -> views of DI then augmentations): flat field -> key.
TRANSFORMS = (
    (Admix, {"admix_strength": "strength", "admix_copies": "copies"}, "admix_strength", 0.0),
    (SI, {"si_copies": "copies"}, "si_copies", 1),
    (DI, {"diversity_prob": "prob", "diversity_resize_ratio": "resize_ratio"}, "diversity_prob", 0.0),
    (Augment, AUGMENT, "augmentations", ()),
)
ONLY_FLAT = set(FIELDS) - set(TOP_LEVEL) - {"name"}


def is_flat_record(values: dict) -> bool:
    """True for an `attack_config` dict in the 0.1 flat format."""
    return bool(set(values) & (ONLY_FLAT - set(EXECUTION)))


def check_keys(values) -> None:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ComponentError(f"unknown attack argument(s) {', '.join(map(repr, unknown))}; valid ones: "
                             f"{', '.join(FIELDS)}, or the component slots transforms, views, estimators, objective, "
                             "filters, update, post, norm, execution")


# ----------------------------------------------------------------- the 0.1 checks, with the 0.1 messages

def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ComponentError(f"attack config: {message}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(values: dict) -> None:
    """Checks the flat arguments given, naming them as the user wrote them."""
    for name, value in values.items():
        if name in ("steps", "si_copies", "admix_copies", "num_copies", "restarts"):
            _require(_is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        elif name in ("copies_per_pass", "vt_samples"):
            _require(_is_int(value) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        elif name in ("diversity_prob", "augment_prob", "dropout_rate", "label_smoothing"):
            _require(isinstance(value, (int, float)) and 0 <= value <= 1,
                     f"{name} is a probability and must be in [0, 1], got {value!r}")
        elif name in ("step_size", "momentum", "vt_beta", "admix_strength", "rotate_degrees", "brightness_delta",
                      "noise_std", "translate_fraction", "po_trip_lambda", "po_trip_margin", "aux_weight"):
            _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                     and value >= 0, f"{name} must be a finite number >= 0, got {value!r}")
        elif name in ("ti_kernel", "delta_blur_kernel", "filter_kernel"):
            _require(_is_int(value) and value >= 1 and value % 2 == 1,
                     f"{name} must be an odd integer >= 1, got {value!r}")
        elif name == "loss":
            _require(value in OBJECTIVES, f"loss must be one of {', '.join(OBJECTIVES)}, got {value!r}")
        elif name == "augmentations":
            _require(isinstance(value, tuple), f"augmentations must be a tuple of names, got {value!r}")
            unknown = [a for a in value if a not in AUGMENTATIONS]
            _require(not unknown, f"unknown augmentation(s) {unknown}; valid ones: {', '.join(AUGMENTATIONS)}")
        elif name == "augment_mode":
            _require(value in ("all", "one"), f"augment_mode must be one of all, one, got {value!r}")


# ----------------------------------------------------------------- slot <-> flat fields

OBJECTIVES = {"ce": CE, "cw": CW, "logit": Logit, "po_trip": PoTrip}


def _update_flat(update) -> dict:
    if isinstance(update, Sign):
        return {"momentum": 0.0, "nesterov": False}
    if type(update) in (MI, NI):
        return {"momentum": update.decay, "nesterov": isinstance(update, NI)}
    raise ComponentError(f"the update {update.name!r} has no momentum/nesterov fields; set update= instead")


def _update_from(flat: dict):
    if flat["momentum"] == 0:
        return Sign()
    return (NI if flat["nesterov"] else MI)(decay=float(flat["momentum"]))


def _objective_flat(objective) -> dict:
    flat = {"aux_weight": objective.aux_weight}
    for loss, cls in OBJECTIVES.items():
        if type(objective) is cls:
            flat["loss"] = loss
    if "loss" not in flat:
        return flat
    if isinstance(objective, CE):
        flat["label_smoothing"] = objective.smoothing
    if isinstance(objective, PoTrip):
        flat.update(po_trip_lambda=objective.weight, po_trip_margin=objective.margin)
    return flat


def _objective_from(flat: dict, current):
    if "loss" not in flat:  # a non-classic objective: only its aux weight is a flat field
        return dataclasses.replace(current, aux_weight=float(flat["aux_weight"]))
    aux = float(flat.get("aux_weight", 0.0))
    loss = flat["loss"]
    if loss == "ce":
        return CE(smoothing=float(flat.get("label_smoothing", 0.0)), aux_weight=aux)
    if loss == "po_trip":
        return PoTrip(weight=float(flat.get("po_trip_lambda", 0.01)), margin=float(flat.get("po_trip_margin", 0.007)),
                      aux_weight=aux)
    return OBJECTIVES[loss](aux_weight=aux)


def _replace_or_drop(items, cls, new, insert_at=None):
    """`items` with its `cls` component replaced by `new` (None drops it), or `new` inserted at `insert_at`."""
    items = list(items)
    index = next((i for i, item in enumerate(items) if type(item) is cls), None)
    if index is not None:
        if new is None:
            del items[index]
        else:
            items[index] = new
    elif new is not None:
        items.insert(len(items) if insert_at is None else insert_at, new)
    return tuple(items)


def _find(items, cls):
    return next((item for item in items if type(item) is cls), None)


def _edit_transforms(transforms, overrides: dict):
    transforms = tuple(transforms)
    for rank, (cls, keys, switch, off) in enumerate(TRANSFORMS):
        given = {k: v for k, v in overrides.items() if k in keys}
        if not given:
            continue
        current = _find(transforms, cls)
        values = {} if current is None else {k: getattr(current, key) for k, key in keys.items()}
        values.update(given)
        if values.get(switch, off) == off:
            new = None
        else:
            kwargs = {keys[k]: (float(v) if isinstance(FIELDS[k][0], float) else v) for k, v in values.items()}
            if cls is Augment:
                kwargs["ops"] = tuple(kwargs.get("ops", ()))
                if "scale_range" in kwargs:
                    kwargs["scale_range"] = tuple(float(v) for v in kwargs["scale_range"])
            new = cls(**kwargs)
        # A new family goes before the first present family that came after it in 0.1 (else at the end).
        later = [type(t) for t in transforms]
        insert_at = next((i for i, t in enumerate(later)
                          if t in [c for c, *_ in TRANSFORMS[rank + 1:]]), None)
        transforms = _replace_or_drop(transforms, cls, new, insert_at)
    return transforms


def apply(config: AttackConfig, overrides: dict) -> AttackConfig:
    """`config` with the flat 0.1 arguments `overrides` applied."""
    check_keys(overrides)
    validate(overrides)
    changes = {k: overrides[k] for k in TOP_LEVEL if k in overrides}
    if set(overrides) & set(EXECUTION):
        execution = {k: overrides[k] for k in EXECUTION if k in overrides}
        changes["execution"] = dataclasses.replace(config.execution, **execution)
    if set(overrides) & set(UPDATE):
        flat = _update_flat(config.update)
        flat.update({k: overrides[k] for k in UPDATE if k in overrides})
        changes["update"] = _update_from(flat)
    if set(overrides) & set(OBJECTIVE):
        flat = _objective_flat(config.objective)
        flat.update({k: overrides[k] for k in OBJECTIVE if k in overrides})
        changes["objective"] = _objective_from(flat, config.objective)
    if "ti_kernel" in overrides or "ti_nsig" in overrides:
        current = _find(config.filters, TI)
        kernel = overrides.get("ti_kernel", current.kernel if current else 1)
        nsig = float(overrides.get("ti_nsig", current.nsig if current else 3.0))
        changes["filters"] = _replace_or_drop(config.filters, TI, TI(kernel, nsig) if kernel > 1 else None, 0)
    if "vt_samples" in overrides or "vt_beta" in overrides:
        current = _find(config.estimators, VT)
        samples = overrides.get("vt_samples", current.samples if current else 0)
        beta = float(overrides.get("vt_beta", current.beta if current else 1.5))
        changes["estimators"] = _replace_or_drop(config.estimators, VT, VT(samples, beta) if samples else None, 0)
    if "delta_blur_kernel" in overrides or "delta_blur_nsig" in overrides:
        current = _find(config.post, Blur)
        kernel = overrides.get("delta_blur_kernel", current.kernel if current else 1)
        nsig = float(overrides.get("delta_blur_nsig", current.nsig if current else 3.0))
        changes["post"] = _replace_or_drop(config.post, Blur, Blur(kernel, nsig) if kernel > 1 else None)
    if "num_copies" in overrides:
        changes["views"] = overrides["num_copies"]
    transform_keys = {k for _, keys, *_ in TRANSFORMS for k in keys}
    if set(overrides) & transform_keys:
        changes["transforms"] = _edit_transforms(config.transforms, overrides)
    for key in ("eps", "step_size"):
        if key in changes and isinstance(changes[key], int) and not isinstance(changes[key], bool):
            changes[key] = float(changes[key])
    return dataclasses.replace(config, **changes)


def from_flat(values: dict) -> AttackConfig:
    """An `AttackConfig` from a flat 0.1 dict (every field optional, defaults as in 0.1)."""
    values = dict(values)
    if "augmentations" in values:
        values["augmentations"] = tuple(values["augmentations"])
    if "scale_range" in values:
        values["scale_range"] = tuple(values["scale_range"])
    return apply(AttackConfig(), values)


def to_flat(config: AttackConfig) -> dict:
    """The 0.1 flat fields that `config` can be written in (its classic components), for help texts and tests."""
    flat = {k: getattr(config, k) for k in TOP_LEVEL}
    flat.update(dataclasses.asdict(config.execution))
    flat.update(_update_flat(config.update))
    flat.update(_objective_flat(config.objective))
    ti, vt, blur = _find(config.filters, TI), _find(config.estimators, VT), _find(config.post, Blur)
    flat.update(ti_kernel=ti.kernel if ti else 1, ti_nsig=ti.nsig if ti else 3.0,
                vt_samples=vt.samples if vt else 0, vt_beta=vt.beta if vt else 1.5,
                delta_blur_kernel=blur.kernel if blur else 1, delta_blur_nsig=blur.nsig if blur else 3.0,
                num_copies=config.views)
    for cls, keys, switch, off in TRANSFORMS:
        current = _find(config.transforms, cls)
        flat[switch] = off
        if current is not None:
            flat.update({k: getattr(current, key) for k, key in keys.items()})
    return flat


def parse_list(text) -> tuple:
    return tuple(t.strip() for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip())


__all__ = ["FIELDS", "DOCS", "apply", "from_flat", "to_flat", "is_flat_record", "check_keys", "components",
           "Execution"]
