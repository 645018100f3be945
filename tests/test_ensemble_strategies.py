"""Ensemble strategies (SVRE, CWA, AdaEA, SMER): whole attacks on an ensemble of linear members equal NumPy
transcriptions of the papers' updates, with the random draws replayed from the same seeded generator."""

import numpy as np
import pytest
import tensorflow as tf

from analytic import LinearModel
from tfattack.attacks import components
from tfattack.attacks.presets import get as preset
from tfattack.attacks.components import ComponentError
from tfattack.attacks.config import AttackConfig
from tfattack.attacks.loop import Attack, check_surrogate
from tfattack.attacks.objectives import FIA
from tfattack.attacks.transforms import DI
from tfattack.attacks.updates import MI
from tfattack.models.ensemble import Ensemble

SHAPE = (4, 4, 3)
EPS, STEPS = 16 / 255, 3
ALPHA = EPS / STEPS
SEED = 7


@pytest.fixture(scope="module")
def setting():
    members = [LinearModel(SHAPE, seed=10 + k) for k in range(3)]
    rng = np.random.default_rng(3)
    images = rng.uniform(0.1, 0.9, size=(2,) + SHAPE).astype(np.float32)
    labels = np.array([5, 17], np.int32)
    targets = np.array([100, 200], np.int32)
    return members, images, labels, targets


def run(members, spec, images, labels, targets=None, decay=1.0):
    config = AttackConfig(eps=EPS, steps=STEPS, seed=SEED, estimators=components.parse("estimator", spec),
                          update=MI(decay))
    return Attack(config)(Ensemble(members), images, labels, target=targets).numpy()


# ----------------------------------------------------------------- NumPy transcription

def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def logits(member, x):
    return x.reshape(len(x), -1).astype(np.float64) @ member.w + member.b


def ce(z, y):
    return -np.log(softmax(z)[np.arange(len(y)), y])


def objective_gradient(members, coefs, x, labels, targets):
    """d J(sum_k coefs[:, k] z_k) / dx, J = CE(labels) untargeted, -CE(targets) targeted."""
    z = sum(coefs[:, k:k + 1] * logits(m, x) for k, m in enumerate(members))
    y = labels if targets is None else targets
    d = softmax(z)
    d[np.arange(len(y)), y] -= 1.0
    g = sum(coefs[:, k:k + 1] * (d @ m.w.T) for k, m in enumerate(members)).reshape(x.shape)
    return g if targets is None else -g


def one_hot(k, count, batch):
    return np.tile(np.eye(count)[k], (batch, 1))


def project(x, clean):
    return np.clip(np.clip(x, clean - EPS, clean + EPS), 0.0, 1.0)


def l1(g):
    return g / np.abs(g).mean(axis=(1, 2, 3), keepdims=True)


def l2(g):
    return g / np.sqrt((g ** 2).sum(axis=(1, 2, 3), keepdims=True))


def outer_attack(members, clean, labels, targets, estimate, state, decay=1.0):
    x, momentum = clean.astype(np.float64), 0.0
    for _ in range(STEPS):
        g, state = estimate(x, state)
        momentum = decay * momentum + l1(g)
        x = project(x + ALPHA * np.sign(momentum), clean)
    return x


def fused(members, batch):
    return np.full((batch, len(members)), 1.0 / len(members))


# ----------------------------------------------------------------- the strategies

@pytest.mark.parametrize("targeted", [False, True])
def test_svre_equals_its_transcription(setting, targeted):
    members, images, labels, targets = setting
    targets = targets if targeted else None
    count, batch = len(members), len(images)
    generator = tf.random.Generator.from_seed(SEED)

    def estimate(x, state):
        ens = objective_gradient(members, fused(members, batch), x, labels, targets)
        at_x = [objective_gradient(members, one_hot(k, count, batch), x, labels, targets) for k in range(count)]
        drawn = generator.uniform([4 * count], 0, count, dtype=tf.int32).numpy()
        moved, inner = x, 0.0
        for k in drawn:
            reduced = objective_gradient(members, one_hot(k, count, batch), moved, labels, targets) - (at_x[k] - ens)
            inner = inner + l1(reduced)
            moved = project(moved + ALPHA * np.sign(inner), images)
        return inner, state

    expected = outer_attack(members, images, labels, targets, estimate, None)
    np.testing.assert_allclose(run(members, "svre", images, labels, targets), expected, atol=1e-5)


def test_cwa_equals_its_transcription(setting):
    members, images, labels, _ = setting
    count, batch, beta = len(members), len(images), 0.05

    def estimate(x, inner):
        ens = objective_gradient(members, fused(members, batch), x, labels, None)
        moved = project(x - EPS / 15 * np.sign(ens), images)
        for k in range(count):
            inner = inner + l2(objective_gradient(members, one_hot(k, count, batch), moved, labels, None))
            moved = project(moved + beta * inner, images)
        return moved - x, inner

    expected = outer_attack(members, images, labels, None, estimate, 0.0)
    np.testing.assert_allclose(run(members, f"cwa:{beta}", images, labels), expected, atol=1e-5)


