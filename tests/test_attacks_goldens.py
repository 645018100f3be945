"""Engine v2 keeps every 0.1 preset and flat piece argument: the same images as the flat-field engine made
(tests/golden/attack_goldens.npz, written by tests/golden/make_attack_goldens.py before the redesign)."""

import json
import os

import numpy as np
import pytest

from golden.make_attack_goldens import GoldenNet, cases, float_digest, run_case

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "attack_goldens.npz"))
INDEX = json.loads(str(GOLDEN["index"]))
MODEL = GoldenNet()
CASES = {name: (preset, overrides, targeted) for name, preset, overrides, targeted in cases()}


def test_every_golden_case_is_still_run():
    assert set(INDEX) <= set(CASES)  # every 0.1 preset and legacy combination is still there (newer presets too)


@pytest.mark.parametrize("name", sorted(INDEX))
def test_same_images_as_the_flat_engine(name):
    preset, overrides, targeted = CASES[name]
    adv, pixels = run_case(MODEL, preset, overrides, targeted)
    expected = GOLDEN[f"pixels_{INDEX[name]['number']}"]
    assert np.array_equal(pixels, expected), f"{np.mean(pixels != expected):.2%} of the 8-bit pixels differ"
    assert float_digest(adv) == INDEX[name]["float_sha256"]  # bit-identical floats, not just the same PNG
