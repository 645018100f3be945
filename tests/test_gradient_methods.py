"""PGN, GRA, EMI, GI-MI, MIG, MEF and RAP: each whole attack on the analytic linear model equals a NumPy
transcription of the paper's update rule, with the random draws replayed from a generator of the same seed."""

import numpy as np
import pytest
import tensorflow as tf

from tfattack.attacks import ComponentError, build, parse

from analytic import LinearModel

EPS, STEPS = 0.05, 4
ALPHA = EPS / STEPS
SEED = 0
# Each transcription runs under L-inf (the papers' setting: sign steps) and under L2, whose steps follow the
# direction itself, so that every part of a formula moves the trajectory continuously.
NORM_EPS = {"linf": EPS, "l2": 0.2}


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(1)
    clean = rng.uniform(0.2, 0.8, size=(2, 4, 4, 3)).astype(np.float32)
    labels = np.array([3, 7])
    return scaled(LinearModel((4, 4, 3))), clean, labels


def scaled(model, scale=2.0):
    """Larger weights: logits whose ranking changes across the neighbourhoods, so that the neighbours' gradients
    differ and each method's trajectory differs from MI-FGSM's (the comparisons can fail)."""
    model.w, model.b = model.w * scale, model.b * scale
    model._w, model._b = tf.constant(model.w, tf.float32), tf.constant(model.b, tf.float32)
    return model


@pytest.fixture(params=sorted(NORM_EPS))
def norm(request):
    return request.param


# ---------------------------------------------------------------- NumPy side

class Replay:
    """The attack's draws in order: a generator reset to the attack's seed, drawing the same shapes."""

    def __init__(self, seed=SEED):
        self.generator = tf.random.Generator.from_seed(seed)

    def uniform(self, shape, radius):
        return self.generator.uniform(shape, -radius, radius, dtype=tf.float32).numpy().astype(np.float64)

    def uniform_scalars(self, count, radius):
        return self.generator.uniform([count], -radius, radius).numpy().astype(np.float64)


def _sum(values):
    return np.sum(values, axis=(1, 2, 3), keepdims=True)


def unit(g, norm="linf"):
    """g / mean|g| (the MI normalisation, and the L-inf look-ahead direction), g / ||g||_2 under L2."""
    return g / np.mean(np.abs(g), axis=(1, 2, 3), keepdims=True) if norm == "linf" else g / np.sqrt(_sum(g * g))


def ascent(g, alpha, norm):
    return alpha * (np.sign(g) if norm == "linf" else g / np.sqrt(_sum(g * g)))


def project(x, center, eps, norm):
    if norm == "linf":
        return np.clip(x, np.maximum(center - eps, 0.0), np.minimum(center + eps, 1.0))
    delta = x - center
    length = np.sqrt(_sum(delta * delta))
    return np.clip(center + delta * np.minimum(1.0, eps / np.maximum(length, 1e-30)), 0.0, 1.0)


def tile(x, n):
    return np.tile(x, (n, 1, 1, 1))


def group_mean(g, n):
    return g.reshape((n, -1) + g.shape[1:]).mean(axis=0)


