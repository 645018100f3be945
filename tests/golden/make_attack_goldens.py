"""Writes tests/golden/attack_goldens.npz: every preset and a set of piece-flag combinations, run on a small
fixed network: the 8-bit PNG pixels of each adversarial batch and the sha256 of its float32 bytes.

Made once with the flat-field engine (commit 997f6a2, before engine v2) so that
tests/test_attacks_goldens.py can check that every preset name and every legacy piece argument still gives the
same images for the same seed. Rerun only to extend the cases, from a checkout whose engine is trusted:

    python tests/golden/make_attack_goldens.py
"""

import hashlib
import json
import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import tfattack.attacks as attacks  # noqa: E402

OUTPUT = os.path.join(HERE, "attack_goldens.npz")

# Piece combinations named by the legacy (flat) build() arguments, covering every legacy field.
LEGACY_CASES = {
    "ni_ti_blur": dict(preset="ni_fgsm", ti_kernel=5, ti_nsig=2.0, delta_blur_kernel=3, delta_blur_nsig=2.5),
    "di_ratio_views": dict(preset="di_mi_fgsm", diversity_resize_ratio=1.2, num_copies=3),
    "aug_all": dict(preset="mi_fgsm", augmentations=("rotate", "brighten", "noise", "flip", "gaussian_filter"),
                    rotate_degrees=15.0, brightness_delta=0.1, noise_std=0.03, filter_kernel=5),
    "aug_one": dict(preset="mi_fgsm", augmentations=("translate", "darken", "jpeg", "bit_depth", "scale"),
                    augment_mode="one", augment_prob=0.7, translate_fraction=0.2, jpeg_quality=60, bit_depth=4,
                    scale_range=(0.8, 1.2), num_copies=2),
    "aug_dct_dropout": dict(preset="di_mi_fgsm", augmentations=("dct_lowpass", "dropout"), dct_keep=0.4,
                            dropout_rate=0.2),
    "admix_views": dict(preset="admix", admix_copies=2, si_copies=3, num_copies=2, diversity_prob=0.5),
    "vt_di_beta": dict(preset="vmi_fgsm", vt_samples=4, vt_beta=2.0, diversity_prob=0.5, steps=4),
    "cw_uniform_restarts": dict(preset="i_fgsm", loss="cw", start="uniform", restarts=3, step_size=2 / 255),
    "logit_gaussian": dict(preset="mi_fgsm", loss="logit", start="gaussian", momentum=0.5),
    "po_trip_params": dict(preset="mi_fgsm", loss="po_trip", po_trip_lambda=0.05, po_trip_margin=0.01),
    "smoothing_predicted": dict(preset="i_fgsm", label_smoothing=0.2, label_source="predicted"),
    "copies_per_pass": dict(preset="admix_ti_dim", copies_per_pass=4, steps=3),
    "vt_copies_per_pass": dict(preset="vni_fgsm", copies_per_pass=1, vt_samples=3, steps=3),
    "seed": dict(preset="ti_di_mi_fgsm", seed=7),
}


class GoldenNet(tf.Module):
    """Two 3x3 convolutions with ReLU, global mean, dense to 1000: 32x32 RGB in [0, 1] -> logits."""

    def __init__(self):
        super().__init__(name="golden_net")
        rng = np.random.default_rng(2024)
        self.conv1 = tf.constant(rng.normal(0, 0.4, [3, 3, 3, 12]), tf.float32)
        self.conv2 = tf.constant(rng.normal(0, 0.2, [3, 3, 12, 16]), tf.float32)
        self.dense = tf.constant(rng.normal(0, 0.3, [16, 1000]), tf.float32)

    def __call__(self, images):
        hidden = tf.nn.relu(tf.nn.conv2d(images * 2.0 - 1.0, self.conv1, 1, "SAME"))
        hidden = tf.nn.relu(tf.nn.conv2d(hidden, self.conv2, 2, "SAME"))
        return tf.reduce_mean(hidden, axis=[1, 2]) @ self.dense


def inputs():
    rng = np.random.default_rng(11)
    clean = (rng.integers(0, 256, size=(4, 32, 32, 3)) / 255).astype(np.float32)
    labels = np.array([3, 250, 600, 999], np.int32)
    targets = np.array([10, 20, 30, 40], np.int32)
    return clean, labels, targets


def cases():
    """(case name, preset or None, legacy overrides, targeted) for every golden."""
    out = []
    for name in attacks.presets():
        out.append((f"preset/{name}", name, {}, False))
        out.append((f"preset/{name}/targeted", name, {}, True))
    for name, values in LEGACY_CASES.items():
        values = dict(values)
        preset = values.pop("preset")
        out.append((f"legacy/{name}", preset, values, False))
    return out


def run_case(model, preset, overrides, targeted):
    clean, labels, targets = inputs()
    attack = attacks.build(preset, **overrides)
    adv = attack(model, clean, labels, target=targets if targeted else None).numpy()
    return adv, attacks.to_uint8(attacks.quantize(adv, clean, attack.config.eps))


def float_digest(adv: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(adv, np.float32).tobytes()).hexdigest()


def main():
    model = GoldenNet()
    arrays, index = {}, {}
    for number, (name, preset, overrides, targeted) in enumerate(cases()):
        adv, pixels = run_case(model, preset, overrides, targeted)
        arrays[f"pixels_{number}"] = pixels
        index[name] = {"number": number, "float_sha256": float_digest(adv)}
        print(name, index[name]["float_sha256"][:12])
    arrays["index"] = np.array(json.dumps(index))
    np.savez_compressed(OUTPUT, **arrays)
    print("wrote", OUTPUT, os.path.getsize(OUTPUT), "bytes")


if __name__ == "__main__":
    main()
