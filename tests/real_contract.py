"""The attack contract on a real native network (slim ResNet-50 v2 with random weights): same output twice, one
trace, inside the eps ball and the [0, 1] box."""

import functools

import numpy as np

import tfattack


@functools.lru_cache(maxsize=1)
def resnet():
    return tfattack.models.load("resnet_v2_50", random_weights=True)


def images(count=2, seed=3):
    rng = np.random.default_rng(seed)
    return (np.round(rng.uniform(25, 230, (count, 299, 299, 3))) / 255).astype(np.float32)


def check_contract(attack, model, x, labels, targets=None, reruns=1):
    """Runs `attack` 1 + `reruns` times; returns its output after checking the contract."""
    first = attack(model, x, labels, target=targets).numpy()
    for _ in range(reruns):
        np.testing.assert_array_equal(first, attack(model, x, labels, target=targets).numpy())
    assert attack.trace_count == 1
    assert np.abs(first - x).max() <= attack.config.eps + 1e-6 and 0 <= first.min() and first.max() <= 1
    return first
