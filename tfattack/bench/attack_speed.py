"""Attack speed on an ensemble: seconds per image per iteration, and the attack machinery's overhead.

The overhead ratio of a preset is

    attack seconds per call / (model passes per call x sum over members of their
                               forward + input-gradient seconds on the same batch)

A gradient evaluation is one forward + backward pass of the batch through every member. Presets with
input copies do several per iteration by design (SI: 5 scales; Admix: 3 mixes x 5 scales; VT: one for
the step plus 20 neighbours); DI, TI, momentum and Nesterov add none. So a ratio near 1 means the loop,
the input transforms, the projection and the ensemble fusion cost next to nothing beyond the nets.
"""

from __future__ import annotations

import gc
from typing import Dict, Iterator, List, Sequence

import numpy as np
import tensorflow as tf

import tfattack
from tfattack.bench import timing

# The four-architecture ensemble of the origin write-up: a ResNet, VGG-19, Inception-v3 and
# Inception-ResNet-v2 (ResNet-v2-50 stands for "ResNet" here).
ORIGIN_ENSEMBLE = ("resnet_v2_50", "vgg_19", "inception_v3", "inception_resnet_v2")
IMAGE_SIZE = 299
# XLA plans the buffers of the whole compiled loop up front: Admix (15 images per pass through the four
# nets, batch 1) grew past 20 GiB resident under XLA on the 24 GiB benchmark machine before the process
# was killed. Presets with more images per pass are not run with XLA (their row says so).
XLA_MAX_IMAGES_PER_PASS = 8


# ----- what a preset costs by design -----

def gradient_evaluations(config) -> int:
    """Batch-sized forward+input-gradient passes per iteration: the input copies per gradient evaluation times
    the estimator chain's evaluations (VT: the step's gradient plus its neighbours)."""
    return config.copies * config.gradient_evaluations


def images_per_pass(config, batch: int) -> int:
    """Images one forward pass carries: the batch times its input copies times the points an estimator stacks
    into one evaluation (VT's neighbours run one by one)."""
    stacked = 1
    for estimator in config.estimators:
        stacked *= estimator.stacked_points()
    return batch * config.copies * stacked


# Presets timed in another setting than their own. RAP adds its reverse perturbation only from iteration 100 on, so
# a few timed iterations would not reach its cost: it is timed from there (late_start 0). OPS's 901 passes per
# iteration would take over an hour per call on the origin ensemble: it is timed with 3 of its 30 neighbours
# (91 passes), the same machinery per pass, which is what the ratio measures. L2T and OPS push their copies through
# the four networks in passes of one trajectory (29) / 30 copies: all at once they exceed this machine's 24 GiB.
TIMING_OVERRIDES = {"rap": {"estimators": "rap:0"}, "ops": {"estimators": "ops:neighbours=3", "copies_per_pass": 30},
                    "l2t": {"copies_per_pass": 29}}


