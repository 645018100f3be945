"""Pass counts: the images each preset's compiled loop actually sends through the surrogate (counted by
`tfattack.bench.passes`) equal the config's formula (`model_passes` + `forward_only_passes`) that the benchmarks
divide time by. Presets that need a real network (feature taps, backward policies, forward edits) are left to the
formula tests in test_bench.py."""

import numpy as np
import pytest
import tensorflow as tf

from analytic import LinearModel
from tfattack.attacks import build
from tfattack.attacks.presets import PRESETS
from tfattack.bench import passes
from tfattack.models.ensemble import Ensemble

SHAPE = (8, 8, 3)
STEPS = 3
MEMBERS = 3


def needs_a_real_network(config) -> bool:
    return bool(getattr(config.objective, "feature_level", False) or config.backward or config.forward)


def is_strategy(config) -> bool:
    return any(getattr(e, "ensemble_strategy", False) for e in config.estimators)


@pytest.fixture(scope="module")
def setting():
    single = LinearModel(SHAPE, seed=0)
    ensemble = Ensemble([LinearModel(SHAPE, seed=k) for k in range(MEMBERS)])
    images = np.random.default_rng(0).uniform(0.2, 0.8, (2,) + SHAPE).astype(np.float32)
    return single, ensemble, images, np.array([1, 2])


def formula(config, members=1):
    return config.model_passes() + config.forward_only_passes(members=members)


def test_every_preset_passes_as_many_images_as_its_formula_says(setting):
    single, ensemble, images, labels = setting
    checked, wrong = [], []
    for name in sorted(PRESETS):
        attack = build(name, steps=STEPS)
        if needs_a_real_network(attack.config):
            continue
        model, members = (ensemble, MEMBERS) if is_strategy(attack.config) else (single, 1)
        measured = passes.measure(attack, model, images, labels)
        checked.append(name)
        if measured.per_image != formula(attack.config, members):
            wrong.append((name, measured.per_image, formula(attack.config, members)))
    assert not wrong, wrong
    assert {"mi_fgsm", "pgn", "ops", "l2t", "svre", "smer", "adaea", "nips17_mi_fgsm", "gimi", "decowa"} <= set(checked)


@pytest.mark.parametrize("overrides,expected", [
    (dict(estimators="rap:1"), STEPS + 8 * (STEPS - 1)),     # RAP-LS: 8 bare inner steps from step 1 on
    (dict(estimators="rap:100"), STEPS),                    # late start beyond the run: the plain attack
    (dict(restarts=2, start="uniform"), 2 * STEPS + 2),     # each restart runs, then is scored once
    (dict(label_source="predicted"), STEPS + 1),            # the labels' own pass
])
def test_late_starts_restarts_and_predicted_labels_are_counted(setting, overrides, expected):
    single, _, images, labels = setting
    attack = build("mi_fgsm", steps=STEPS, **overrides)
    assert passes.measure(attack, single, images, labels).per_image == formula(attack.config) == expected


def test_a_counted_ensemble_keeps_its_fusion_and_outputs(setting):
    _, ensemble, images, _ = setting
    counted, counter = passes.counted(ensemble)
    np.testing.assert_array_equal(counted(images).numpy(), ensemble(images).numpy())
    assert counted.weights == ensemble.weights and counted.fuse == ensemble.fuse
    assert int(counter.numpy()) == MEMBERS * len(images)
    single, counter = passes.counted(LinearModel(SHAPE, seed=0))
    # the wrapper has the forward methods the model has, and no others (the attack reads their presence)
    assert not hasattr(single, "outputs") and not hasattr(single, "logits_and_aux") and single.shape == SHAPE
    single(tf.constant(images[:1]))
    assert int(counter.numpy()) == 1
