"""`AttackConfig`: every attack is one frozen record of flat fields, validated up front.

Each field carries a one-line doc and its source in the field metadata; `FIELD_DOCS` gathers them
so a command-line script can generate one flag per field with its help text.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Tuple

LOSSES = ("ce", "cw", "logit", "po_trip")
STARTS = ("zero", "uniform", "gaussian")
LABEL_SOURCES = ("given", "predicted")
AUGMENT_MODES = ("all", "one")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
# JPEG coding and ImageProjectiveTransform (rotate, translate, scale) have no XLA kernels.
NOT_XLA_COMPILABLE = ("jpeg", "rotate", "translate", "scale")
AUGMENTATIONS = ("rotate", "brighten", "darken", "noise", "translate", "jpeg", "bit_depth", "flip",
                 "scale", "gaussian_filter", "dct_lowpass", "dropout")


def _field(default, doc):
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """One L-infinity transfer attack: the shared loop's settings. Defaults = plain I-FGSM, 10 steps."""

    name: str = _field("custom", "Preset this config came from (informational).")
    # Budget and schedule.
    eps: float = _field(16 / 255, "L-inf radius in [0, 1] pixel units (16/255 as in NIPS'17 and most transfer papers).")
    steps: int = _field(10, "Number of iterations T (Kurakin et al. 2017; T=10 in Dong et al. CVPR 2018).")
    step_size: float = _field(0.0, "Step alpha per iteration; 0 means eps/steps (Dong et al. CVPR 2018).")
    # Update rule.
    momentum: float = _field(0.0, "Momentum decay mu on L1-normalised gradients; 0 = I-FGSM, 1.0 = MI-FGSM (Dong et al. CVPR 2018).")
    nesterov: bool = _field(False, "Take the gradient at the look-ahead x + alpha*mu*g (NI-FGSM, Lin et al. ICLR 2020).")
    # Loss.
    loss: str = _field("ce", "Objective: ce, cw (margin), logit (Zhao et al. NeurIPS 2021), po_trip (Li et al. CVPR 2020).")
    label_smoothing: float = _field(0.0, "Label smoothing of the ce loss (0.1 in the NIPS'17 targeted sample attacks).")
    po_trip_lambda: float = _field(0.01, "Weight of the triplet term in po_trip (Li et al. CVPR 2020).")
    po_trip_margin: float = _field(0.007, "Triplet margin gamma in po_trip (Li et al. CVPR 2020).")
    aux_weight: float = _field(0.0, "Weight of the same loss on the auxiliary logits, for models with an aux head "
                               "(logits_and_aux); 0.4 in the NIPS'17 sample attacks and the MI-FGSM winner.")
    label_source: str = _field("given", "given: attack the labels passed in; predicted: the model's clean prediction (NIPS'17 samples).")
    # Gradient transforms.
    ti_kernel: int = _field(1, "Translation-invariant smoothing kernel size, odd; 1 = off (TI, Dong et al. CVPR 2019: 15; SI-NI/VT/Admix code: 7).")
    ti_nsig: float = _field(3.0, "TI Gaussian kernel spans [-nsig, nsig] standard deviations (Dong et al. CVPR 2019: 3).")
    vt_samples: int = _field(0, "Variance tuning neighbours N; 0 = off (VT, Wang & He CVPR 2021: 20).")
    vt_beta: float = _field(1.5, "VT neighbourhood half-width as a multiple of eps (Wang & He CVPR 2021: 1.5).")
    delta_blur_kernel: int = _field(1, "Gaussian blur of the perturbation after each step, odd size; 1 = off.")
    delta_blur_nsig: float = _field(3.0, "Perturbation blur kernel spans [-nsig, nsig] standard deviations.")
    # Input transforms (copies whose gradients are averaged).
    diversity_prob: float = _field(0.0, "Probability of the DI resize-and-pad view per step; 0 = off (DI, Xie et al. CVPR 2019: 0.5).")
    diversity_resize_ratio: float = _field(330 / 299, "DI canvas size / image size (Xie et al. CVPR 2019: 330/299).")
    si_copies: int = _field(1, "Scale-invariance copies x/2^i, i<m; 1 = off (SI, Lin et al. ICLR 2020: 5).")
    admix_strength: float = _field(0.0, "Admix eta: copies x + eta*x' with x' another image of the batch, so keep the batch >= 8 (at batch 2 it transferred far worse, see README); 0 = off (Wang et al. ICCV 2021: 0.2).")
    admix_copies: int = _field(3, "Admix m2: admixed images per step (Wang et al. ICCV 2021: 3).")
    augmentations: Tuple[str, ...] = _field((), "Expectation-over-transformation augmentations, any of: " + ", ".join(AUGMENTATIONS) + ".")
    augment_mode: str = _field("all", "all: each copy applies every listed augmentation; one: each copy applies one chosen at random.")
    augment_prob: float = _field(1.0, "Probability that each augmentation is applied to a copy.")
    num_copies: int = _field(1, "Random copies per step (each with fresh DI/augmentation draws); gradients averaged.")
    rotate_degrees: float = _field(10.0, "rotate: maximum absolute angle in degrees.")
    brightness_delta: float = _field(0.2, "brighten/darken: maximum additive change of intensity.")
    noise_std: float = _field(0.05, "noise: standard deviation of additive Gaussian noise.")
    translate_fraction: float = _field(0.1, "translate: maximum shift as a fraction of the image size.")
    scale_range: Tuple[float, float] = _field((0.9, 1.1), "scale: range of the random zoom factor.")
    jpeg_quality: int = _field(75, "jpeg: quality 1..100 (straight-through gradient).")
    bit_depth: int = _field(5, "bit_depth: bits per channel kept (straight-through gradient).")
    filter_kernel: int = _field(3, "gaussian_filter: odd kernel size (nsig 3).")
    dct_keep: float = _field(0.5, "dct_lowpass: fraction of the lowest DCT frequencies kept per axis.")
    dropout_rate: float = _field(0.1, "dropout: fraction of pixels zeroed (the origin write-up's input dropout).")
    # Start and restarts.
    start: str = _field("zero", "Starting point: zero, uniform in the ball, or gaussian (std eps/2, clipped to the ball).")
    restarts: int = _field(1, "Restarts R; per image the adversarial with the highest objective is kept.")
    # Execution.
    seed: int = _field(0, "Seed of the tf.random.Generator feeding every random draw (same seed -> same output).")
    jit_compile: bool = _field(False, "Compile the loop with XLA (not with the jpeg, rotate, translate or scale augmentations).")
    compute_dtype: str = _field("float32", "dtype of the model's forward pass: float32, bfloat16 or float16.")
    copies_per_pass: int = _field(0, "Input copies (Admix x SI x views) pushed through the model per forward/backward "
                                     "pass; 0 = all at once (fastest). Smaller bounds the memory of the many-copy "
                                     "attacks: their activations grow with batch x copies. Any value > 0 also runs VT's "
                                     "neighbours one at a time instead of overlapping them.")

    def __post_init__(self):
        validate(self)

    @property
    def alpha(self) -> float:
        """The step size actually used."""
        return self.step_size if self.step_size > 0 else self.eps / self.steps

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists), with the resolved step size."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        out["resolved_step_size"] = self.alpha
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "AttackConfig":
        values = {k: v for k, v in values.items() if k != "resolved_step_size"}
        check_keys(values)
        kinds = {f.name: f.default for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(kinds[k], tuple) else v for k, v in values.items()})


