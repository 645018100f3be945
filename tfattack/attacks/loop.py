"""The one attack loop. Every preset and combination is this loop with a different `AttackConfig`.

Per step (x_0 = clean + start, g_0 = v_0 = 0):
    p      = x_t + alpha*mu*g_t if nesterov else x_t                  (updates.lookahead_point)
    grad   = TI( mean over copies c(p) of d objective(c(p)) / dp )     (input_transforms, losses, gradient_ops)
    cur    = grad + v_t ;  v_{t+1} = mean_i grad(x_t + r_i) - grad     (VT, if vt_samples > 0)
    g_t+1  = mu*g_t + cur / mean|cur|                                  (updates.accumulate)
    x_t+1  = project(x_t + alpha*sign(g_t+1)), then optional blur of x_t+1 - clean and project again.

All steps, copies, neighbours, restarts and ensemble members run inside one `tf.function` per
(attack, model); it is traced once per batch shape and targeted/untargeted mode.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf

from tfattack.attacks import gradient_ops, input_transforms, losses, updates
from tfattack.attacks.config import AttackConfig
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


def make_objective(model, config: AttackConfig):
    """`objective(images, labels, targets) -> [N]`, the per-image value the attack ascends.

    For `fuse == 'loss'` ensembles it is the weighted sum of the members' objectives. The forward pass
    runs in `config.compute_dtype`: zoo models and ensembles switch their networks to it (see
    `in_compute_dtype`); any other callable gets its input cast and, if it rejects that, runs in float32
    with a warning (at trace time). Logits are float32 before the loss.
    """
    model = in_compute_dtype(model, config.compute_dtype)
    fuse_loss = getattr(model, "fuse", None) == "loss"
    # The aux head's loss is added where the model has one (NIPS'17 samples: weight 0.4).
    with_aux = config.aux_weight > 0 and not fuse_loss and hasattr(model, "logits_and_aux")
    call = model.member_logits if fuse_loss else (model.logits_and_aux if with_aux else model)
    # Models with `with_compute_dtype` have been switched above; only plain callables get cast inputs.
    cast_input = config.compute_dtype != "float32" and not hasattr(model, "with_compute_dtype")
    compute_dtype = [tf.as_dtype(config.compute_dtype) if cast_input else tf.float32]

    def to_float32(outputs):
        if fuse_loss or with_aux:
            return [None if o is None else tf.cast(o, tf.float32) for o in outputs]
        return tf.cast(outputs, tf.float32)

    def forward(images):
        if compute_dtype[0] != tf.float32:
            try:
                return to_float32(call(tf.cast(images, compute_dtype[0])))
            except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
                warnings.warn(f"model {model_name(model)!r} cannot run in {config.compute_dtype} "
                              f"({type(error).__name__}); attacking in float32")
                compute_dtype[0] = tf.float32
        return call(images)

    def objective(images, labels, targets):
        """`labels=None`: self-labelled, the labels are this very forward pass's top-1 (no gradient);
        used when the only gradient point is the clean image itself (see `self_labelled`)."""
        outputs = forward(images)
        if labels is None:
            fused = (tf.add_n([w * l for w, l in zip(model.weights, outputs)]) if fuse_loss else
                     outputs[0] if with_aux else outputs)
            labels = tf.argmax(tf.stop_gradient(fused), axis=-1, output_type=tf.int32)
        if fuse_loss:
            return tf.add_n([w * losses.objective(l, labels, targets, config) for w, l in zip(model.weights, outputs)])
        if with_aux:
            logits, aux = outputs
            value = losses.objective(logits, labels, targets, config)
            if aux is None:
                return value
            return value + config.aux_weight * losses.objective(aux, labels, targets, config)
        return losses.objective(outputs, labels, targets, config)

    return objective


def make_gradient_estimator(model, config: AttackConfig, objective=None):
    """`estimate(point, labels, targets, generator) -> gradient`: the TI-smoothed mean, over all input
    copies of `point` (Admix, SI, DI, augmentations), of the gradient of the objective w.r.t. `point`.
    This is the gradient the update rule receives (before VT and momentum)."""
    objective = objective or make_objective(model, config)
    ti_kernel = gradient_ops.gaussian_kernel(config.ti_kernel, config.ti_nsig)

    def estimate(point, labels, targets, generator):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(point)
            copies, count = input_transforms.expand_copies(point, generator, config)
            copy_labels = None if labels is None else tf.tile(labels, [count])
            copy_targets = None if targets is None else tf.tile(targets, [count])
            one_pass = not config.copies_per_pass or config.copies_per_pass >= count
            if one_pass:
                total = tf.reduce_sum(objective(copies, copy_labels, copy_targets))
        if one_pass:
            gradient = tape.gradient(total, point)
        else:
            # Chain rule in two halves: the objective's gradient w.r.t. the copies, a few copies per pass,
            # then back through the copy transforms (Admix, SI, DI, augmentations) in one go.
            copy_gradient = copies_gradient(copies, copy_labels, copy_targets, tf.shape(point)[0], count)
            gradient = tape.gradient(copies, point, output_gradients=copy_gradient)
        return gradient_ops.smooth(gradient / float(count), ti_kernel)

    def copies_gradient(copies, labels, targets, batch, count):
        """d objective / d copies, `config.copies_per_pass` copies of the batch per forward/backward pass.
        A sequential `tf.while_loop` runs the passes one after another, so one pass's activations are alive.
        The copies are padded to whole passes (the padding's objective is weighted 0) so that every pass
        has the same static shape, which XLA needs."""
        per_pass = config.copies_per_pass
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

    return estimate


def self_labelled(config: AttackConfig) -> bool:
    """True when the predicted labels can be read off the attack's own first forward pass instead of a
    separate one: a single step from the clean image (zero start, no restarts) through one untransformed
    copy (no Admix, SI, DI, augmentations or VT), as in FGSM on predicted labels."""
    return (config.label_source == "predicted" and config.steps == 1 and config.restarts == 1
            and config.start == "zero" and config.admix_strength == 0 and config.si_copies == 1
            and config.num_copies == 1 and config.diversity_prob == 0 and not config.augmentations
            and config.vt_samples == 0)


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
            compiled = tf.function(self._graph_for(model), jit_compile=self.config.jit_compile, reduce_retracing=False)
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
        alpha = config.alpha
        objective = make_objective(model, config)
        estimate_gradient = make_gradient_estimator(model, config, objective)
        blur_kernel = gradient_ops.gaussian_kernel(config.delta_blur_kernel, config.delta_blur_nsig)

        def variance(images, gradient, labels, targets, generator):
            """VT: mean gradient over vt_samples neighbours of `images`, minus `gradient` (Wang & He 2021)."""
            total = tf.zeros_like(images)
            for _ in tf.range(config.vt_samples):
                # The neighbours' gradients are independent: by default the executor overlaps up to 10 of
                # them (faster on idle cores, more memory: Inception-v3 batch 12, 3.3 vs 2.4 GiB peak RSS);
                # the memory-bounded mode (copies_per_pass > 0) runs them one at a time.
                tf.autograph.experimental.set_loop_options(parallel_iterations=1 if config.copies_per_pass else 10)
                neighbour = gradient_ops.vt_neighbour(images, generator, config.vt_beta * config.eps)
                total += estimate_gradient(neighbour, labels, targets, generator)
            return total / float(config.vt_samples) - gradient

        def start(clean, generator):
            shape = tf.shape(clean)
            if config.start == "uniform":
                delta = generator.uniform(shape, -config.eps, config.eps)
            elif config.start == "gaussian":
                delta = tf.clip_by_value(generator.normal(shape, stddev=config.eps / 2), -config.eps, config.eps)
            else:
                delta = tf.zeros_like(clean)
            return project(clean + delta, clean, config.eps)

        def one_run(clean, labels, targets, generator):
            adv = start(clean, generator)
            accumulated = tf.zeros_like(clean)
            tuning = tf.zeros_like(clean)
            for _ in tf.range(config.steps):
                point = updates.lookahead_point(adv, accumulated, alpha, config.momentum, config.nesterov)
                gradient = estimate_gradient(point, labels, targets, generator)
                current = gradient
                if config.vt_samples:
                    current = gradient + tuning
                    tuning = variance(adv, gradient, labels, targets, generator)
                accumulated = updates.accumulate(accumulated, current, config.momentum)
                adv = project(updates.sign_step(adv, accumulated, alpha), clean, config.eps)
                if config.delta_blur_kernel > 1:
                    adv = project(clean + gradient_ops.smooth(adv - clean, blur_kernel), clean, config.eps)
            return adv

        def run(clean, labels, targets, generator, targeted):
            self.trace_count += 1
            if self_labelled(config):
                labels = None  # read off the step's own forward pass of the clean image
            elif config.label_source == "predicted":
                labels = tf.argmax(model(clean), axis=-1, output_type=tf.int32)
            if not targeted:
                targets = None
            if config.restarts == 1:
                return project(one_run(clean, labels, targets, generator), clean, config.eps)
            best = clean
            best_score = tf.fill(tf.shape(labels), -np.inf)
            for _ in tf.range(config.restarts):
                adv = one_run(clean, labels, targets, generator)
                score = objective(adv, labels, targets)
                better = score > best_score
                best = tf.where(better[:, None, None, None], adv, best)
                best_score = tf.where(better, score, best_score)
            return project(best, clean, config.eps)

        return run
