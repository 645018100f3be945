"""Every preset and random combinations: the contract (shape, range, ball, dtype, determinism, one trace),
the config API, ensembles and error paths."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st

import tfattack.attacks as attacks
from tfattack.attacks import AUGMENTATIONS, FIELD_DOCS, AttackConfig, build, quantize
from tfattack.attacks.estimators import L2T, OPS, VT
from tfattack.attacks.filters import TI
from tfattack.attacks.objectives import CE
from tfattack.attacks.transforms import DI, SI, Admix, NOT_XLA_COMPILABLE
from tfattack.attacks.updates import MI, NI
from tfattack.attacks.loop import make_objective
from tfattack.models.ensemble import Ensemble

EPS = 8 / 255


class SmallNet(tf.Module):
    """Random conv net: 8x8 RGB -> 1000 logits."""

    def __init__(self, seed=0, name="small_net"):
        super().__init__(name=name)
        rng = np.random.default_rng(seed)
        self.conv = tf.constant(rng.normal(0, 0.5, [3, 3, 3, 8]), tf.float32)
        self.dense = tf.constant(rng.normal(0, 0.5, [8, 1000]), tf.float32)

    def __call__(self, images):
        hidden = tf.nn.relu(tf.nn.conv2d(images, self.conv, 1, "SAME"))
        return tf.reduce_mean(hidden, axis=[1, 2]) @ self.dense


class LossFusedPair:
    """Stand-in for tfattack.models.Ensemble(fuse='loss'): the attributes the attack reads."""

    fuse = "loss"
    name = "pair"

    def __init__(self, members, weights):
        self.members, self.weights = members, weights

    def member_logits(self, images):
        return [member(images) for member in self.members]

    def __call__(self, images):
        return tf.add_n([w * l for w, l in zip(self.weights, self.member_logits(images))])


class LogitFusedOne:
    fuse = "logits"

    def __init__(self, member):
        self.members, self.weights = [member], [1.0]

    def __call__(self, images):
        return self.members[0](images)


MODEL = SmallNet()
# Ensemble strategies (svre, cwa, adaea, smer) attack ensembles only.
PAIR = Ensemble([MODEL, SmallNet(seed=1, name="other_net")])
RNG = np.random.default_rng(0)
CLEAN = (RNG.integers(0, 256, size=(3, 8, 8, 3)) / 255).astype(np.float32)
LABELS = np.array([1, 500, 999])
TARGETS = np.array([7, 8, 9])


def fast(name):
    """Preset with the iteration counts cut so that every preset runs in well under a second."""
    config = attacks.PRESETS[name]
    vt = config.find(VT)
    cheaper = {"vt_samples": min(vt.samples, 2)} if vt else {}
    if config.find(OPS):  # 901 copies per gradient: the 30 x 30 pool shrunk to 2 x 2 (tests/test_ops.py has the rest)
        cheaper = {"estimators": "ops:2,operators=2"}
    if config.find(L2T):  # 3 x 29 copies per gradient: 1 x 4 here (tests/test_l2t.py has the rest)
        cheaper = {"estimators": "l2t:samples=1,copies=4"}
    return dict(steps=min(config.steps, 3), eps=EPS, **cheaper)


def check_contract(attack, adv, clean=CLEAN, eps=EPS):
    adv = np.asarray(adv)
    assert adv.shape == clean.shape and adv.dtype == np.float32
    assert adv.min() >= 0 and adv.max() <= 1
    assert np.abs(adv.astype(np.float64) - clean).max() <= eps + 1e-6  # float32 rounding of clean +- eps
    pixels = np.round(quantize(adv, clean, eps).astype(np.float64) * 255)
    assert np.abs(pixels - np.round(clean * 255.0)).max() <= round(eps * 255)


# Presets that change the surrogate's backward pass or read its features need a native network:
# tests/test_model_related.py, tests/test_feature_level.py.
ON_ANY_MODEL = [name for name in attacks.presets() if not attacks.PRESETS[name].backward
                and not attacks.PRESETS[name].forward
                and not getattr(attacks.PRESETS[name].objective, "feature_level", False)]


@pytest.mark.parametrize("name", ON_ANY_MODEL)
def test_preset_contract_determinism_and_one_trace(name):
    attack = build(name, **fast(name))
    model = PAIR if any(getattr(e, "ensemble_strategy", False) for e in attack.config.estimators) else MODEL
    first = attack(model, CLEAN, LABELS)
    second = attack(model, CLEAN, LABELS)
    check_contract(attack, first)
    np.testing.assert_array_equal(first, second)  # same seed -> bit-identical
    assert np.abs(first.numpy() - CLEAN).max() > EPS / 4  # it moved
    targeted = attack(model, CLEAN, LABELS, target=TARGETS)
    check_contract(attack, targeted)
    attack(model, CLEAN, LABELS, target=TARGETS)
    # One trace per mode (untargeted, targeted), none on repeated calls.
    assert attack.trace_count == 2
    assert attack.compiled_for(model).experimental_get_tracing_count() == 2
    assert attack.config.name == name


def test_presets_are_data_with_docs():
    for name in attacks.presets():
        config = attacks.PRESETS[name]
        assert isinstance(config, AttackConfig)
        assert attacks.PRESET_DOCS[name]
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.eps = 0.5
    assert {"fgsm", "i_fgsm", "mi_fgsm", "ni_fgsm", "di_fgsm", "di_mi_fgsm", "ti_fgsm", "ti_mi_fgsm", "ti_di_mi_fgsm",
            "si_ni_fgsm", "si_ni_ti_dim", "vmi_fgsm", "vni_fgsm", "admix", "admix_ti_dim"} <= set(attacks.presets())


def test_paper_defaults():
    presets = attacks.PRESETS
    assert presets["fgsm"].alpha == presets["fgsm"].eps
    assert presets["mi_fgsm"].update == MI(1.0) and presets["mi_fgsm"].alpha == pytest.approx(16 / 255 / 10)
    assert presets["ti_di_mi_fgsm"].filters == (TI(15, 3.0),) and presets["ti_di_mi_fgsm"].transforms == (DI(0.5),)
    assert presets["si_ni_ti_dim"].transforms == (SI(5), DI(0.5)) and presets["si_ni_ti_dim"].update == NI(1.0)
    assert presets["vmi_fgsm"].estimators == (VT(20, 1.5),)
    assert presets["admix"].transforms == (Admix(0.2, 3), SI(5))
    iterative = presets["nips17_iter_target_class"]
    assert (iterative.steps, iterative.alpha, iterative.objective) == (20, 1 / 255, CE(smoothing=0.1, aux_weight=0.4))


# ---------------------------------------------------------------- random combinations of pieces

combinations = st.fixed_dictionaries({
    "steps": st.integers(1, 3),
    "eps": st.sampled_from([2 / 255, 8 / 255, 16 / 255]),
    "momentum": st.sampled_from([0.0, 0.5, 1.0]),
    "nesterov": st.booleans(),
    "loss": st.sampled_from(["ce", "cw", "logit", "po_trip"]),
    "ti_kernel": st.sampled_from([1, 3, 5]),
    "vt_samples": st.integers(0, 2),
    "diversity_prob": st.sampled_from([0.0, 0.5, 1.0]),
    "si_copies": st.integers(1, 3),
    "admix_strength": st.sampled_from([0.0, 0.2]),
    "admix_copies": st.integers(1, 2),
    "augmentations": st.lists(st.sampled_from(AUGMENTATIONS), max_size=3, unique=True).map(tuple),
    "augment_mode": st.sampled_from(["all", "one"]),
    "num_copies": st.integers(1, 2),
    "start": st.sampled_from(["zero", "uniform", "gaussian"]),
    "restarts": st.integers(1, 2),
    "delta_blur_kernel": st.sampled_from([1, 3]),
    "seed": st.integers(0, 2 ** 16),
})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(combinations, st.booleans())
def test_random_combinations_keep_the_contract(pieces, targeted):
    attack = build(**pieces)
    target = TARGETS if targeted else None
    first = attack(MODEL, CLEAN, LABELS, target=target)
    second = attack(MODEL, CLEAN, LABELS, target=target)
    check_contract(attack, first, eps=pieces["eps"])
    np.testing.assert_array_equal(first, second)
    assert attack.trace_count == 1


def test_seed_changes_random_attacks_only():
    attack = build("di_mi_fgsm", steps=3, eps=EPS)
    a, b = attack(MODEL, CLEAN, LABELS, seed=1), attack(MODEL, CLEAN, LABELS, seed=2)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, attack(MODEL, CLEAN, LABELS, seed=1))
    assert attack.trace_count == 1  # the seed is state of one generator, not a new trace
    np.testing.assert_array_equal(build("di_mi_fgsm", steps=3, eps=EPS, seed=1)(MODEL, CLEAN, LABELS), a)
    plain = build("mi_fgsm", steps=3, eps=EPS)
    np.testing.assert_array_equal(plain(MODEL, CLEAN, LABELS, seed=1), plain(MODEL, CLEAN, LABELS, seed=2))


def test_new_batch_shape_traces_once_more_and_models_are_cached_separately():
    attack = build("mi_fgsm", steps=2)
    attack(MODEL, CLEAN, LABELS)
    attack(MODEL, CLEAN[:2], LABELS[:2])
    attack(MODEL, CLEAN[:2], LABELS[:2])
    assert attack.trace_count == 2
    other = SmallNet(seed=1)
    attack(other, CLEAN, LABELS)
    assert attack.compiled_for(other) is not attack.compiled_for(MODEL)
    plain_function = lambda images: MODEL(images)  # any callable works
    attack(plain_function, CLEAN, LABELS)
    attack(plain_function, CLEAN, LABELS)
    assert attack.compiled_for(plain_function).experimental_get_tracing_count() == 1


def test_restarts_keep_the_best_per_image():
    attack = build("i_fgsm", steps=2, eps=EPS, start="uniform", restarts=4, loss="cw")
    single = build("i_fgsm", steps=2, eps=EPS, start="uniform", restarts=1, loss="cw")
    objective = make_objective(MODEL, attack.config)
    best = objective(attack(MODEL, CLEAN, LABELS), LABELS, None).numpy()
    first = objective(single(MODEL, CLEAN, LABELS), LABELS, None).numpy()
    assert np.all(best >= first - 1e-6)  # the first restart is the single run (same draws), never worse


def test_label_source_predicted_uses_the_clean_prediction():
    predicted = tf.argmax(MODEL(CLEAN), axis=-1).numpy()
    attack = build("nips17_fgsm", eps=EPS)
    np.testing.assert_array_equal(attack(MODEL, CLEAN), build("fgsm", eps=EPS)(MODEL, CLEAN, predicted))
    with pytest.raises(ValueError, match="labels are required"):
        build("fgsm")(MODEL, CLEAN)


@pytest.mark.parametrize("preset, overrides, passes", [
    ("nips17_fgsm", {}, 1),                          # one step from the clean image: labels from its own pass
    ("nips17_fgsm", {"diversity_prob": 0.5}, 2),     # the step sees a transformed copy: a separate label pass
    ("nips17_mi_fgsm", {"steps": 3}, 2),             # later steps need the clean labels: a separate pass
])
def test_predicted_labels_cost_a_pass_only_when_needed(preset, overrides, passes):
    class CountingNet(SmallNet):
        traced_calls = 0

        def __call__(self, images):
            CountingNet.traced_calls += 1  # Python side effect: counts forward passes in the traced graph
            return super().__call__(images)

    model = CountingNet()
    attack = build(preset, eps=EPS, aux_weight=0.0, **overrides)
    adv = attack(model, CLEAN)
    assert CountingNet.traced_calls == passes and attack.trace_count == 1
    predicted = tf.argmax(MODEL(CLEAN), axis=-1).numpy()
    explicit = build(preset, eps=EPS, aux_weight=0.0, label_source="given", **overrides)(MODEL, CLEAN, predicted)
    np.testing.assert_array_equal(adv, explicit)


def test_compute_dtype_bfloat16_and_fallback():
    class CastingNet(SmallNet):
        def __call__(self, images):
            return super().__call__(tf.cast(images, tf.float32))

    adv = build("mi_fgsm", steps=2, eps=EPS, compute_dtype="bfloat16")(CastingNet(), CLEAN, LABELS)
    check_contract(None, adv)
    with pytest.warns(UserWarning, match="float32"):  # SmallNet's float32 weights reject bfloat16 inputs
        adv = build("mi_fgsm", steps=2, eps=EPS, compute_dtype="bfloat16")(MODEL, CLEAN, LABELS)
    np.testing.assert_array_equal(adv, build("mi_fgsm", steps=2, eps=EPS)(MODEL, CLEAN, LABELS))


@pytest.mark.parametrize("preset", ["admix_ti_dim", "vmi_fgsm"])
@pytest.mark.parametrize("jit", [False, True])
def test_copies_per_pass_attack_equals_one_pass(jit, preset):
    """Admix-TI-DIM (15 copies) two copies per pass, VMI with its neighbours one at a time, with and
    without XLA: the same adversarial images."""
    whole, chunked = (build(preset, steps=2, vt_samples=3, eps=EPS, jit_compile=jit, copies_per_pass=n) for n in (0, 2))
    expected, got = whole(MODEL, CLEAN, LABELS).numpy(), chunked(MODEL, CLEAN, LABELS).numpy()
    check_contract(chunked, got)
    assert np.mean(np.abs(got - expected) < 1e-6) > 0.99  # a rare sign flip of a ~0 gradient may differ


def test_jit_compile_matches_the_contract():
    attack = build("ti_di_mi_fgsm", steps=2, eps=EPS, jit_compile=True, si_copies=2)
    adv = attack(MODEL, CLEAN, LABELS)
    check_contract(attack, adv)
    np.testing.assert_array_equal(adv, attack(MODEL, CLEAN, LABELS))


# ---------------------------------------------------------------- ensembles

def test_loss_fused_ensemble_combines_member_losses_with_weights():
    members = [SmallNet(1), SmallNet(2)]
    pair = LossFusedPair(members, [0.3, 0.7])
    config = AttackConfig(objective=CE())
    images = tf.constant(CLEAN)
    fused = make_objective(pair, config)(images, tf.constant(LABELS), None).numpy()
    each = [make_objective(m, config)(images, tf.constant(LABELS), None).numpy() for m in members]
    np.testing.assert_allclose(fused, 0.3 * each[0] + 0.7 * each[1], rtol=1e-5)
    # and it is not CE of the fused logits
    assert not np.allclose(fused, make_objective(pair.__call__, config)(images, tf.constant(LABELS), None).numpy())
    adv = build("di_mi_fgsm", steps=2, eps=EPS)(pair, CLEAN, LABELS)
    check_contract(None, adv)


def test_ensemble_of_one_equals_its_member():
    attack = build("ti_di_mi_fgsm", steps=3, eps=EPS)
    member = attack(MODEL, CLEAN, LABELS)
    np.testing.assert_array_equal(attack(LogitFusedOne(MODEL), CLEAN, LABELS), member)
    np.testing.assert_allclose(attack(LossFusedPair([MODEL], [1.0]), CLEAN, LABELS), member, atol=1e-6)


# ---------------------------------------------------------------- config API

def test_build_overrides_and_config_round_trip():
    attack = build("mi_fgsm", eps=16 / 255, steps=10, diversity_prob=0.5, ti_kernel=7)
    config = attack.config
    assert (config.update, config.transforms, config.filters, config.name) == (MI(1.0), (DI(0.5),), (TI(7),), "mi_fgsm")
    assert build("mi_fgsm", eps=16 / 255, transforms="di:0.5", filters="ti:7").config == config
    text = json.dumps(config.to_dict())
    assert AttackConfig.from_dict(json.loads(text)) == config
    assert build(config=config).config == config
    assert build(config=config, steps=3).config.steps == 3
    assert build(augmentations="flip,noise").config.transforms[0].ops == ("flip", "noise")
    assert set(FIELD_DOCS) == {f.name for f in dataclasses.fields(AttackConfig)}
    assert all(doc.strip() for doc in FIELD_DOCS.values())


@pytest.mark.parametrize("kwargs, message", [
    (dict(preset="nope"), "unknown attack preset 'nope'; valid presets: fgsm, "),
    (dict(preset="mi_fgsm", epsilon=0.1), "unknown attack argument.*'epsilon'.*valid ones: name, eps"),
    (dict(eps=0.0), "eps must be in \\(0, 1\\]"),
    (dict(eps=16.0), "eps must be in \\(0, 1\\]"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(diversity_prob=1.5), "diversity_prob is a probability"),
    (dict(ti_kernel=4), "ti_kernel must be an odd integer"),
    (dict(loss="hinge"), "loss must be one of ce, cw, logit, po_trip"),
    (dict(augmentations=("blur",)), "unknown augmentation.*'blur'"),
    (dict(jit_compile=True, augmentations=("jpeg", "rotate")), "jit_compile cannot compile.*jpeg"),
    (dict(momentum=-1.0), "momentum must be a finite number >= 0"),
    (dict(compute_dtype="int8"), "compute_dtype must be one of"),
])
def test_build_errors_are_one_line_value_errors(kwargs, message):
    kwargs = dict(kwargs)
    preset = kwargs.pop("preset", None)
    with pytest.raises(ValueError, match=message) as error:
        build(preset, **kwargs)
    assert "\n" not in str(error.value)


def test_not_xla_compilable_list_is_accurate():
    assert set(NOT_XLA_COMPILABLE) <= set(AUGMENTATIONS)
    for name in AUGMENTATIONS:  # each augmentation outside the list traces under XLA
        if name not in NOT_XLA_COMPILABLE:
            check_contract(None, build("i_fgsm", steps=1, eps=EPS, jit_compile=True, augmentations=(name,))(
                MODEL, CLEAN, LABELS))


@pytest.mark.parametrize("call, message", [
    (lambda a: a(MODEL, CLEAN, np.array([1, 2, 1000])), "labels must be class indices in 0..999, got \\[1000\\]"),
    (lambda a: a(MODEL, CLEAN, np.array([-1, 2, 3])), "labels must be class indices"),
    (lambda a: a(MODEL, CLEAN, np.array([1, 2])), "labels must be integers of shape \\[3\\]"),
    (lambda a: a(MODEL, CLEAN, LABELS, target=np.array([1, 2, 5000])), "target must be class indices"),
    (lambda a: a(MODEL, (CLEAN * 255).astype(np.uint8), LABELS), "divide uint8 pixels by 255"),
    (lambda a: a(MODEL, CLEAN * 2, LABELS), "must lie in \\[0, 1\\]"),
    (lambda a: a(MODEL, CLEAN[0], LABELS), "\\[N, H, W, 3\\]"),
])
def test_call_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(build("fgsm"))


def test_labels_checked_against_the_models_class_count():
    class TenClasses(SmallNet):
        num_classes = 10

    with pytest.raises(ValueError, match="0..9"):
        build("fgsm")(TenClasses(), CLEAN, LABELS)


def test_black_box_model_is_refused():
    class Interpreter:
        name = "mobilenet_v2_quant_int8"
        differentiable = False

        def __call__(self, images):
            raise AssertionError("must not be called")

    with pytest.raises(ValueError, match="model 'mobilenet_v2_quant_int8' is a black-box \\(not differentiable\\) "
                                         "model: attack a differentiable surrogate and evaluate it as a victim"):
        build("mi_fgsm")(Interpreter(), CLEAN, LABELS)
    class EnsembleWithBlackBox(LossFusedPair):
        differentiable = False  # what Ensemble reports when any member is a black box

    with pytest.raises(ValueError, match="model 'pair' is a black-box"):
        build("mi_fgsm")(EnsembleWithBlackBox([MODEL, Interpreter()], [0.5, 0.5]), CLEAN, LABELS)