def batch_for(config, batch_size: int) -> int:
    """The batch a preset is timed at: `batch_size` divided by its gradient evaluations (at least 1).

    The engine stacks input copies along the batch, so Admix at batch 8 would push 120 images through
    the four nets at once (tens of GiB of activations); dividing keeps one iteration at about
    `batch_size` image-gradients, for memory and for time.
    """
    return max(1, batch_size // gradient_evaluations(config))


# ----- models -----

def load_member(name: str, *, compute_dtype: str = "float32", seed: int = 0):
    """A zoo model with random weights (speed does not depend on their values), run in `compute_dtype`."""
    return tfattack.models.load(name, random_weights=True, seed=seed).with_compute_dtype(compute_dtype)


def missing_models(names: Sequence[str]) -> List[str]:
    known = set(tfattack.models.available())
    return [n for n in names if n not in known]


# ----- measuring -----

def random_batch(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    return images, rng.integers(0, 1000, batch).astype(np.int32)


def member_gradient_seconds(members: Sequence, batch: int, *, jit_compile: bool, repeats: int = 2) -> Dict[str, float]:
    """Forward + input-gradient seconds per batch of each member (best of `repeats` after a warm-up)."""
    images, labels = random_batch(batch)
    images, labels = tf.constant(images), tf.constant(labels, tf.int64)
    seconds = {}
    for model in members:
        _, gradient = timing.forward_and_gradient_fns(model, jit_compile)
        seconds[model.name] = timing.best_time(gradient, images, labels, repeats=repeats)
    return seconds


def time_attack(attack, model, batch: int, *, repeats: int = 1) -> Dict[str, float]:
    """{"first_call_s": trace + compile + one run, "call_s": best later call} of `attack(model, ...)`."""
    images, labels = random_batch(batch, seed=1)
    first = timing.first_call_time(attack, model, images, labels)
    return {"first_call_s": first, "call_s": timing.best_time(attack, model, images, labels, repeats=repeats, warmup=0)}


def measure_presets(presets: Sequence[str], names: Sequence[str], *, batch_size: int, num_iter: int,
                    jit_modes: Sequence[bool] = (False, True), compute_dtype: str = "float32",
                    repeats: int = 1, profile: bool = False,
                    xla_max_images_per_pass: int = XLA_MAX_IMAGES_PER_PASS) -> Iterator[Dict]:
    """Yields one row per (XLA mode, preset) on the ensemble of `names`, each as soon as it is measured.

    Each preset runs `num_iter` iterations per call (its own step count overridden): one call to
    trace/compile, then the best of `repeats` timed calls. Members' baselines are measured in the same
    process at each batch the presets use, right before the first preset needing them. `profile` adds
    one more call under the profiler and its time by op type (`row["ops"]`).
    """
    members = [load_member(n, compute_dtype=compute_dtype) for n in names]
    ensemble = tfattack.models.Ensemble(members)
    for jit in jit_modes:
        baselines: Dict[int, Dict[str, float]] = {}
        for preset in presets:
            attack = tfattack.attacks.build(preset, steps=num_iter, jit_compile=jit, **TIMING_OVERRIDES.get(preset, {}))
            config = attack.config
            evaluations = gradient_evaluations(config)
            passes = config.model_passes(num_iter)
            batch = batch_for(config, batch_size)
            row = {"preset": preset, "jit_compile": jit, "batch": batch, "num_iter": num_iter,
                   "gradient_evaluations": evaluations, "model_passes_per_call": passes,
                   "forward_only_passes_per_call": config.forward_only_passes(num_iter, len(names)),
                   "members": list(names), "compute_dtype": compute_dtype}
            if jit and images_per_pass(config, batch) > xla_max_images_per_pass:
                row["error"] = (f"not run: {images_per_pass(config, batch)} images per pass under XLA "
                                f"(> {xla_max_images_per_pass}, memory; see XLA_MAX_IMAGES_PER_PASS)")
                yield row
                continue
            try:
                if batch not in baselines:
                    baselines[batch] = member_gradient_seconds(members, batch, jit_compile=jit)
                timed = time_attack(attack, ensemble, batch, repeats=repeats)
                if profile:
                    row["ops"] = timing.op_time_breakdown(attack, ensemble, *random_batch(batch, seed=1))
            except Exception as err:  # a failing preset is a row of the table; the run goes on
                row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
                yield row
                continue
            finally:
                del attack
                gc.collect()
            members_s = sum(baselines[batch].values())
            iteration_s = timed["call_s"] / num_iter
            row.update(timed, members_gradient_s=baselines[batch], s_per_image_iteration=iteration_s / batch,
                       members_s_per_image=members_s / batch, overhead_ratio=timed["call_s"] / (members_s * passes),
                       peak_rss_mib=timing.peak_rss_mib())
            yield row


HEADER_NOTE = (
    "ratio = attack s per call ÷ (model passes per call × Σ members' forward+input-gradient s at the same batch): "
    "the overhead of the attack machinery. Model passes count input copies × estimator samples per iteration, plus "
    "DeCoWA's warp-search passes, RAP's bare inner steps (timed from its late start: late_start=0), OPS's "
    "neighbour samples (timed with 3 of its 30 neighbours: the same machinery per pass; OPS 30 and L2T 29 copies "
    "per pass, for memory), GIMI's "
    "pre-phase and the feature-level objectives' once-per-call weighting passes (FIA 30, RPA 60, NAA 30, BFA 31, "
    "ILA's 10-step base attack), all in the 'passes/call' column. Forward passes without a gradient (ILA's "
    "feature pair, CFM's recording, ILPD's reference at every step) are listed after the '+' and are not in the "
    "ratio's denominator. Presets with copies do several evaluations per iteration by "
    "design (SI 5, Admix 15, VT 21; DI/TI/NI add none) and are timed at batch ⌊batch/evaluations⌋ (≥ 1), because "
    "the engine stacks copies along the batch. nips17_fgsm and nips17_mi_fgsm also run one forward pass per call "
    "for the predicted labels, spread over the timed iterations. VT (vmi/vni) with XLA: the neighbours' gradients "
    "of the last iteration only tune a next step that never comes; XLA drops them as dead code (so with one timed "
    "iteration it times no neighbour at all), the plain graph computes them. Timing excludes tracing/compilation (first call, "
    "shown separately).")


def markdown_table(rows: Sequence[Dict], title: str = "") -> str:
    lines = ([title, ""] if title else []) + [HEADER_NOTE, "",
             "| preset | XLA | batch | grad evals/iter | passes/call | s/img/iter | members fwd+grad s/img | ratio | "
             "first call s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        passes = f"{r['model_passes_per_call']}" + (f" + {r['forward_only_passes_per_call']} fwd"
                                                    if r.get("forward_only_passes_per_call") else "")
        head = (f"| {r['preset']} | {'on' if r['jit_compile'] else 'off'} | {r['batch']} | "
                f"{r['gradient_evaluations']} | {passes} |")
        if "error" in r:
            lines.append(f"{head} error: {r['error']} | | | |")
            continue
        lines.append(f"{head} {r['s_per_image_iteration']:.3f} | {r['members_s_per_image']:.3f} | "
                     f"{r['overhead_ratio']:.2f} | {r['first_call_s']:.1f} |")
    return "\n".join(lines)


def ops_table(rows: Sequence[Dict], top: int = 8) -> str:
    """Where each profiled preset's call spends its time, by op type (share of summed op time)."""
    lines = ["| preset | XLA | top op types (share of op time) |", "|---|---|---|"]
    for r in rows:
        if r.get("ops"):
            shares = ", ".join(f"{o['op']} {100 * o['share']:.0f} %" for o in r["ops"][:top])
            lines.append(f"| {r['preset']} | {'on' if r['jit_compile'] else 'off'} | {shares} |")
    return "\n".join(lines)