def ce_gradient(model, labels):
    """grad(points) for a stack of groups of the batch (the objective ascends the label's cross-entropy)."""
    return lambda points: model.ce_gradient(points, np.tile(labels, len(points) // len(labels)))


def prob_gradient(model, labels):
    """Gradient of -softmax(z)_y (the objective `prob`, untargeted) for a stack of groups of the batch."""
    def gradient(points):
        tiled = np.tile(labels, len(points) // len(labels))
        logits = points.reshape(len(points), -1) @ model.w + model.b
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        own = probs[np.arange(len(points)), tiled][:, None]
        d_logits = -own * (np.eye(logits.shape[1])[tiled] - probs)  # d(-p_y)/dz
        return (d_logits @ model.w.T).reshape(points.shape)
    return gradient


def momentum_attack(clean, estimate, norm="linf", steps=STEPS, decay=1.0, eta=None, momentum=None, nesterov=False):
    """MI-FGSM (Dong et al. 2018; NI: the gradient at x + alpha * mu * g, Lin et al. 2020) around
    `estimate(t, point) -> gradient`; `eta`: GRA's decay indicator; `momentum`: the initial g."""
    eps = NORM_EPS[norm]
    alpha = eps / steps
    x = clean.copy()
    g = np.zeros_like(clean) if momentum is None else momentum
    indicator = np.full_like(clean, 1.0 / eta) if eta else 1.0
    for t in range(steps):
        previous = g
        g = decay * g + unit(estimate(t, x + alpha * decay * g if nesterov else x))
        if eta:
            indicator = indicator * np.where(np.sign(g) == np.sign(previous), 1.0, eta)
        x = project(x + indicator * ascent(g, alpha, norm), clean, eps, norm)
    return x


def attack_output(clean, labels, model, norm="linf", **overrides):
    return build("mi_fgsm", eps=NORM_EPS[norm], steps=STEPS, norm=norm, **overrides)(model, clean, labels).numpy()


def check(adv, expected, plain, norm):
    np.testing.assert_allclose(adv, expected, atol=1e-5 if norm == "linf" else 2e-6)
    # The comparison can fail: the method's trajectory differs from MI-FGSM's.
    assert np.abs(expected - plain).max() > (1e-3 if norm == "linf" else 1e-4)


def plain_mi(linear, norm, **kwargs):
    model, clean, labels = linear
    grad = ce_gradient(model, labels)
    return momentum_attack(clean.astype(np.float64), lambda t, x: grad(x), norm, **kwargs)


@pytest.fixture(scope="module")
def mi_reference(linear):
    return plain_mi(linear, "linf")


# ---------------------------------------------------------------- transcriptions

def test_pgn_equals_numpy_transcription(linear, norm):
    model, clean, labels = linear
    n, zeta, delta = 3, 3.0, 0.3  # not 0.5: the two gradients must not be interchangeable
    adv = attack_output(clean, labels, model, norm, estimators=f"pgn:{n},zeta={zeta},delta={delta}")
    grad, draws, eps = ce_gradient(model, labels), Replay(), NORM_EPS[norm]

    def estimate(t, x):  # Ge et al. NeurIPS 2023, Algorithm 1
        near = tile(x, n) + draws.uniform((n * 2, 4, 4, 3), zeta * eps)
        g1 = grad(near)
        g2 = grad(near - eps / STEPS * unit(g1, norm))
        return group_mean((1 - delta) * g1 + delta * g2, n)

    check(adv, momentum_attack(clean.astype(np.float64), estimate, norm), plain_mi(linear, norm), norm)


def _relevance(current, average):
    s = _sum(current * average) / np.sqrt(_sum(current ** 2) * _sum(average ** 2))
    return s * current + (1 - s) * average


def test_gra_equals_numpy_transcription(linear, norm):
    model, clean, labels = linear
    n, beta, eta = 3, 10.0, 0.94  # a wide neighbourhood, whose average gradient differs from the gradient
    adv = attack_output(clean, labels, model, norm, estimators=f"gra:{n},beta={beta}", update=f"gra:eta={eta}")
    grad, draws, eps = ce_gradient(model, labels), Replay(), NORM_EPS[norm]

    def estimate(t, x):  # Zhu et al. ICCV 2023: relevance-weighted gradient
        return _relevance(grad(x), group_mean(grad(tile(x, n) + draws.uniform((n * 2, 4, 4, 3), beta * eps)), n))

    x0 = clean.astype(np.float64)
    expected = momentum_attack(x0, estimate, norm, eta=eta)
    check(adv, expected, plain_mi(linear, norm), norm)
    # Both halves act: without the decay indicator, or without the relevance-weighted gradient, the
    # trajectory differs.
    draws = Replay()
    assert np.abs(momentum_attack(x0, estimate, norm) - expected).max() > 1e-4
    assert np.abs(plain_mi(linear, norm, eta=eta) - expected).max() > 1e-4


@pytest.mark.parametrize("sampling", ["linear", "uniform"])
def test_emi_equals_numpy_transcription(linear, norm, sampling):
    model, clean, labels = linear
    n, radius = 5, 7.0
    adv = attack_output(clean, labels, model, norm, estimators=f"emi:{n},radius={radius},sampling={sampling}")
    grad, draws, alpha = ce_gradient(model, labels), Replay(), NORM_EPS[norm] / STEPS
    direction = [np.zeros_like(clean, np.float64)]

    def estimate(t, x):  # Wang et al. BMVC 2021: points along the previous average gradient
        factors = np.linspace(-radius, radius, n) if sampling == "linear" else draws.uniform_scalars(n, radius)
        average = group_mean(grad(np.concatenate([x + c * alpha * direction[0] for c in factors])), n)
        direction[0] = unit(average, norm)
        return average

    check(adv, momentum_attack(clean.astype(np.float64), estimate, norm), plain_mi(linear, norm), norm)


@pytest.mark.parametrize("nesterov", [False, True], ids=["gi_mi", "gi_ni"])
def test_gimi_equals_numpy_transcription(linear, norm, nesterov):
    model, clean, labels = linear
    pre, factor = 3, 10.0
    adv = attack_output(clean, labels, model, norm, update=f"gimi:{pre},factor={factor},nesterov={nesterov}")
    grad, eps = ce_gradient(model, labels), NORM_EPS[norm]
    x0 = clean.astype(np.float64)
    x, g = x0.copy(), np.zeros_like(x0)
    for _ in range(pre):  # Wang et al. 2022: pre-convergence with the step s * alpha, then restart from x0
        g = g + unit(grad(x + eps / STEPS * g if nesterov else x))
        x = project(x + factor * ascent(g, eps / STEPS, norm), x0, eps, norm)
    expected = momentum_attack(x0, lambda t, point: grad(point), norm, momentum=g, nesterov=nesterov)
    check(adv, expected, plain_mi(linear, norm, nesterov=nesterov), norm)


def test_mig_equals_numpy_transcription(linear, norm):
    model, clean, labels = linear
    s = 8
    adv = attack_output(clean, labels, model, norm, estimators=f"mig:{s}", objective="prob")
    grad = prob_gradient(model, labels)

    def estimate(t, x):  # Ma et al. ICCV 2023, black baseline; k/S from d J(k/S x) / dx
        return x * sum(k / s * grad(k / s * x) for k in range(1, s + 1)) / s

    x0 = clean.astype(np.float64)
    plain = momentum_attack(x0, lambda t, x: grad(x), norm)  # MI-FGSM on the same objective
    check(adv, momentum_attack(x0, estimate, norm), plain, norm)


def test_prob_objective_is_the_label_probability(linear):
    model, clean, labels = linear
    adv = attack_output(clean, labels, model, objective="prob")
    grad = prob_gradient(model, labels)
    np.testing.assert_allclose(adv, momentum_attack(clean.astype(np.float64), lambda t, x: grad(x)), atol=1e-5)
    targets = np.array([500, 9])
    adv = build("fgsm", eps=0.03, objective="prob")(model, clean, labels, target=targets).numpy()
    expected = np.clip(clean + 0.03 * np.sign(-prob_gradient(model, targets)(clean.astype(np.float64))), 0, 1)
    np.testing.assert_allclose(adv, expected, atol=1e-6)


def test_mef_equals_numpy_transcription(linear, norm):
    model, clean, labels = linear
    n, gamma, xi, inner_decay, decay = 3, 2.0, 0.15, 0.9, 0.5
    adv = attack_output(clean, labels, model, norm,
                        estimators=f"mef:{n},gamma={gamma},xi={xi},inner_decay={inner_decay}", update=f"mi:{decay}")
    grad, draws, eps = ce_gradient(model, labels), Replay(), NORM_EPS[norm]
    h = [np.zeros((n * 2, 4, 4, 3))]

    def estimate(t, x):  # Qiu et al. 2024 (authors' main.py): conditional sampling, inner accumulator
        g = grad(tile(x, n) + draws.uniform((n * 2, 4, 4, 3), gamma * eps) + xi * eps * h[0])
        h[0] = unit(g, norm) - inner_decay * h[0]
        return group_mean(g, n)

    x0 = clean.astype(np.float64)
    check(adv, momentum_attack(x0, estimate, norm, decay=decay), plain_mi(linear, norm, decay=decay), norm)


@pytest.mark.parametrize("late_start", [0, 2])
def test_rap_equals_numpy_transcription(linear, norm, late_start):
    model, clean, labels = linear
    radius, inner = 1.0, 3
    adv = attack_output(clean, labels, model, norm,
                        estimators=f"rap:{late_start},radius={radius},inner_steps={inner}")
    grad, draws = ce_gradient(model, labels), Replay()
    eps_n = radius * NORM_EPS[norm]

    def estimate(t, x):  # Qin et al. NeurIPS 2022 (authors' rap_attack.py): inner PGD down the loss
        if t < late_start:
            return grad(x)
        n = project(x + draws.uniform((2, 4, 4, 3), eps_n), x, eps_n, norm) - x
        for _ in range(inner):
            n = project(x + n - ascent(grad(x + n), eps_n / inner, norm), x, eps_n, norm) - x
        return grad(x + n)

    check(adv, momentum_attack(clean.astype(np.float64), estimate, norm), plain_mi(linear, norm), norm)


# ---------------------------------------------------------------- identities, budget, tracing, seeds

IDENTITIES = {
    "pgn": dict(estimators="pgn:3,zeta=0,delta=0"),
    "gra_estimator": dict(estimators="gra:3,beta=0"),
    "gra_update": dict(update="gra:eta=1"),
    "emi": dict(estimators="emi:3,radius=0"),
    "mef": dict(estimators="mef:3,gamma=0,xi=0"),
    "gimi": dict(update="gimi:0"),
    "rap_late": dict(estimators=f"rap:{STEPS}"),
    "rap_radius": dict(estimators="rap:0,radius=0"),
}


@pytest.mark.parametrize("case", sorted(IDENTITIES))
def test_identity_settings_are_mi_fgsm(linear, mi_reference, case):
    model, clean, labels = linear
    np.testing.assert_allclose(attack_output(clean, labels, model, **IDENTITIES[case]), mi_reference, atol=1e-6)


METHODS = {
    "pgn": dict(estimators="pgn:3"),
    "gra": dict(estimators="gra:3", update="gra"),
    "emi": dict(estimators="emi:3,sampling=gaussian"),
    "gimi": dict(update="gimi:2"),
    "mig": dict(estimators="mig:3", objective="prob"),
    "mef": dict(estimators="mef:3", update="mi:0.5"),
    "rap": dict(estimators="rap:1,inner_steps=2"),
}
RANDOM = {"pgn", "gra", "emi", "mef", "rap"}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_stays_in_ball_and_box_traces_once_and_seeds(method, norm):
    model = scaled(LinearModel((4, 4, 3)))
    rng = np.random.default_rng(2)
    clean = rng.uniform(0, 1, size=(2, 4, 4, 3)).astype(np.float32)
    clean[0, 0, 0] = [0.0, 1.0, 0.02]  # at and near the box's faces
    labels = np.array([3, 7])
    eps = 0.1 if norm == "linf" else 0.5
    attack = build("mi_fgsm", eps=eps, steps=3, norm=norm, **METHODS[method])
    first = attack(model, clean, labels, seed=5).numpy()
    again = attack(model, clean, labels, seed=5).numpy()
    assert attack.trace_count == 1
    np.testing.assert_array_equal(first, again)
    assert first.min() >= 0.0 and first.max() <= 1.0
    if norm == "linf":
        assert np.abs(first - clean).max() <= eps + 1e-6
    else:
        assert np.sqrt(np.sum((first - clean) ** 2, axis=(1, 2, 3))).max() <= eps + 1e-5
    assert np.abs(first - clean).max() > eps / 10
    if method in RANDOM:
        other = attack(model, clean, labels, seed=6).numpy()
        assert np.abs(other - first).max() > 1e-4  # the draws come from the seeded generator


def test_estimators_stack_any_number_of_groups(linear):
    """An estimator inside another gets stacks of several groups: an identity PGN around MIG is MIG."""
    model, clean, labels = linear
    alone = attack_output(clean, labels, model, estimators="mig:3", objective="prob")
    inside = attack_output(clean, labels, model, estimators="pgn:2,zeta=0,delta=0,mig:3", objective="prob")
    np.testing.assert_allclose(inside, alone, atol=1e-6)
    nested = attack_output(clean, labels, model, estimators="pgn:2,gra:2,rap:0,inner_steps=1")
    assert np.abs(nested - clean).max() > EPS / 2


@pytest.mark.parametrize("method", ["gra", "mef", "mig", "rap"])
def test_copies_per_pass_gives_the_same_attack(linear, method):
    """The stacks of neighbours (with SI copies of each) pushed through the model one copy per pass."""
    model, clean, labels = linear
    whole, bounded = (attack_output(clean, labels, model, transforms="si:2", execution={"copies_per_pass": n},
                                    **METHODS[method]) for n in (0, 1))
    np.testing.assert_allclose(bounded, whole, atol=1e-6)
    assert np.abs(whole - clean).max() > EPS / 2


def test_stateful_estimators_must_be_outermost():
    for inner in ("emi", "mef"):
        with pytest.raises(ComponentError, match="must come first"):
            build("mi_fgsm", estimators=f"pgn,{inner}")


def test_specs_round_trip_and_count_evaluations():
    for role, text, evaluations in [("estimator", "pgn", 40), ("estimator", "pgn:20,delta=0", 20),
                                    ("estimator", "gra", 21), ("estimator", "emi", 11), ("estimator", "mef", 20),
                                    ("estimator", "mig", 20), ("estimator", "rap", 1), ("update", "gra", None),
                                    ("update", "gimi", None)]:
        (component,) = parse(role, text)
        assert parse(role, component.spec()) == (component,)
        if evaluations is not None:
            assert component.evaluations() == evaluations
    assert build("mi_fgsm", estimators="pgn:4,gra:3").config.gradient_evaluations == 8 * 4
    with pytest.raises(ComponentError, match="sampling must be one of"):
        parse("estimator", "emi:sampling=cubic")
