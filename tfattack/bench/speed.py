"""`--what=speed`: the speed tables in one run.

1. each zoo architecture: forward and forward+input-gradient time per image, peak memory, FLOPs, and
   the achieved FLOP/s as a fraction of the machine's float32 matmul rate measured in the same process;
2. attack presets on the four-model ensemble (`attack_speed`);
3. MI-FGSM against a TF1 peer (the research code's graph + Session form, same weights, batch, steps);
4. options side by side on MI-FGSM / Inception-v3: XLA on/off, bfloat16 on/off, batch 1/8/32,
   with the notes on which default was chosen and why, derived from the figures measured;
5. memory of a many-copy attack against `copies_per_pass` (each setting in its own process: peak RSS).

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
    """Times `peer(images, labels)` and tfattack's MI-FGSM on `model` in float32 and with
    `compute_dtype="bfloat16"`, interleaved (so that all see the same load), best of `repeats` after one
    warm-up call each; also checks that the float32 results agree with the peer's."""
    attacks = {"ours": tfattack.attacks.build("mi_fgsm", steps=steps),
               "ours_bfloat16": tfattack.attacks.build("mi_fgsm", steps=steps, compute_dtype="bfloat16")}
    images, labels = attack_speed.random_batch(batch, seed=2)
    calls = {"peer": lambda: peer(images, labels)}
    calls.update({k: (lambda a=a: a(model, images, labels)) for k, a in attacks.items()})
    result = {"batch": batch, "steps": steps}
    for key, call in calls.items():
        result[f"{key}_first_call_s"] = timing.first_call_time(call)
    seconds = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            seconds[key].append(timing.best_time(call, repeats=1, warmup=0))
    for key in calls:
        result[f"{key}_s"] = min(seconds[key])
    result["ratio"] = result["ours_s"] / result["peer_s"]
    result["ratio_bfloat16"] = result["ours_bfloat16_s"] / result["peer_s"]
    result["pixels_equal"] = float(np.mean(np.abs(np.asarray(calls["peer"]()) - calls["ours"]().numpy()) < 1e-4))
    return result


def peer_table(result: Dict) -> str:
    def row(label, key):
        return (f"| {label} | {result['batch']} | {result['steps']} | {result[key + '_s']:.2f} | "
                f"{result[key + '_s'] / result['batch'] / result['steps']:.3f} | {result[key + '_first_call_s']:.1f} |")
    lines = ["| implementation | batch | iterations | s per call | s/img/iter | first call s |", "|---|---|---|---|---|---|",
             row("TF1 peer: tf-slim Inception-v3 (float32), tf.while_loop in one Session.run", "peer"),
             row("tfattack mi_fgsm on tfattack inception_v3, float32 (default)", "ours")]
    if "ours_bfloat16_s" in result:
        lines.append(row("tfattack mi_fgsm, compute_dtype=bfloat16", "ours_bfloat16"))
    lines += ["", f"ours / peer = {result['ratio']:.2f} in float32, "
                  f"{result.get('ratio_bfloat16', float('nan')):.2f} with compute_dtype=bfloat16 (goal ≤ 0.8); "
                  f"float32 adversarial pixels equal to the peer's (|Δ| < 1e-4): {100 * result['pixels_equal']:.1f} % "
                  "(the rest are float-rounding sign flips of near-zero gradients)."]
    return "\n".join(lines)


# ----- 4. options -----

def gradient_sign_agreement(model, other, batch: int = 2) -> float:
    """Fraction of input-gradient entries whose sign agrees between two versions of one model."""
    images, labels = attack_speed.random_batch(batch, seed=3)
    images, labels = tf.constant(images), tf.constant(labels, tf.int64)
    signs = [np.sign(timing.forward_and_gradient_fns(m)[1](images, labels).numpy()) for m in (model, other)]
    return float(np.mean(signs[0] == signs[1]))


