"""`AttackConfig`: an attack is a budget, a start, a seed, an execution plan, and slots filled by components.

    AttackConfig(eps=16/255, steps=10, norm="linf",
                 transforms=(DI(0.5), SI(5)), views=1,       # input copies whose gradients are averaged
                 estimators=(VT(20),),                       # gradient estimator chain, outermost first
                 objective=CE(),                             # what is ascended
                 filters=(TI(7),),                           # applied to every gradient evaluation
                 update=NI(1.0),                             # look-ahead, accumulation and the step
                 post=(),                                    # applied to the perturbation after each step
                 execution=Execution(copies_per_pass=0))

Every slot prints to and parses from one spec string (`tfattack.attacks.components`); `to_dict` writes those
strings, so `run.json` and the command line share one text.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Tuple

from tfattack.attacks import components
from tfattack.attacks.components import (Backward, ComponentError, Estimator, Filter, Forward, Objective, PostOp,
                                         Transform, Update)

NORMS = ("linf", "l2")
STARTS = ("zero", "uniform", "gaussian")
LABEL_SOURCES = ("given", "predicted")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def _field(default, doc):
    return dataclasses.field(default=default, metadata={"doc": doc})


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ComponentError(f"attack config: {message}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Execution:
    """How the attack runs; never what it computes (up to float rounding)."""

    jit_compile: bool = _field(False, "Compile the loop with XLA (not with the jpeg, rotate, translate or scale "
                                      "augmentations: no XLA kernels).")
    compute_dtype: str = _field("float32", "dtype of the model's forward pass: float32, bfloat16 or float16.")
    copies_per_pass: int = _field(0, "Input copies (transform copies x views x estimator samples) pushed through the "
                                     "model per forward/backward pass; 0 = all at once (fastest). Smaller bounds the "
                                     "memory of the many-copy attacks, whose activations grow with batch x copies. "
                                     "Any value > 0 also runs VT's neighbours one at a time.")

    def __post_init__(self):
        _require(isinstance(self.jit_compile, bool), f"jit_compile must be true or false, got {self.jit_compile!r}")
        _require(self.compute_dtype in COMPUTE_DTYPES,
                 f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")
        _require(_is_int(self.copies_per_pass) and self.copies_per_pass >= 0,
                 f"copies_per_pass must be an integer >= 0 (0 = all copies at once), got {self.copies_per_pass!r}")


def _default_objective():
    from tfattack.attacks.objectives import CE
    return CE()


def _default_update():
    from tfattack.attacks.updates import Sign
    return Sign()


SLOTS = {  # config field -> (role, is a tuple)
    "transforms": ("transform", True),
    "estimators": ("estimator", True),
    "objective": ("objective", False),
    "filters": ("filter", True),
    "update": ("update", False),
    "post": ("post", True),
    "backward": ("backward", True),
    "forward": ("forward", True),
}


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """One transfer attack. Defaults = I-FGSM: 10 sign steps of eps/10 on the cross-entropy, no copies."""

    name: str = _field("custom", "Preset this config came from (informational).")
    # Budget and schedule.
    eps: float = _field(16 / 255, "Radius of the ball in [0, 1] pixel units: L-inf (16/255 as in NIPS'17 and most "
                                  "transfer papers) or L2 (the L2 norm of the whole perturbation).")
    steps: int = _field(10, "Number of iterations T (Kurakin et al. 2017; T=10 in Dong et al. CVPR 2018).")
    step_size: float = _field(0.0, "Step alpha per iteration; 0 means eps/steps (Dong et al. CVPR 2018).")
    norm: str = _field("linf", "linf: sign steps, projection on the L-inf ball; l2: steps along the L2-normalised "
                               "direction, projection on the L2 ball (both intersected with the [0, 1] box).")
    start: str = _field("zero", "Starting point: zero, uniform in the ball, or gaussian (std eps/2, clipped to "
                                "the L-inf ball; projected on the L2 ball under l2).")
    restarts: int = _field(1, "Restarts R; per image the adversarial with the highest objective is kept.")
    seed: int = _field(0, "Seed of the tf.random.Generator feeding every random draw (same seed -> same output).")
    label_source: str = _field("given", "given: attack the labels passed in; predicted: the model's clean "
                                        "prediction (NIPS'17 samples).")
    # Slots.
    transforms: Tuple[Transform, ...] = _field((), "Input transforms, applied in order; each makes copies whose "
                                                   "gradients are averaged.")
    views: int = _field(1, "Independent draws of the random views (the transforms from the first view-type one, "
                           "e.g. di or augment, to the end of the list), gradients averaged.")
    estimators: Tuple[Estimator, ...] = _field((), "Gradient estimator chain, outermost first (empty: the plain "
                                                   "gradient of the averaged copies).")
    objective: Objective = dataclasses.field(default_factory=_default_objective,
                                             metadata={"doc": "What the attack ascends (ce, cw, logit, po_trip)."})
    filters: Tuple[Filter, ...] = _field((), "Applied to every gradient evaluation after averaging (ti).")
    update: Update = dataclasses.field(default_factory=_default_update,
                                       metadata={"doc": "Look-ahead, accumulation and step (sign, mi, ni)."})
    post: Tuple[PostOp, ...] = _field((), "Applied to the perturbation after each step (blur).")
    backward: Tuple[Backward, ...] = _field((), "How the surrogate back-propagates (sgm, bpa); the forward pass is "
                                                "unchanged.")
    forward: Tuple[Forward, ...] = _field((), "Edits of the surrogate's forward pass while attacking (cfm).")
    execution: Execution = dataclasses.field(default_factory=Execution,
                                             metadata={"doc": "jit_compile, compute_dtype, copies_per_pass."})

    def __post_init__(self):
        for name, (role, many) in SLOTS.items():
            value = getattr(self, name)
            if many and isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
                value = tuple(value)
            if many:
                _require(isinstance(value, tuple), f"{name} must be a tuple of {role} components, got {value!r}")
                for item in value:
                    components.check_role(role, item, name)
            else:
                components.check_role(role, value, name)
        _require(isinstance(self.execution, Execution), f"execution must be an Execution, got {self.execution!r}")
        validate(self)

    # ----- derived

    @property
    def alpha(self) -> float:
        """The step size actually used."""
        return self.step_size if self.step_size > 0 else self.eps / self.steps

    @property
    def active_transforms(self) -> Tuple[Transform, ...]:
        return tuple(t for t in self.transforms if not t.is_identity)

    def split_transforms(self):
        """(copy makers run once, view transforms re-drawn `views` times): the active transforms split at the
        first view-type one."""
        active = self.active_transforms
        first_view = next((i for i, t in enumerate(active) if not t.makes_copies), len(active))
        return active[:first_view], active[first_view:]

    @property
    def copies(self) -> int:
        """Model inputs per image per gradient evaluation (transform copies x views)."""
        count = self.views
        for transform in self.active_transforms:
            count *= transform.count
        return count

    @property
    def gradient_evaluations(self) -> int:
        """Calls of the plain gradient per iteration (estimator samples multiply)."""
        count = 1
        for estimator in self.estimators:
            count *= estimator.evaluations()
        return count

    def model_passes(self, steps=None) -> int:
        """Batch-sized forward+input-gradient passes through the model in a run of `steps` iterations (default: the
        config's), counting copies, estimator samples, transform searches (DeCoWA), bare passes (RAP, from step 0)
        and one-off passes (GIMI's pre-phase, the feature-level objectives' weighting): what the benchmarks divide
        the attack's time by."""
        steps = self.steps if steps is None else steps
        per_copy = 1
        for transform in self.active_transforms:
            per_copy += transform.search_passes()
        bare = sum(estimator.bare_passes(steps) for estimator in self.estimators)
        one_run = (steps * self.copies * per_copy * self.gradient_evaluations + bare
                   + self.copies * per_copy * self.update.init_evaluations())
        return self.restarts * one_run + self.objective.setup_passes()[0]

    def forward_only_passes(self, steps=None, members: int = 1) -> int:
        """Batch-sized forward passes without a gradient in a run of `steps` iterations on an ensemble of `members`
        (in whole-ensemble passes): the predicted labels' pass, the feature-level objectives' set-up (ILA's pair of
        clean and guide features, NAA's black baseline), the forward edits' reference passes (CFM once, ILPD every
        step), the ensemble strategies' weighting passes (AdaEA's scores, SMER's reweighing) and, with restarts,
        the scoring of each restart."""
        steps = self.steps if steps is None else steps
        labels = 1 if self.label_source == "predicted" and not self.self_labelled else 0
        strategies = steps * sum(e.forward_only_passes(members) for e in self.estimators)
        scoring = self.restarts if self.restarts > 1 else 0
        return (labels + self.objective.setup_passes()[1] + self.restarts * strategies + scoring
                + sum(f.forward_only_passes(steps) for f in self.forward if not f.is_identity))

    @property
    def self_labelled(self) -> bool:
        """True when the predicted labels can be read off the attack's own first forward pass instead of a
        separate one: a single step from the clean image (zero start, no restarts) through one untransformed
        copy and the plain gradient, as in FGSM on predicted labels."""
        return (self.label_source == "predicted" and self.steps == 1 and self.restarts == 1
                and self.start == "zero" and self.copies == 1 and not self.estimators
                and not self.active_transforms)

    def find(self, cls):
        """The first component of class `cls` in any slot, or None."""
        for name in SLOTS:
            value = getattr(self, name)
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, cls):
                    return item
        return None

    def spec(self) -> dict:
        """{slot: spec string} for every component slot."""
        out = {}
        for name, (_, many) in SLOTS.items():
            value = getattr(self, name)
            out[name] = components.format_specs(value) if many else value.spec()
        return out

    # ----- serialisation

    def to_dict(self) -> dict:
        """JSON-ready: scalars, the slots as spec strings, execution as a dict, and the resolved step size."""
        out = {}
        for field in dataclasses.fields(self):
            if field.name in SLOTS:
                continue
            value = getattr(self, field.name)
            out[field.name] = dataclasses.asdict(value) if field.name == "execution" else value
        out.update(self.spec())
        out["resolved_step_size"] = self.alpha
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "AttackConfig":
        """Inverse of `to_dict`; also reads the flat records of tfattack 0.1 (`momentum`, `ti_kernel`, ...)."""
        from tfattack.attacks import legacy
        values = {k: v for k, v in values.items() if k != "resolved_step_size"}
        if legacy.is_flat_record(values):
            return legacy.from_flat(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        _require(not unknown, f"unknown field(s) {', '.join(map(repr, unknown))}; valid ones: {', '.join(known)}")
        kwargs = dict(values)
        for name, (role, many) in SLOTS.items():
            if name in kwargs:
                parsed = components.parse(role, kwargs[name])
                kwargs[name] = parsed if many else components.parse_one(role, kwargs[name])
        if "execution" in kwargs:
            kwargs["execution"] = Execution(**kwargs["execution"])
        return cls(**kwargs)


FIELD_DOCS = {f.name: f.metadata["doc"] for f in dataclasses.fields(AttackConfig)}
EXECUTION_DOCS = {f.name: f.metadata["doc"] for f in dataclasses.fields(Execution)}


def validate(config: AttackConfig) -> None:
    """Raises ComponentError (a ValueError) naming the first bad field."""
    _require(config.norm in NORMS, f"norm must be one of {', '.join(NORMS)}, got {config.norm!r}")
    eps_ok = isinstance(config.eps, (int, float)) and not isinstance(config.eps, bool) and math.isfinite(config.eps)
    if config.norm == "linf":
        _require(eps_ok and 0 < config.eps <= 1,
                 f"eps must be in (0, 1] (pixels in [0, 1]; 16/255 = {16 / 255:.4f}), got {config.eps!r}")
    else:
        _require(eps_ok and config.eps > 0, f"eps must be a finite number > 0 (an L2 radius), got {config.eps!r}")
    for name in ("steps", "restarts", "views"):
        value = getattr(config, name)
        _require(_is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
    _require(isinstance(config.step_size, (int, float)) and math.isfinite(config.step_size) and config.step_size >= 0,
             f"step_size must be a finite number >= 0, got {config.step_size!r}")
    _require(config.start in STARTS, f"start must be one of {', '.join(STARTS)}, got {config.start!r}")
    _require(config.label_source in LABEL_SOURCES,
             f"label_source must be one of {', '.join(LABEL_SOURCES)}, got {config.label_source!r}")
    _require(_is_int(config.seed), f"seed must be an integer, got {config.seed!r}")
    strategies = [i for i, e in enumerate(config.estimators) if getattr(e, "ensemble_strategy", False)]
    _require(strategies in ([], [0]), "an ensemble strategy (svre, cwa, adaea, smer) must be the one outermost "
                                      f"estimator, got estimators {components.format_specs(config.estimators)!r}")
    inner_stateful = [e.name for e in config.estimators[1:] if e.stateful]
    _require(not inner_stateful, f"estimator(s) {', '.join(inner_stateful)} keep state across steps and must come "
                                 "first (outermost) in the estimator chain")
    for name, (_, many) in SLOTS.items():
        value = getattr(config, name)
        for component in value if many else (value,):
            component.check_config(config)
    not_compilable = [name for t in config.active_transforms for name in t.xla_blockers()]
    _require(not (config.execution.jit_compile and not_compilable),
             f"jit_compile cannot compile {', '.join(not_compilable)} (their TF ops have no XLA kernel)")
