"""Attack components: small frozen dataclasses, one registry per role, one spec-string syntax.

A component fills one slot of an attack (`AttackConfig`):

    role        slot in the config     examples
    transform   transforms (a list)    di, si, admix, augment, bsr, sia, ssa, ...
    estimator   estimators (a chain)   vt, pgn, gra, ...            (outermost first; empty = the plain gradient)
    objective   objective              ce, cw, logit, po_trip
    filter      filters (a list)       ti                           (applied to every gradient evaluation)
    update      update                 sign, mi, ni, ...
    post        post (a list)          blur                         (applied to the perturbation after each step)
    backward    backward (a list)      sgm, linbp, bpa              (how the surrogate back-propagates)
    forward     forward (a list)       cfm                          (how the surrogate's forward pass is edited)

Spec strings, shared by the command line and `run.json`:

    "di:0.5,si:5,bsr:blocks=3,copies=20"   ->  (DI(prob=0.5), SI(copies=5), BSR(blocks=3, copies=20))

Components are separated by commas; `name` or `name:value` starts a component (the bare value sets its
positional field), `key=value` items after it set its other fields. Unknown names and keys are errors that
list the valid ones. `spec()` prints every field, so a printed spec is the full, resolved setting.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Dict, Iterable, Optional, Tuple, Type

from tfattack.errors import UserError

ROLES = ("transform", "estimator", "objective", "filter", "update", "post", "backward", "forward")
_REGISTRY: Dict[str, Dict[str, Type["Component"]]] = {role: {} for role in ROLES}
LIST_SEPARATOR = "+"  # inside one field's value, e.g. augment:ops=rotate+noise


def param(default, doc: str, **limits):
    """A component field with its one-line doc (shown by --helpfull and docs/attacks.md) and optional limits:
    `low`/`high` (inclusive) or `above` (exclusive lower bound), `odd=True`, `choices=(...)`."""
    return dataclasses.field(default=default, metadata={"doc": doc, **limits})


class ComponentError(UserError):
    """A bad component spec or value; the message is one line naming the component and field."""


@dataclasses.dataclass(frozen=True)
class Component:
    """Base of every component. Subclasses are frozen dataclasses with `param` fields and set `role`, `name`
    (the registry and spec name), `positional` (the field `name:value` sets) and `paper` (the source)."""

    role: ClassVar[str] = ""
    name: ClassVar[str] = ""
    positional: ClassVar[Optional[str]] = None
    paper: ClassVar[str] = ""
    # The integer field whose value multiplies the passes (copies, samples, neighbours): what a compute-matched
    # comparison turns to bring the component to a common budget (`tfattack.bench.budget`). None: no such field.
    budget_param: ClassVar[Optional[str]] = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_field(self, field)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; raise `self.error(...)`."""

    def check_config(self, config) -> None:
        """Checks against the rest of the attack (`AttackConfig`), run when a config is built; raise `self.error`."""

    def error(self, message: str) -> ComponentError:
        return ComponentError(f"{self.role} {self.name!r}: {message}")

    @property
    def is_identity(self) -> bool:
        """True when this setting changes nothing (DI with p=0, SI with one copy, TI with a 1x1 kernel, ...)."""
        return False

    def spec(self) -> str:
        items = [f"{f.name}={_format_value(getattr(self, f.name))}" for f in dataclasses.fields(self)]
        return self.name + (":" + ",".join(items) if items else "")

    def __str__(self):
        return self.spec()

    @classmethod
    def field_docs(cls) -> Dict[str, str]:
        return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def register(cls):
    """Class decorator: adds a component class to its role's registry under `cls.name`."""
    if cls.role not in ROLES:
        raise TypeError(f"{cls.__name__}: role must be one of {ROLES}, got {cls.role!r}")
    if not cls.name or cls.name in _REGISTRY[cls.role]:
        raise TypeError(f"{cls.__name__}: missing or duplicate {cls.role} name {cls.name!r}")
    _REGISTRY[cls.role][cls.name] = cls
    return cls


def registry(role: str) -> Dict[str, Type[Component]]:
    """name -> class for `role` (a copy)."""
    _load_families()
    return dict(_REGISTRY[role])


def available(role: str) -> Tuple[str, ...]:
    return tuple(registry(role))


def _load_families() -> None:
    # The families register themselves at import; importing them here lets `parse` work from this module alone.
    from tfattack.attacks import ensemble, estimators, filters, objectives, surrogate, transforms, updates  # noqa: F401