@pytest.mark.parametrize("targeted", [False, True])
def test_adaea_equals_its_transcription(setting, targeted):
    members, images, labels, targets = setting
    targets = targets if targeted else None
    count, batch, threshold = len(members), len(images), 0.0
    kept = []

    def estimate(x, state):
        grads = [objective_gradient(members, one_hot(k, count, batch), x, labels, targets) for k in range(count)]
        examples = [project(x + ALPHA * np.sign(g), images) for g in grads]
        y = labels if targets is None else targets
        loss = np.array([[ce(logits(mi, examples[j]), y) for j in range(count)] for mi in members])  # [i, j, B]
        scores = np.zeros((batch, count))
        for j in range(count):
            for i in range(count):
                if i != j:
                    ratio = loss[i, j] / loss[i, i] if targets is None else loss[i, i] / loss[i, j]
                    scores[:, j] += 10.0 * ratio
        weights = softmax(scores)
        units = [g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-8) for g in grads]
        pairs = [(units[i] * units[j]).sum(-1, keepdims=True) for i in range(count) for j in range(i + 1, count)]
        keep = (np.mean(pairs, axis=0) >= threshold).astype(np.float64)
        kept.append(keep.mean())
        return objective_gradient(members, weights, x, labels, targets) * keep, state

    expected = outer_attack(members, images, labels, targets, estimate, None, decay=0.9)
    actual = run(members, f"adaea:threshold={threshold}", images, labels, targets, decay=0.9)
    assert 0 < min(kept) and max(kept) < 1  # the filter drops some pixels and keeps others
    np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("targeted", [False, True])
def test_smer_equals_its_transcription(setting, targeted):
    members, images, labels, targets = setting
    targets = targets if targeted else None
    count, batch, rate, decay = len(members), len(images), 2e-2, 2e-3
    generator = tf.random.Generator.from_seed(SEED)
    y = labels if targets is None else targets
    sign = -1.0 if targets is None else 1.0

    def estimate(x, weights):
        order = np.argsort(generator.uniform([4, count]).numpy(), axis=1).reshape(-1)
        moved, inner = x, 0.0
        for k in order:
            g = objective_gradient(members, one_hot(k, count, batch) * weights[:, k:k + 1], moved, labels, targets)
            zs = [logits(m, moved) for m in members]
            mean = sum(weights[:, i:i + 1] * zs[i] for i in range(count)) / count
            loss = ce(mean, y)
            d = softmax(mean)
            d[np.arange(batch), y] -= 1.0
            # d (sign log CE) / d w_i = sign / CE * <dCE/dz, z_i> / K
            dw = np.stack([sign / loss * (d * zs[i]).sum(1) / count for i in range(count)], axis=1)
            weights = weights - rate * (dw + decay * weights)
            inner = inner + l1(g)
            moved = project(moved + ALPHA * np.sign(inner), images)
        return inner, weights

    expected = outer_attack(members, images, labels, targets, estimate, np.ones((batch, count)))
    np.testing.assert_allclose(run(members, "smer", images, labels, targets), expected, atol=1e-5)


# ----------------------------------------------------------------- composition, presets and errors

@pytest.mark.parametrize("name", ["svre", "cwa", "adaea", "smer"])
def test_presets_stay_in_the_ball_with_transforms(setting, name):
    members, images, labels, _ = setting
    config = preset(name)
    assert config.estimators[0].name == name
    config = AttackConfig(**{**config.__dict__, "steps": 2, "transforms": (DI(0.5, resize_ratio=1.5),)})
    adv = Attack(config)(Ensemble(members), images, labels).numpy()
    assert np.abs(adv - images).max() <= config.eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert np.abs(adv - images).max() > 0


def test_a_single_model_is_refused_in_one_line(setting):
    members, images, labels, _ = setting
    with pytest.raises(ValueError, match=r"'svre' is an ensemble strategy: attack an ensemble of two or more"):
        Attack(preset("svre"))(members[0], images, labels)
    with pytest.raises(ValueError, match="ensemble strategy"):
        check_surrogate(Ensemble(members[:1]), preset("cwa"))


def test_strategies_are_the_one_outermost_estimator():
    with pytest.raises(ComponentError, match="must be the one outermost estimator"):
        AttackConfig(estimators=components.parse("estimator", "vt,svre"))
    with pytest.raises(ComponentError, match="must be the one outermost estimator"):
        AttackConfig(estimators=components.parse("estimator", "svre,cwa"))
    AttackConfig(estimators=components.parse("estimator", "svre,pgn"))  # a chain below the strategy is fine


def test_feature_objectives_are_refused(setting):
    members, _, _, _ = setting
    config = AttackConfig(objective=FIA(), estimators=components.parse("estimator", "adaea"))
    with pytest.raises(ValueError, match="'adaea' weighs the members' logits; objective 'fia' is feature-level"):
        check_surrogate(Ensemble(members), config)


def test_the_script_refuses_a_strategy_on_one_model_before_any_work(tmp_path):
    from test_attack_script import error_line, make_input, run_attack

    images, _ = make_input(tmp_path, 1)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", "--models=efficientnet_lite0",
                        "--attack=svre", "--num_iter=1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--attack=svre: estimator 'svre' is an ensemble strategy" in error_line(result)
    assert not out.exists()