FIELD_DOCS = {f.name: f.metadata["doc"] for f in dataclasses.fields(AttackConfig)}


def check_keys(values) -> None:
    unknown = sorted(set(values) - set(FIELD_DOCS))
    if unknown:
        raise ValueError(f"unknown attack argument(s) {', '.join(map(repr, unknown))}; "
                         f"valid ones: {', '.join(FIELD_DOCS)}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"attack config: {message}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_odd(config, name: str) -> None:
    value = getattr(config, name)
    _require(_is_int(value) and value >= 1 and value % 2 == 1, f"{name} must be an odd integer >= 1, got {value!r}")


def _check_choice(config, name: str, choices) -> None:
    value = getattr(config, name)
    _require(value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}")


def validate(config: AttackConfig) -> None:
    """Raises ValueError naming the first bad field."""
    _require(isinstance(config.eps, (int, float)) and 0 < config.eps <= 1,
             f"eps must be in (0, 1] (pixels in [0, 1]; 16/255 = {16 / 255:.4f}), got {config.eps!r}")
    for name in ("steps", "si_copies", "admix_copies", "num_copies", "restarts"):
        value = getattr(config, name)
        _require(_is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
    _require(_is_int(config.copies_per_pass) and config.copies_per_pass >= 0,
             f"copies_per_pass must be an integer >= 0 (0 = all copies at once), got {config.copies_per_pass!r}")
    _require(_is_int(config.vt_samples) and config.vt_samples >= 0, f"vt_samples must be an integer >= 0, got {config.vt_samples!r}")
    for name in ("diversity_prob", "augment_prob", "dropout_rate", "label_smoothing"):
        value = getattr(config, name)
        _require(0 <= value <= 1, f"{name} is a probability and must be in [0, 1], got {value!r}")
    _require(0 < config.dct_keep <= 1, f"dct_keep must be in (0, 1], got {config.dct_keep!r}")
    for name in ("step_size", "momentum", "vt_beta", "admix_strength", "rotate_degrees", "brightness_delta",
                 "noise_std", "translate_fraction", "po_trip_lambda", "po_trip_margin", "aux_weight"):
        value = getattr(config, name)
        _require(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
                 f"{name} must be a finite number >= 0, got {value!r}")
    _require(config.ti_nsig > 0 and config.delta_blur_nsig > 0, "ti_nsig and delta_blur_nsig must be > 0")
    _require(config.diversity_resize_ratio > 1, f"diversity_resize_ratio must be > 1, got {config.diversity_resize_ratio!r}")
    for name in ("ti_kernel", "delta_blur_kernel", "filter_kernel"):
        _check_odd(config, name)
    _check_choice(config, "loss", LOSSES)
    _check_choice(config, "start", STARTS)
    _check_choice(config, "label_source", LABEL_SOURCES)
    _check_choice(config, "augment_mode", AUGMENT_MODES)
    _check_choice(config, "compute_dtype", COMPUTE_DTYPES)
    _require(isinstance(config.augmentations, tuple), f"augmentations must be a tuple of names, got {config.augmentations!r}")
    unknown = [a for a in config.augmentations if a not in AUGMENTATIONS]
    _require(not unknown, f"unknown augmentation(s) {unknown}; valid ones: {', '.join(AUGMENTATIONS)}")
    low, high = config.scale_range
    _require(0 < low <= high, f"scale_range must be (low, high) with 0 < low <= high, got {config.scale_range!r}")
    _require(_is_int(config.jpeg_quality) and 1 <= config.jpeg_quality <= 100, f"jpeg_quality must be in 1..100, got {config.jpeg_quality!r}")
    _require(_is_int(config.bit_depth) and 1 <= config.bit_depth <= 8, f"bit_depth must be in 1..8, got {config.bit_depth!r}")
    not_compilable = [a for a in config.augmentations if a in NOT_XLA_COMPILABLE]
    _require(not (config.jit_compile and not_compilable),
             f"jit_compile cannot compile the augmentation(s) {not_compilable} (their TF ops have no XLA kernel)")
    _require(_is_int(config.seed), f"seed must be an integer, got {config.seed!r}")