# ----------------------------------------------------------------- values

def _check_field(component: Component, field: dataclasses.Field) -> None:
    value = getattr(component, field.name)
    default = field.default
    meta = field.metadata
    where = f"{component.role} {component.name!r}: {field.name}"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        kind = "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        kind = "a finite number"
        if ok and isinstance(value, int):
            object.__setattr__(component, field.name, float(value))
            value = float(value)
    elif isinstance(default, tuple):
        ok = isinstance(value, tuple)
        kind = f"a list of values joined by '{LIST_SEPARATOR}'"
    else:
        ok = isinstance(value, str)
        kind = "a string"
    if not ok:
        raise ComponentError(f"{where} must be {kind}, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ComponentError(f"{where} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if "items" in meta:
        unknown = [v for v in value if v not in meta["items"]]
        if unknown:
            raise ComponentError(f"{where}: unknown value(s) {', '.join(map(repr, unknown))}; valid ones: "
                                 f"{', '.join(meta['items'])}")
    if "low" in meta and value < meta["low"]:
        raise ComponentError(f"{where} must be >= {meta['low']}, got {value!r}")
    if "above" in meta and not value > meta["above"]:
        raise ComponentError(f"{where} must be > {meta['above']}, got {value!r}")
    if "high" in meta and value > meta["high"]:
        raise ComponentError(f"{where} must be <= {meta['high']}, got {value!r}")
    if meta.get("odd") and value % 2 != 1:
        raise ComponentError(f"{where} must be odd, got {value!r}")


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return LIST_SEPARATOR.join(_format_value(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def _parse_value(cls, field: dataclasses.Field, text: str):
    default = field.default
    where = f"{cls.role} {cls.name!r}: {field.name}"
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            kind = type(default[0]) if default else str
            items = [t.strip() for t in text.split(LIST_SEPARATOR) if t.strip()]
            return tuple(kind(t) for t in items)
    except ValueError:
        raise ComponentError(f"{where}: cannot read {text!r} as {type(default).__name__}") from None
    return text.strip()


# ----------------------------------------------------------------- spec strings

def _split_items(text: str):
    """'di:0.5,bsr:blocks=3,copies=20' -> [('di', ['0.5']), ('bsr', ['blocks=3', 'copies=20'])]."""
    groups = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if "=" in item and ":" not in item:
            if not groups:
                raise ComponentError(f"{item!r} comes before any component name")
            groups[-1][1].append(item)
            continue
        name, _, rest = item.partition(":")
        groups.append((name.strip(), [rest.strip()] if rest.strip() else []))
    return groups


def build_component(role: str, name: str, items: Iterable[str] = ()) -> Component:
    """One component from its name and 'value' / 'key=value' items."""
    known = registry(role)
    if name not in known:
        from tfattack.names import did_you_mean
        raise ComponentError(f"unknown {role} {name!r}{did_you_mean(name, known)}; valid ones: {', '.join(known)}")
    cls = known[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for index, item in enumerate(items):
        key, has_key, value = item.partition("=")
        if not has_key:
            if index != 0 or cls.positional is None:
                raise ComponentError(f"{role} {name!r}: {item!r} needs a key (key=value); keys: {', '.join(fields)}")
            key, value = cls.positional, item
        key = key.strip()
        if key not in fields:
            raise ComponentError(f"{role} {name!r}: unknown key {key!r}; valid keys: {', '.join(fields) or 'none'}")
        if key in values:
            raise ComponentError(f"{role} {name!r}: {key} given twice")
        values[key] = _parse_value(cls, fields[key], value)
    return cls(**values)


def parse(role: str, text: str) -> Tuple[Component, ...]:
    """A spec string of any number of `role` components -> a tuple of components ('' or 'none' -> ())."""
    if text is None or text.strip().lower() in ("", "none"):
        return ()
    return tuple(build_component(role, name, items) for name, items in _split_items(text))


def parse_one(role: str, text: str) -> Component:
    parsed = parse(role, text)
    if len(parsed) != 1:
        raise ComponentError(f"expected exactly one {role}, got {len(parsed)} in {text!r}")
    return parsed[0]


def format_specs(components: Iterable[Component]) -> str:
    """The spec string of a tuple of components ('none' for an empty one)."""
    text = ",".join(c.spec() for c in components)
    return text or "none"


def check_role(role: str, component, what: str) -> None:
    if not isinstance(component, Component) or component.role != role:
        raise ComponentError(f"{what} must be a {role} component, got {component!r}")


# ----------------------------------------------------------------- the roles' interfaces
#
# Every method below runs at trace time inside the attack's one `tf.function`; `ctx` is the loop's
# `tfattack.attacks.loop.Context` (clean images, labels, generator, budget, and the gradient oracle).
# Randomness comes from `ctx.generator` / the `generator` argument only, so a seed fixes every draw.

@dataclasses.dataclass(frozen=True)
class Transform(Component):
    """Makes copies of the input whose gradients are averaged.

    `apply(images, generator, batch)` takes `M = G * batch` images (G groups of the attacked batch, group-major:
    the loop stacks neighbours or look-ahead points of the same batch this way) and returns `count * M` images,
    copy-major (`out[k*M:(k+1)*M]` is copy k of every input). Output shapes are static; per-copy random work is
    drawn as one batched tensor (no Python loop over copies).
    """

    role: ClassVar[str] = "transform"
    # Copy makers (Admix, SI, BSR, ...) run once per gradient evaluation; views (DI, augment: one output per
    # input, freshly drawn) are what the config's `views` repeats.
    makes_copies: ClassVar[bool] = True
    xla_compilable: ClassVar[bool] = True
    # Transforms that adapt to the model (DeCoWA's warp search) set this and take `apply(..., objective=f)`,
    # `f(stack) -> [n]` the attack objective of any stack of copies of the batch.
    needs_objective: ClassVar[bool] = False
    # Transforms built from the perturbation itself (SU's local crop) set this and take `apply(..., clean=x)`,
    # `x` the clean batch.
    needs_clean: ClassVar[bool] = False

    @property
    def count(self) -> int:
        return 1

    def search_passes(self) -> int:
        """Extra forward+backward passes over this transform's copies per gradient evaluation (DeCoWA's warp
        search), for the benchmarks' pass counts."""
        return 0

    def xla_blockers(self) -> Tuple[str, ...]:
        """Names of the parts without XLA kernels (empty when `jit_compile` can compile this transform)."""
        return () if self.xla_compilable else (self.name,)

    def apply(self, images, generator, batch: int):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Estimator(Component):
    """Turns the plain gradient oracle into the gradient the update receives (VT, PGN, GRA, ...).

    `estimate(ctx, inner, point, x, state) -> (gradient, state)`: `inner(points)` is the next estimator down the
    chain (at the bottom, `ctx.gradient`: transforms, objective and filters), taking and returning `[G*batch, ...]`
    stacks; `point` is where the update asks for the gradient (the Nesterov look-ahead or x itself), `x` the
    current iterate. Stateful estimators (VT's variance) keep tensors in `state` across steps and must be the
    outermost of a chain.
    """

    role: ClassVar[str] = "estimator"
    stateful: ClassVar[bool] = False

    def init(self, ctx) -> dict:
        return {}

    def estimate(self, ctx, inner, point, x, state):
        raise NotImplementedError

    def evaluations(self) -> int:
        """Points of the batch whose `inner` gradient one estimate takes (for the benchmarks' pass counts)."""
        return 1

    def stacked_points(self) -> int:
        """The most points of the batch stacked into one `inner` call (memory: images per pass grow with it)."""
        return 1

    def bare_passes(self, steps: int) -> int:
        """Extra forward+backward passes of the batch through the model alone (no copies) in a run of `steps`
        iterations (RAP's inner steps), for the benchmarks' pass counts."""
        return 0

    def forward_only_passes(self, members: int) -> int:
        """Forward passes without a gradient per estimate on an ensemble of `members`, in whole-ensemble passes
        (an ensemble strategy's weighting), for the benchmarks' pass counts."""
        return 0


@dataclasses.dataclass(frozen=True)
class EnsembleStrategy(Estimator):
    """An estimator that weighs or schedules the members of an `Ensemble` surrogate (SVRE, CWA, AdaEA, SMER). It is
    the outermost estimator; `ctx.members` is the member count, `ctx.chain(ctx.member_objective(k))` the gradient
    oracle for member k alone (the rest of the chain, transforms and filters included), `ctx.chain()` the fused
    ensemble's, and `ctx.weighted_objective(w)` the objective of member logits weighted per image."""

    ensemble_strategy: ClassVar[bool] = True


@dataclasses.dataclass(frozen=True)
class Objective(Component):
    """The per-image value the attack ascends. `value(logits, labels, targets)`: untargeted when `targets is None`
    (ascend the loss of `labels`), else targeted (descend the loss of `targets`)."""

    role: ClassVar[str] = "objective"
    aux_weight: float = param(0.0, "Weight of the same objective on the auxiliary logits of models with an aux "
                                   "head; 0.4 in the NIPS'17 sample attacks and the MI-FGSM winner.", low=0.0)

    def value(self, logits, labels, targets):
        raise NotImplementedError

    def setup_passes(self) -> Tuple[int, int]:
        """(forward+gradient, forward-only) batch-sized passes through the model once per attack call before the
        steps (the feature-level objectives' weighting), for the benchmarks' pass counts."""
        return 0, 0


@dataclasses.dataclass(frozen=True)
class Filter(Component):
    """A linear map applied to every gradient evaluation after the copies are averaged (TI's smoothing)."""

    role: ClassVar[str] = "filter"

    def apply(self, gradient):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Update(Component):
    """Where the gradient is taken and how the iterate moves.

    `init(ctx) -> state`; `lookahead(ctx, x, state) -> point` (Nesterov); `step(ctx, x, gradient, state) ->
    (x_next, state)`, before projection. `ctx.ascent(direction)` is the norm's step of size alpha (the sign for
    L-inf, the L2-normalised direction for L2).
    """

    role: ClassVar[str] = "update"

    def init(self, ctx) -> dict:
        return {}

    def lookahead(self, ctx, x, state):
        return x

    def step(self, ctx, x, gradient, state):
        raise NotImplementedError

    def init_evaluations(self) -> int:
        """Plain gradient evaluations `init` makes once per run (GIMI's pre-phase), for the pass counts."""
        return 0


@dataclasses.dataclass(frozen=True)
class PostOp(Component):
    """Applied to the perturbation `adv - clean` after each projected step (then projected again)."""

    role: ClassVar[str] = "post"

    def apply(self, delta):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Backward(Component):
    """Changes how the surrogate back-propagates (model-related methods: SGM, BPA); the forward pass is untouched.

    `policy_fields(members) -> dict` gives `tfattack.backward.Policy` fields for an attack on these networks
    (the members of an ensemble, or the one model); the loop merges the fields of every backward component and
    sets the policy for the trace. `needs` names the primitives it acts on ("relu", "residual_add",
    "max_pool"): a surrogate with none of them is a one-line error.
    """

    role: ClassVar[str] = "backward"
    needs: ClassVar[Tuple[str, ...]] = ()

    def policy_fields(self, members) -> dict:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Forward(Component):
    """Edits the surrogate's forward pass while the attack runs (CFM's clean feature mixup, ghost networks, ILPD's
    perturbation decay), through `tfattack.edits`. Override points:

      prepare_edit(model, clean, generator) -> Edit   the edit for the attack's passes, made inside the trace once
                                                      per attack call, or at every step when `each_step`; by default
                                                      `make_edit` of the clean batch's layer outputs (recorded when
                                                      `records`)
      check_members(members)                          one-line error for a member the edit cannot act on

    `needs` names the primitives it acts on ("layer_output", "residual_add", "end_point"). Edits draw per forward
    pass and act on the passes of the attack's objective."""

    role: ClassVar[str] = "forward"
    needs: ClassVar[Tuple[str, ...]] = ("layer_output",)
    records: ClassVar[bool] = False
    each_step: ClassVar[bool] = False

    def make_edit(self, recorded: dict, generator):
        raise NotImplementedError

    def prepare_edit(self, model, clean, generator):
        from tfattack import edits  # imported here: the component registry imports no TensorFlow

        recorder = edits.Recorder()
        if self.records:
            with edits.editing(recorder):
                model(clean)
        return self.make_edit(recorder.outputs, generator)

    def check_members(self, members) -> None:
        pass

    def forward_only_passes(self, steps: int) -> int:
        """Batch-sized forward passes (no gradient) its edits take per attack call of `steps` iterations: one
        recording pass when `records`, one per step when `each_step`, for the benchmarks' pass counts."""
        return steps if self.each_step else int(self.records)

    def check_config(self, config) -> None:
        if config.execution.copies_per_pass:
            raise self.error("draws per forward pass: use copies_per_pass=0 (splitting the copies into passes would "
                             "change the draws)")