def option_rows(batches: Sequence[int], num_iter: int, *, jit_modes=(False, True),
                dtypes=("float32", "bfloat16")) -> List[Dict]:
    """MI-FGSM on Inception-v3 (random weights) for every (XLA, compute dtype, batch), through the
    library's own options (`jit_compile`, `compute_dtype`)."""
    rows = []
    model = attack_speed.load_member(OPTION_MODEL)
    for jit, dtype in itertools.product(jit_modes, dtypes):
        for batch in batches:
            attack = tfattack.attacks.build(OPTION_PRESET, steps=num_iter, jit_compile=jit, compute_dtype=dtype)
            row = {"option": f"compute_dtype={dtype}", "jit_compile": jit, "batch": batch, "dtype": dtype}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rows.append(_timed(row, attack, model, batch, num_iter))
            if any("float32" in str(w.message) for w in caught):
                row["fell_back_to_float32"] = True
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
            extra = " (fell back to float32)" if r.get("fell_back_to_float32") else ""  # a model without bf16
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
        notes.append(f"compute_dtype=bfloat16: {plain / bf16:.2f}× the float32 speed at batch {middle} (this CPU has "
                     f"AVX-512 BF16); input-gradient signs agree with float32 on {100 * sign_agreement:.1f} % of "
                     "entries. The default stays float32: bfloat16 is only fast on CPUs with AVX-512 BF16/AMX (and "
                     "on TPUs/GPUs), elsewhere it is emulated and slower, and the same seed should give the same "
                     "images on every machine. Users opt in with --compute_dtype=bfloat16 (its effect on transfer "
                     "is a row of the transfer table).")
    per_batch = {b: _lookup(rows, dtype="float32", jit_compile=False, batch=b) for b in batches}
    if all(per_batch.values()):
        shown = ", ".join(f"batch {b}: {v:.3f}" for b, v in per_batch.items())
        best = min(per_batch, key=per_batch.get)
        notes.append(f"Batch (float32, no XLA, s/img/iter): {shown}; fastest per image at batch {best}. "
                     "The scripts' default batch stays 8 (the NIPS'17 code's size order; memory grows with "
                     "batch × input copies).")
    return notes


# ----- 5. memory of the many-copy attacks -----

# (preset, copies_per_pass) rows: Admix's 15 stacked copies in 1, 3 or 15 passes; VT's 20 neighbours
# overlapped (the default) or one at a time (any copies_per_pass > 0).
MEMORY_RUNS = (("admix_ti_dim", 0), ("admix_ti_dim", 5), ("admix_ti_dim", 1), ("vmi_fgsm", 0), ("vmi_fgsm", 1))
# One mid-size net at a batch where the copies' activations dominate the process: on the four-model
# ensemble at batch 1 the weights, their per-call BN folding and oneDNN's reordered copies dominate
# (11.3 GiB whatever copies_per_pass), and at batch 4 it would not fit in this machine's 24 GiB.
MEMORY_MODELS = ("inception_v3",)
MEMORY_BATCH = 12


def copies_memory(preset: str, copies_per_pass: int, batch: int = MEMORY_BATCH, steps: int = 1) -> Dict:
    """Peak RSS and time of `preset` on `MEMORY_MODELS` with `copies_per_pass`; run it in a fresh
    process (peak RSS is the process's)."""
    members = [attack_speed.load_member(n) for n in MEMORY_MODELS]
    model = tfattack.models.Ensemble(members)
    attack = tfattack.attacks.build(preset, steps=steps, copies_per_pass=copies_per_pass)
    images, labels = attack_speed.random_batch(batch, seed=4)
    first = timing.first_call_time(attack, model, images, labels)
    call = timing.best_time(attack, model, images, labels, repeats=1, warmup=0)
    copies = attack_speed.images_per_pass(attack.config, 1)
    return {"preset": preset, "models": list(MEMORY_MODELS), "copies_per_pass": copies_per_pass, "batch": batch,
            "copies": copies,
            "images_per_pass": batch * (copies if copies_per_pass == 0 else min(copies_per_pass, copies)),
            "first_call_s": first, "s_per_image_iteration": call / batch / steps, "peak_rss_mib": timing.peak_rss_mib()}


def memory_table(rows: Sequence[Dict]) -> str:
    lines = [f"On {' + '.join(MEMORY_MODELS)} (random weights), one process per row; VMI's 20 neighbours are "
             "overlapped at copies_per_pass 0 and run one at a time otherwise:", "",
             "| preset | copies_per_pass | batch | images per pass | s/img/iter | peak RSS MiB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['copies_per_pass']} | {r['batch']} | error: {r['error']} | | |")
            continue
        label = f"{r['copies_per_pass']} (all {r['copies']})" if r["copies_per_pass"] == 0 else str(r["copies_per_pass"])
        lines.append(f"| {r['preset']} | {label} | {r['batch']} | {r['images_per_pass']} | "
                     f"{r['s_per_image_iteration']:.2f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)
