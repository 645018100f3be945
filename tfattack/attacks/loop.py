"""The one attack loop. Every preset and combination is this loop with a different `AttackConfig`.

Per step (x_0 = clean + start):
    p          = update.lookahead(x_t)                       (NI's look-ahead; x_t for the others)
    plain(q)   = filters( mean over copies c(q) of d objective(c(q)) / dq )      (transforms, objective, TI)
    grad       = estimators(plain)(p, x_t)                   (VT, PGN, ...; plain(p) without estimators)
    x_t+1      = project(update.step(x_t, grad))             (sign step, momentum, ...)
    x_t+1      = project(clean + post(x_t+1 - clean))        (perturbation blur, if any)

All steps, copies, samples, restarts and ensemble members run inside one `tf.function` per
(attack, model); it is traced once per batch shape and targeted/untargeted mode.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf

from tfattack import backward as backward_lib
from tfattack import edits
from tfattack.fixed_order import fan_out, ordered_sum
from tfattack.attacks.config import AttackConfig
from tfattack.attacks.gradient_ops import ascent
from tfattack.attacks.projection import project


def model_name(model) -> str:
    return str(getattr(model, "name", None) or type(model).__name__)


def check_model(model) -> None:
    if not callable(model):
        raise ValueError(f"attack needs a callable model(images) -> logits, got {type(model).__name__}")
    if not getattr(model, "differentiable", True):
        raise ValueError(f"model {model_name(model)!r} is a black-box (not differentiable) model: attack a "
                         "differentiable surrogate and evaluate it as a victim")
    if getattr(model, "fuse", None) == "loss" and not hasattr(model, "member_logits"):
        raise ValueError(f"model {model_name(model)!r} has fuse='loss' but no member_logits(images)")


def _check_images(images) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] RGB, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be float in [0, 1], got {array.dtype} (divide uint8 pixels by 255)")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"images must lie in [0, 1], got values in [{array.min():.3g}, {array.max():.3g}]")
    return array.astype(np.float32)


def _check_labels(labels, what: str, batch: int, num_classes: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (batch,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be integers of shape [{batch}], got {array.dtype} of shape {array.shape}")
    bad = array[(array < 0) | (array >= num_classes)]
    if bad.size:
        raise ValueError(f"{what} must be class indices in 0..{num_classes - 1}, got {bad[:5].tolist()} "
                         "(NIPS'17 CSV labels are 1..1000: subtract 1 once at the data boundary)")
    return array.astype(np.int32)


def in_compute_dtype(model, dtype: str):
    """`model` set to compute in `dtype` where it knows how (zoo classifiers and ensembles have
    `with_compute_dtype`); members or models that cannot stay float32, with a warning naming them."""
    if dtype == "float32" or not hasattr(model, "with_compute_dtype"):
        return model
    members = getattr(model, "members", [model])
    left = [model_name(m) for m in members if dtype not in getattr(m, "compute_dtypes", ())]
    if left:
        warnings.warn(f"{', '.join(left)} cannot compute in {dtype}; "
                      f"{'they stay' if len(left) > 1 else 'it stays'} in float32")
    return model.with_compute_dtype(dtype) if len(left) < len(members) else model


_PRIMITIVE_NAMES = {"relu": "ReLUs", "residual_add": "residual additions", "max_pool": "max pools",
                    "dense_concat": "DenseNet concatenations",
                    "residual_unit": "residual units with a re-runnable branch (slim ResNets)",
                    "layer_output": "convolution or linear layers routed through tfattack.edits",
                    "end_point": "named end points routed through tfattack.edits"}


class ForwardEdits:
    """The config's forward component (CFM, ghost, ILPD) on `model` for one trace. `prepare(clean, generator)`,
    inside the trace, makes its edit (CFM records the clean batch's layer outputs there); `edit` is then what the
    attack's forward passes run under (None before, and without forward components). A model with nothing the
    component can edit is a one-line ValueError, as a Keras application is."""

    def __init__(self, model, config: AttackConfig):
        self.model = model
        active = [c for c in config.forward if not c.is_identity]
        if len(active) > 1:
            raise ValueError(f"forward: one edit at a time, got {', '.join(c.name for c in active)}")
        self.component = active[0] if active else None
        self.edit = None
        if self.component is None:
            return
        members = list(getattr(model, "members", [model]))
        needs = self.component.needs
        lacking = [model_name(m) for m in members
                   if getattr(m, "introspectable", True) is False or not hasattr(m, "backward_primitives")
                   or not any(m.backward_primitives().get(p, 0) for p in needs)]
        if lacking:
            raise ValueError(f"forward {self.component.name!r}: model {', '.join(map(repr, lacking))} has no "
                             f"{' or '.join(_PRIMITIVE_NAMES[p] for p in needs)} it can edit")
        self.component.check_members(members)

    @property
    def each_step(self) -> bool:
        return self.component is not None and self.component.each_step

    def prepare(self, clean, generator) -> None:
        """Makes the edit (inside the trace): once per attack call, and again at each step for `each_step` edits
        (ILPD's reference features are of a fresh noisy clean image at every step)."""
        if self.component is not None:
            self.edit = self.component.prepare_edit(self.model, clean, generator)


def surrogate_policy(model, config: AttackConfig):
    """The `tfattack.backward.Policy` the config's backward components ask for on `model` (None: plain
    backprop). A component that finds nothing to act on in any member is a one-line ValueError; members
    without it are left to plain backprop, with a warning naming them."""
    active = [c for c in config.backward if not c.is_identity]
    if not active:
        return None
    members = list(getattr(model, "members", [model]))
    fields = {}
    opaque = [model_name(m) for m in members if getattr(m, "introspectable", True) is False]
    if opaque and len(opaque) == len(members):
        raise ValueError(f"backward {active[0].name!r}: {', '.join(map(repr, opaque))} is built by Keras, whose layers "
                         f"do not route through tfattack.backward: no backward policy can act on it")
    for component in active:
        usable = [m for m in members if hasattr(m, "backward_primitives")
                  and any(m.backward_primitives().get(p, 0) for p in component.needs)]
        wanted = " or ".join(_PRIMITIVE_NAMES[p] for p in component.needs)
        lacking = [model_name(m) for m in members if m not in usable]
        if not usable:
            raise ValueError(f"backward {component.name!r}: model {', '.join(map(repr, lacking))} has no {wanted} "
                             f"it can act on (native networks route them through tfattack.backward)")
        if lacking:
            warnings.warn(f"backward {component.name!r}: {', '.join(lacking)} has no {wanted}; plain backprop there")
        for key, value in component.policy_fields(usable).items():
            if key in fields and fields[key] != value:
                raise ValueError(f"backward components disagree on {key} ({fields[key]!r} and {value!r})")
            fields[key] = value
    return backward_lib.Policy(**fields)


class FeatureObjectiveFunction:
    """The objective of a feature-level component on `model` (each member of an ensemble at its own tap, values
    summed with the ensemble's weights). `prepare(clean, labels, targets, generator)` runs once per attack call,
    inside the trace, before the first forward pass; the state it leaves is tiled to each stack of copies."""

    def __init__(self, model, config: AttackConfig, policy, forward_edits: Optional[ForwardEdits] = None):
        self.component, self.policy, self.forward_edits = config.objective, policy, forward_edits
        self.per_pass, self.eps = config.execution.copies_per_pass, config.eps
        if config.norm != "linf" and self.component.linf_only:
            raise ValueError(f"objective {self.component.name!r} works in the L-inf ball only; use norm='linf'")
        self.members = list(getattr(model, "members", [model]))
        self.weights = list(model.weights) if hasattr(model, "members") else [1.0]
        self.model = model
        name = self.component.name
        for member in self.members:
            if not hasattr(member, "outputs"):
                raise ValueError(f"objective {name!r}: model {model_name(member)!r} has no named feature taps")
        self.taps = [self.component.tap(member) for member in self.members]  # an unknown tap fails here
        self.states = None
        self.batch = None

    def check_untargeted(self, targeted: bool) -> None:
        if targeted and self.component.untargeted_only:
            raise ValueError(f"objective {self.component.name!r} is an untargeted method; attack without targets")

    def prepare(self, clean, labels, targets, generator):
        self.check_untargeted(targets is not None)
        if labels is None:
            labels = tf.argmax(self.model(clean), axis=-1, output_type=tf.int32)
        self.batch = clean.shape[0]
        with backward_lib.policy(self.policy):
            shared = self.component.prepare_model(self.model, clean, labels, self.eps)
            self.states = [self.component.prepare(member, tap, clean, labels, generator, self.per_pass, shared)
                           for member, tap in zip(self.members, self.taps)]

    def _tiled(self, state, copies: int):
        def tile(tensor):
            if tensor is None or tensor.shape[0] != self.batch or copies == 1:
                return tensor
            return tf.tile(tensor, [copies] + [1] * (tensor.shape.rank - 1))
        return tf.nest.map_structure(tile, state)

    def __call__(self, images, labels, targets):
        copies = images.shape[0] // self.batch
        values = []
        # The forward edit (ghost, ILPD, CFM) acts on the attack's passes, the members in the order of the
        # ensemble's own pass, as it was made; the weighting passes of `prepare` stay unedited.
        edit = self.forward_edits.edit if self.forward_edits else None
        with backward_lib.policy(self.policy), edits.editing(edit):
            inputs = fan_out(images, len(self.members))
            for member, x, tap, state, weight in zip(self.members, inputs, self.taps, self.states, self.weights):
                outputs = member.outputs(x, features=[tap])
                values.append(weight * self.component.evaluate(outputs, tap, self._tiled(state, copies), labels,
                                                               targets))
        return ordered_sum(values)


def check_surrogate(model, config: AttackConfig, targeted: bool = False) -> None:
    """What `config` needs from `model` (backward primitives, feature taps, an untargeted run for feature-level
    objectives), checked without any image: the one-line ValueError a first attack call would raise."""
    surrogate_policy(model, config)
    ForwardEdits(model, config)
    check_ensemble_strategy(model, config)
    if getattr(config.objective, "feature_level", False):
        FeatureObjectiveFunction(model, config, None).check_untargeted(targeted)


def make_objective(model, config: AttackConfig, forward_edits: Optional[ForwardEdits] = None):
    """`objective(images, labels, targets) -> [N]`, the per-image value the attack ascends.

    For `fuse == 'loss'` ensembles it is the weighted sum of the members' objectives. The forward pass
    runs in `config.execution.compute_dtype`: zoo models and ensembles switch their networks to it (see
    `in_compute_dtype`); any other callable gets its input cast and, if it rejects that, runs in float32
    with a warning (at trace time). Logits are float32 before the loss.
    """
    dtype = config.execution.compute_dtype
    component = config.objective
    if getattr(component, "feature_level", False):
        return FeatureObjectiveFunction(model, config, surrogate_policy(model, config), forward_edits)
    model = in_compute_dtype(model, dtype)
    fuse_loss = getattr(model, "fuse", None) == "loss"
    # The aux head's loss is added where the model has one (NIPS'17 samples: weight 0.4).
    with_aux = component.aux_weight > 0 and not fuse_loss and hasattr(model, "logits_and_aux")
    call = model.member_logits if fuse_loss else (model.logits_and_aux if with_aux else model)
    # Models with `with_compute_dtype` have been switched above; only plain callables get cast inputs.
    cast_input = dtype != "float32" and not hasattr(model, "with_compute_dtype")
    compute_dtype = [tf.as_dtype(dtype) if cast_input else tf.float32]

    def to_float32(outputs):
        if fuse_loss or with_aux:
            return [None if o is None else tf.cast(o, tf.float32) for o in outputs]
        return tf.cast(outputs, tf.float32)

    policy = surrogate_policy(model, config)

    def forward(images):
        with backward_lib.policy(policy), edits.editing(forward_edits.edit if forward_edits else None):
            return forward_exact(images)

    def forward_exact(images):
        if compute_dtype[0] != tf.float32:
            try:
                return to_float32(call(tf.cast(images, compute_dtype[0])))
            except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
                warnings.warn(f"model {model_name(model)!r} cannot run in {dtype} "
                              f"({type(error).__name__}); attacking in float32")
                compute_dtype[0] = tf.float32
        return call(images)

    def objective(images, labels, targets):
        """`labels=None`: self-labelled, the labels are this very forward pass's top-1 (no gradient);
        used when the only gradient point is the clean image itself (see `self_labelled`)."""
        outputs = forward(images)
        if labels is None:
            fused = (ordered_sum([w * l for w, l in zip(model.weights, outputs)]) if fuse_loss else
                     outputs[0] if with_aux else outputs)
            labels = tf.argmax(tf.stop_gradient(fused), axis=-1, output_type=tf.int32)
        if fuse_loss:
            return ordered_sum([w * component.value(l, labels, targets) for w, l in zip(model.weights, outputs)])
        if with_aux:
            logits, aux = outputs
            value = component.value(logits, labels, targets)
            if aux is None:
                return value
            return value + component.aux_weight * component.value(aux, labels, targets)
        return component.value(outputs, labels, targets)

    return objective


def make_member_logits(model, config: AttackConfig, forward_edits: Optional[ForwardEdits] = None):
    """One function per ensemble member (the model itself if it is not an ensemble), `images -> float32 logits`,
    computed in the config's dtype under its backward policy and forward edit: what ensemble strategies (SVRE,
    CWA, AdaEA, SMER) weigh and differentiate member by member. Aux heads are not used here. A member's pass is
    numbered by its place in the ensemble, as in the whole ensemble's pass the edit was made for."""
    policy = surrogate_policy(model, config)
    members = [in_compute_dtype(m, config.execution.compute_dtype) for m in getattr(model, "members", [model])]

    def logits_of(member, place):
        def logits(images):
            edit = forward_edits.edit if forward_edits else None
            with backward_lib.policy(policy), edits.editing(edit, first_network=place):
                return tf.cast(member(images), tf.float32)
        return logits

    return [logits_of(member, place) for place, member in enumerate(members)]


def check_ensemble_strategy(model, config: AttackConfig) -> None:
    """An ensemble strategy needs an ensemble of two or more members and a logit-level objective."""
    strategy = next((e for e in config.estimators if getattr(e, "ensemble_strategy", False)), None)
    if strategy is None:
        return
    members = getattr(model, "members", [model])
    if len(members) < 2:
        raise ValueError(f"estimator {strategy.name!r} is an ensemble strategy: attack an ensemble of two or more "
                         f"models, not {model_name(model)!r} alone")
    if getattr(config.objective, "feature_level", False):
        raise ValueError(f"estimator {strategy.name!r} weighs the members' logits; objective "
                         f"{config.objective.name!r} is feature-level: use a logit objective (ce, cw, logit, ...)")


def _tile(values, times):
    return None if values is None else tf.tile(values, [times])


def expand_copies(points, generator, config: AttackConfig, batch, objective=None, clean=None):
    """All model inputs for one gradient evaluation of `points` (`G * batch` images), `[C * G * batch, ...]`,
    and C: the copy makers once, then `config.views` independent draws of the view transforms. Transforms that
    adapt to the model (`needs_objective`, e.g. DeCoWA's warp search) get `objective(stack) -> [n]`; those built
    from the perturbation (`needs_clean`, SU's local crop) get the clean batch."""

    def apply(transform, images, size):
        if getattr(transform, "needs_objective", False):
            return transform.apply(images, generator, size, objective=objective)
        if getattr(transform, "needs_clean", False):
            if clean is None:
                raise ValueError(f"transform {transform.name!r} needs the clean images")
            return transform.apply(images, generator, size, clean=clean)
        return transform.apply(images, generator, size)

    makers, viewers = config.split_transforms()
    copies = points
    for transform in makers:
        copies = apply(transform, copies, batch)
    # A view transform draws once per call (DI as its authors); on stacked points of an estimator it draws once
    # per point and copy (its `batch` is then the attacked batch), else once for the whole stack (batch None).
    stacked = bool(batch) and points.shape[0] is not None and points.shape[0] > batch
    views = []
    for _ in range(config.views):
        view = copies
        for transform in viewers:
            view = apply(transform, view, batch if stacked else None)
        views.append(view)
    return tf.concat(views, axis=0), config.copies


class Context:
    """What the components see while the loop is traced: the clean batch, labels, generator, budget, the
    current step, and the gradient oracle. Stacks of several points of the batch (`[G * batch, ...]`, group
    major) are accepted wherever images are."""

    def __init__(self, config: AttackConfig, objective, clean, labels, targets, generator, member_logits=(),
                 below=None):
        self.config = config
        self.member_logits = list(member_logits)  # ensemble strategies only: one logits function per member
        # below(ctx, objective) -> the oracle under the outermost estimator; the loop passes the estimator chain.
        self._below = below or (lambda ctx, objective: lambda points: ctx.gradient(points, objective))
        self.clean, self.labels, self.targets, self.generator = clean, labels, targets, generator
        self.eps, self.alpha, self.norm = config.eps, config.alpha, config.norm
        self.batch = clean.shape[0]
        self.copies_per_pass = config.execution.copies_per_pass
        self.step = tf.constant(0)
        self._objective = objective
        self._filters = [f for f in config.filters if not f.is_identity]

    def groups(self, images) -> int:
        """How many stacked copies of the batch `images` holds (static)."""
        if self.batch is None or images.shape[0] is None:
            return 1
        return images.shape[0] // self.batch

    def tiled(self, values, images):
        return _tile(values, self.groups(images))

    def objective(self, images):
        """The per-image objective of `images` (no transforms), labels tiled to the stack."""
        return self._objective(images, self.tiled(self.labels, images), self.tiled(self.targets, images))

    # ----- ensemble members (ensemble strategies)

    @property
    def members(self) -> int:
        return len(self.member_logits)

    def weighted_objective(self, weights):
        """`objective(images, labels, targets)` of the logits sum_k weights[:, k] * z_k(images) (`weights` [batch,
        K], tiled to any stack of copies), with the attack's objective component. A one-hot row is member k."""
        value = self.config.objective.value

        def objective(images, labels, targets):
            tiled = tf.tile(weights, [tf.shape(images)[0] // tf.shape(weights)[0], 1])
            inputs = fan_out(images, self.members)
            logits = ordered_sum([tiled[:, k:k + 1] * logits(x)
                                  for k, (logits, x) in enumerate(zip(self.member_logits, inputs))])
            return value(logits, labels, targets)

        return objective

    def member_objective(self, member, scale=None):
        """The attack's objective on member `member`'s logits alone, times `scale` ([batch], per image) if given
        (`member`: an int, or a scalar int tensor drawn in the graph: only that member runs)."""
        value = self.config.objective.value

        def scaled(logits, images):
            if scale is None:
                return logits(images)
            return tf.tile(scale, [tf.shape(images)[0] // tf.shape(scale)[0]])[:, None] * logits(images)

        if isinstance(member, int):
            logits = self.member_logits[member]
            return lambda images, labels, targets: value(scaled(logits, images), labels, targets)

        def objective(images, labels, targets):
            branches = [lambda logits=logits: value(scaled(logits, images), labels, targets)
                        for logits in self.member_logits]
            return tf.switch_case(member, branches)

        return objective

    def chain(self, objective=None):
        """The gradient oracle below the outermost estimator (the rest of the estimator chain, then `gradient`)
        for `objective` (default: the attack's): how an ensemble strategy asks for one member's gradient."""
        return self._below(self, objective)

    def gradient(self, points, objective=None):
        """The plain gradient at each point: the mean over the input copies of d objective / d point, then the
        filters (TI). This is what estimators wrap. `objective(images, labels, targets)` replaces the attack's
        (ensemble strategies pass a member's)."""
        objective = objective or self._objective
        count_points = self.groups(points)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(points)
            copies, count = expand_copies(points, self.generator, self.config, self.batch, self.objective,
                                          self.clean)
            labels = _tile(self.labels, count * count_points)
            targets = _tile(self.targets, count * count_points)
            per_pass = self.copies_per_pass
            one_pass = not per_pass or per_pass >= count * count_points
            if one_pass:
                total = tf.reduce_sum(objective(copies, labels, targets))
        if one_pass:
            gradient = tape.gradient(total, points)
        else:
            # Chain rule in two halves: the objective's gradient w.r.t. the copies, a few copies per pass,
            # then back through the copy transforms in one go.
            copy_gradient = self._copies_gradient(objective, copies, labels, targets,
                                                  tf.shape(points)[0] // count_points, count * count_points)
            gradient = tape.gradient(copies, points, output_gradients=copy_gradient)
        gradient = gradient / float(count)
        for op in self._filters:
            gradient = op.apply(gradient)
        return gradient

    def _copies_gradient(self, objective, copies, labels, targets, batch, count):
        """d objective / d copies, `copies_per_pass` copies of the batch per forward/backward pass.
        A sequential `tf.while_loop` runs the passes one after another, so one pass's activations are alive.
        The copies are padded to whole passes (the padding's objective is weighted 0) so that every pass
        has the same static shape, which XLA needs."""
        per_pass = self.copies_per_pass
        passes = -(-count // per_pass)
        pad = (passes * per_pass - count) * batch

        def whole_passes(values):
            return tf.concat([values, values[:pad]], 0)

        def by_pass(values):
            return tf.reshape(values, tf.concat([[passes, per_pass * batch], tf.shape(values)[1:]], 0))

        weights = by_pass(tf.concat([tf.ones([count * batch]), tf.zeros([pad])], 0))
        parts, part_labels = by_pass(whole_passes(copies)), by_pass(whole_passes(labels))
        part_targets = None if targets is None else by_pass(whole_passes(targets))

        def one_pass(index, gradients):
            part = parts[index]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(part)
                values = objective(part, part_labels[index], None if targets is None else part_targets[index])
                total = tf.reduce_sum(values * weights[index])
            return index + 1, gradients.write(index, tape.gradient(total, part))

        gradients = tf.TensorArray(copies.dtype, size=passes, element_shape=parts.shape[1:])
        # parallel_iterations=1: the passes are independent, so by default the executor would overlap up
        # to 10 of them and hold their activations at once, which is what this function exists to avoid.
        _, gradients = tf.while_loop(lambda index, _: index < passes, one_pass, (tf.constant(0), gradients),
                                     parallel_iterations=1)
        flat = tf.reshape(gradients.stack(), tf.shape(whole_passes(copies)))
        return tf.ensure_shape(flat[:count * batch], copies.shape)

    def ascent(self, direction):
        """The norm's step of size alpha along `direction`: alpha * sign(d) (L-inf) or alpha * d / ||d||_2 (L2)."""
        return ascent(direction, self.alpha, self.norm)

    def project(self, images):
        """Onto the eps ball around the clean images (tiled to the stack) and the [0, 1] box."""
        clean = self.clean if self.groups(images) == 1 else tf.tile(self.clean, [self.groups(images), 1, 1, 1])
        return project(images, clean, self.eps, self.norm)


def make_gradient_estimator(model, config: AttackConfig, objective=None):
    """`estimate(point, labels, targets, generator) -> gradient`: the plain gradient (mean over the input copies,
    then the filters) at `point`, outside a running attack (tests and the benchmarks)."""
    objective = objective or make_objective(model, config)

    def estimate(point, labels, targets, generator):
        clean = tf.convert_to_tensor(point)
        return Context(config, objective, clean, labels, targets, generator).gradient(clean)

    return estimate


class Attack:
    """`attack(model, images, labels=None, target=None, seed=None) -> adv`, a built `AttackConfig`.

    - images: float [N, H, W, 3] in [0, 1]; labels: int [N] (optional with label_source='predicted');
      target: int [N] for a targeted attack; seed: overrides `config.seed` for this call.
    - Returns a float32 tf.Tensor of the images' shape inside the eps ball and [0, 1].
    - `compiled_for(model)` is the traced function (for timing and trace counting); `trace_count`
      counts Python traces of the loop over all models.
    """

    def __init__(self, config: AttackConfig):
        self.config = config
        self.trace_count = 0
        self._compiled = weakref.WeakKeyDictionary()
        self._compiled_strong = {}  # for callables that cannot be weakly referenced
        self._generator: Optional[tf.random.Generator] = None

    def __repr__(self):
        return f"Attack({self.config.name!r}, eps={self.config.eps:.4g}, steps={self.config.steps})"

    # ----- public -----

    def __call__(self, model, images, labels=None, target=None, seed=None):
        check_model(model)
        clean = _check_images(images)
        batch = clean.shape[0]
        num_classes = int(getattr(model, "num_classes", 1000) or 1000)
        if labels is None:
            if self.config.label_source != "predicted":
                raise ValueError("labels are required (or build the attack with label_source='predicted')")
            labels = np.zeros([batch], np.int32)
        labels = _check_labels(labels, "labels", batch, num_classes)
        targeted = target is not None
        targets = _check_labels(target, "target", batch, num_classes) if targeted else labels
        if self._generator is None:
            self._generator = tf.random.Generator.from_seed(self.config.seed)
        self._generator.reset_from_seed(self.config.seed if seed is None else int(seed))
        compiled = self.compiled_for(model)
        return compiled(tf.constant(clean), tf.constant(labels), tf.constant(targets), self._generator, targeted)

    def compiled_for(self, model):
        """The `tf.function` running the whole attack on `model` (built once, cached per model)."""
        try:
            compiled = self._compiled.get(model)
        except TypeError:
            compiled = self._compiled_strong.get(id(model), (None, None))[1]
        if compiled is None:
            compiled = tf.function(self._graph_for(model), jit_compile=self.config.execution.jit_compile, reduce_retracing=False)
            try:
                self._compiled[model] = compiled
            except TypeError:
                self._compiled_strong[id(model)] = (model, compiled)
        return compiled

    # ----- the traced loop -----

    def graph_function(self, model):
        """The untraced loop `run(clean, labels, targets, generator, targeted) -> adv` for `model`.

        For callers that trace it themselves, e.g. inside `strategy.run` (tfattack.distributed).
        """
        return self._graph_for(model)

    def _graph_for(self, model):
        config = self.config
        check_ensemble_strategy(model, config)
        forward_edits = ForwardEdits(model, config)
        objective = make_objective(model, config, forward_edits)
        estimators = config.estimators
        strategy = bool(estimators) and getattr(estimators[0], "ensemble_strategy", False)
        member_logits = make_member_logits(model, config, forward_edits) if strategy else ()
        post_ops = [op for op in config.post if not op.is_identity]

        def start(ctx):
            clean, eps = ctx.clean, config.eps
            shape = tf.shape(clean)
            if config.start == "uniform":
                delta = (ctx.generator.uniform(shape, -eps, eps) if config.norm == "linf" else
                         _l2_uniform(ctx.generator, clean, eps))
            elif config.start == "gaussian":
                delta = ctx.generator.normal(shape, stddev=eps / 2)
                if config.norm == "linf":
                    delta = tf.clip_by_value(delta, -eps, eps)
            else:
                delta = tf.zeros_like(clean)
            return ctx.project(clean + delta)

        def chained(ctx, index, objective=None):
            """The estimator chain from `index` down, as a stateless function of stacked points."""
            if index == len(estimators):
                return lambda points: ctx.gradient(points, objective)
            inner = chained(ctx, index + 1, objective)
            return lambda points: estimators[index].estimate(ctx, inner, points, points, {})[0]

        def one_run(ctx):
            adv = start(ctx)
            update_state = config.update.init(ctx)
            estimator_state = estimators[0].init(ctx) if estimators else {}
            for step in tf.range(config.steps):
                ctx.step = step
                if forward_edits.each_step:
                    forward_edits.prepare(ctx.clean, ctx.generator)
                point = config.update.lookahead(ctx, adv, update_state)
                if estimators:
                    gradient, estimator_state = estimators[0].estimate(ctx, chained(ctx, 1), point, adv,
                                                                       estimator_state)
                else:
                    gradient = ctx.gradient(point)
                adv, update_state = config.update.step(ctx, adv, gradient, update_state)
                adv = ctx.project(adv)
                for op in post_ops:
                    adv = ctx.project(ctx.clean + op.apply(adv - ctx.clean))
            return adv

        def run(clean, labels, targets, generator, targeted):
            self.trace_count += 1
            if config.self_labelled:
                labels = None  # read off the step's own forward pass of the clean image
            elif config.label_source == "predicted":
                labels = tf.argmax(model(clean), axis=-1, output_type=tf.int32)
            if not targeted:
                targets = None
            if hasattr(objective, "prepare"):  # feature-level objectives weigh the features once per call
                objective.prepare(clean, labels, targets, generator)
            if not forward_edits.each_step:
                forward_edits.prepare(clean, generator)  # CFM records the clean features once per call
            ctx = Context(config, objective, clean, labels, targets, generator, member_logits,
                          below=lambda c, member_objective: chained(c, 1, member_objective))
            if config.restarts == 1:
                return ctx.project(one_run(ctx))
            best = clean
            best_score = tf.fill(tf.shape(labels), -np.inf)
            for _ in tf.range(config.restarts):
                adv = one_run(ctx)
                if forward_edits.each_step:  # the step loop's edit lives in that loop's graph
                    forward_edits.prepare(clean, generator)
                score = objective(adv, labels, targets)
                better = score > best_score
                best = tf.where(better[:, None, None, None], adv, best)
                best_score = tf.where(better, score, best_score)
            return ctx.project(best)

        return run


def _l2_uniform(generator, clean, eps):
    """A random direction with an L2 length uniform in [0, eps]."""
    direction = generator.normal(tf.shape(clean))
    length = tf.sqrt(tf.reduce_sum(tf.square(direction), axis=[1, 2, 3], keepdims=True))
    radius = generator.uniform(tf.concat([tf.shape(clean)[:1], [1, 1, 1]], 0), 0.0, eps)
    return radius * tf.math.divide_no_nan(direction, length)
