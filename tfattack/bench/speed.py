"""`--what=speed`: the speed tables in one run.

1. each zoo architecture: forward and forward+input-gradient time per image, peak memory, FLOPs, and
   the achieved FLOP/s as a fraction of the machine's float32 matmul rate measured in the same process;
2. attack presets on the four-model ensemble (`attack_speed`);
3. MI-FGSM against a TF1 peer (the research code's graph + Session form, same weights, batch, steps);
4. options side by side on MI-FGSM / Inception-v3: XLA on/off, bfloat16 on/off, batch 1/8/32,
   with the notes on which default was chosen and why, derived from the figures measured.

Nothing here imports tf_slim: the peer is passed in as a callable by `scripts/benchmark.py`.
"""

from __future__ import annotations

import gc
import itertools
import warnings
from typing import Callable, Dict, List, Sequence

import numpy as np
import tensorflow as tf

import tfattack
from tfattack.bench import attack_speed, timing

OPTION_MODEL = "inception_v3"
OPTION_PRESET = "mi_fgsm"


# ----- 1. models -----

def models_table(rows: Sequence[Dict]) -> str:
    """The per-architecture table; each row's FLOP/s is judged against the matmul rate of its own process."""
    lines = ["| model | input | batch | forward ms/img | fwd+grad ms/img | GFLOPs/img (fwd) | matmul GFLOP/s | "
             "achieved / matmul (fwd) | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | {r['batch']} | error: {r['error']} | | | | | |")
            continue
        flops = r["forward_flops"] / r["batch"]
        rate = r["matmul_flops_per_second"]
        lines.append(f"| {r['model']} | {r['image_size']} | {r['batch']} | {1e3 * r['forward_s_per_image']:.1f} | "
                     f"{1e3 * r['gradient_s_per_image']:.1f} | {flops / 1e9:.2f} | {rate / 1e9:.0f} | "
                     f"{flops / r['forward_s_per_image'] / rate:.2f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


# ----- 3. the TF1 peer -----

def compare_with_peer(peer: Callable, model, batch: int, steps: int, *, repeats: int = 3) -> Dict:
    """Times `peer(images, labels)` and tfattack's MI-FGSM on `model`, interleaved (so that both see the
    same load), best of `repeats` after one warm-up call each; also checks they agree on the result."""
    attack = tfattack.attacks.build("mi_fgsm", steps=steps)
    images, labels = attack_speed.random_batch(batch, seed=2)
    first_peer = timing.first_call_time(peer, images, labels)
    first_ours = timing.first_call_time(attack, model, images, labels)
    peer_s, ours_s = [], []
    for _ in range(repeats):
        peer_s.append(timing.best_time(peer, images, labels, repeats=1, warmup=0))
        ours_s.append(timing.best_time(attack, model, images, labels, repeats=1, warmup=0))
    agree = np.mean(np.abs(np.asarray(peer(images, labels)) - attack(model, images, labels).numpy()) < 1e-4)
    return {"batch": batch, "steps": steps, "peer_s": min(peer_s), "ours_s": min(ours_s),
            "ratio": min(ours_s) / min(peer_s), "peer_first_call_s": first_peer, "ours_first_call_s": first_ours,
            "pixels_equal": float(agree)}


def peer_table(result: Dict) -> str:
    return "\n".join([
        "| implementation | batch | iterations | s per call | s/img/iter | first call s |", "|---|---|---|---|---|---|",
        f"| TF1 peer: tf-slim Inception-v3, tf.while_loop in one Session.run | {result['batch']} | {result['steps']} | "
        f"{result['peer_s']:.2f} | {result['peer_s'] / result['batch'] / result['steps']:.3f} | {result['peer_first_call_s']:.1f} |",
        f"| tfattack mi_fgsm on tfattack inception_v3 | {result['batch']} | {result['steps']} | {result['ours_s']:.2f} | "
        f"{result['ours_s'] / result['batch'] / result['steps']:.3f} | {result['ours_first_call_s']:.1f} |",
        "", f"ours / peer = {result['ratio']:.2f} (goal ≤ 0.8); adversarial pixels equal (|Δ| < 1e-4): "
            f"{100 * result['pixels_equal']:.1f} % (the rest are float-rounding sign flips of near-zero gradients)."])


# ----- 4. options -----

def gradient_sign_agreement(model, other, batch: int = 2) -> float:
    """Fraction of input-gradient entries whose sign agrees between two versions of one model."""
    images, labels = attack_speed.random_batch(batch, seed=3)
    images, labels = tf.constant(images), tf.constant(labels, tf.int64)
    signs = [np.sign(timing.forward_and_gradient_fns(m)[1](images, labels).numpy()) for m in (model, other)]
    return float(np.mean(signs[0] == signs[1]))


def option_rows(batches: Sequence[int], num_iter: int, *, jit_modes=(False, True),
                dtypes=("float32", "bfloat16")) -> List[Dict]:
    """MI-FGSM on Inception-v3 (random weights) for every (batch, XLA, dtype), plus the library's own
    `compute_dtype="bfloat16"` path at the middle batch (which falls back to float32 on zoo models)."""
    rows = []
    for jit, dtype in itertools.product(jit_modes, dtypes):
        model = attack_speed.load_member(OPTION_MODEL, compute_dtype=dtype)
        for batch in batches:
            attack = tfattack.attacks.build(OPTION_PRESET, steps=num_iter, jit_compile=jit)
            row = {"option": f"{dtype} weights+activations", "jit_compile": jit, "batch": batch, "dtype": dtype}
            rows.append(_timed(row, attack, model, batch, num_iter))
    model = attack_speed.load_member(OPTION_MODEL)
    batch = batches[len(batches) // 2]
    attack = tfattack.attacks.build(OPTION_PRESET, steps=num_iter, compute_dtype="bfloat16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row = _timed({"option": "library compute_dtype=bfloat16", "jit_compile": False, "batch": batch,
                      "dtype": "bfloat16 (config)"}, attack, model, batch, num_iter)
    row["fell_back_to_float32"] = any("float32" in str(w.message) for w in caught)
    rows.append(row)
    return rows


def _timed(row: Dict, attack, model, batch: int, num_iter: int) -> Dict:
    try:
        timed = attack_speed.time_attack(attack, model, batch)
        row.update(timed, s_per_image_iteration=timed["call_s"] / num_iter / batch)
    except Exception as err:  # a failing option is a row of the table; the run goes on
        row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
    gc.collect()
    return row


def options_table(rows: Sequence[Dict]) -> str:
    lines = [f"{OPTION_PRESET} on {OPTION_MODEL}, random weights:", "",
             "| option | XLA | batch | s/img/iter | first call s |", "|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['option']} | {'on' if r['jit_compile'] else 'off'} | {r['batch']} |"
        if "error" in r:
            lines.append(f"{head} error: {r['error']} | |")
        else:
            extra = " (fell back to float32)" if r.get("fell_back_to_float32") else ""
            lines.append(f"{head} {r['s_per_image_iteration']:.3f}{extra} | {r['first_call_s']:.1f} |")
    return "\n".join(lines)


def _lookup(rows, **match):
    for r in rows:
        if "error" not in r and all(r.get(k) == v for k, v in match.items()):
            return r["s_per_image_iteration"]
    return None


def default_notes(rows: Sequence[Dict], sign_agreement: float) -> List[str]:
    """Which defaults the library keeps and why, from the measured option rows."""
    notes = []
    batches = sorted({r["batch"] for r in rows if r.get("dtype") == "float32"})
    middle = batches[len(batches) // 2]
    plain = _lookup(rows, dtype="float32", jit_compile=False, batch=middle)
    xla = _lookup(rows, dtype="float32", jit_compile=True, batch=middle)
    bf16 = _lookup(rows, dtype="bfloat16", jit_compile=False, batch=middle)
    if plain and xla:
        verdict = ("slower, so the default stays jit_compile=False" if xla >= plain else
                   "faster once compiled; the default still stays jit_compile=False because compiling costs the "
                   "first-call time above and the jpeg/rotate/translate/scale augmentations cannot compile")
        notes.append(f"XLA: {xla:.3f} vs {plain:.3f} s/img/iter without it at batch {middle}: {verdict}.")
    if plain and bf16:
        notes.append(f"bfloat16 weights+activations: {plain / bf16:.2f}× the float32 speed at batch {middle}; input-"
                     f"gradient signs agree with float32 on {100 * sign_agreement:.1f} % of entries. Default stays "
                     "float32: the library's compute_dtype='bfloat16' falls back to float32 on the zoo models (their "
                     "variables are float32), and bfloat16 changes which pixels move.")
    per_batch = {b: _lookup(rows, dtype="float32", jit_compile=False, batch=b) for b in batches}
    if all(per_batch.values()):
        shown = ", ".join(f"batch {b}: {v:.3f}" for b, v in per_batch.items())
        best = min(per_batch, key=per_batch.get)
        notes.append(f"Batch (float32, no XLA, s/img/iter): {shown}; fastest per image at batch {best}. "
                     "The scripts' default batch stays 8 (the NIPS'17 code's size order; memory grows with "
                     "batch × input copies).")
    return notes
