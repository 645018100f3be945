"""Engine v2: component specs, the config's slots, the L2 norm, and random compositions of every component."""

import json

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st

import tfattack.attacks as attacks
from tfattack.attacks import AttackConfig, build, components, legacy, quantize
from tfattack.attacks.components import ComponentError
from tfattack.attacks.estimators import VT
from tfattack.attacks.filters import TI, Blur
from tfattack.attacks.objectives import CE, CW, PoTrip
from tfattack.attacks.transforms import DI, SI, Admix, Augment
from tfattack.attacks.updates import MI, NI, Sign

from tfattack.models.ensemble import Ensemble

from analytic import LinearModel

EPS = 8 / 255
MODEL = LinearModel((8, 8, 3), seed=3)
PAIR = Ensemble([MODEL, LinearModel((8, 8, 3), seed=4)])  # for the ensemble strategies
RNG = np.random.default_rng(5)
CLEAN = (np.round(RNG.uniform(0.05, 0.95, size=(3, 8, 8, 3)) * 255) / 255).astype(np.float32)  # 8-bit images
LABELS = np.array([1, 500, 999])
TARGETS = np.array([7, 8, 9])


# ---------------------------------------------------------------- spec strings

@pytest.mark.parametrize("role", components.ROLES)
def test_every_registered_component_round_trips_through_its_spec(role):
    for name, cls in components.registry(role).items():
        component = cls()
        assert component.role == role and component.name == name and cls.paper and cls.__doc__
        assert components.parse(role, component.spec()) == (component,)
        assert all(doc for doc in cls.field_docs().values()), name


def test_spec_syntax():
    assert components.parse("transform", "di:0.5, si:5") == (DI(0.5), SI(5))
    assert components.parse("transform", "admix:strength=0.3,copies=2,di") == (Admix(0.3, 2), DI())
    assert components.parse("transform", "augment:ops=flip+noise,mode=one") == (Augment(ops=("flip", "noise"),
                                                                                         mode="one"),)
    assert components.parse("transform", "none") == () and components.parse("filter", "") == ()
    assert components.parse_one("update", "ni:0.5") == NI(0.5)
    assert components.parse_one("objective", "po_trip:weight=0.02") == PoTrip(weight=0.02)
    assert components.format_specs((DI(0.5), SI(2))) == "di:prob=0.5,resize_ratio=1.1036789297658862,si:copies=2"


@pytest.mark.parametrize("role, text, message", [
    ("transform", "dii:0.5", "unknown transform 'dii'; did you mean 'di'\\?; valid ones: "),
    ("transform", "di:chance=0.5", "transform 'di': unknown key 'chance'; valid keys: prob, resize_ratio"),
    ("transform", "di:1.5", "transform 'di': prob must be <= 1.0, got 1.5"),
    ("transform", "si:two", "transform 'si': copies: cannot read 'two' as int"),
    ("transform", "si:0", "transform 'si': copies must be >= 1, got 0"),
    ("transform", "prob=0.5", "'prob=0.5' comes before any component name"),
    ("transform", "di:prob=0.5,prob=0.2", "transform 'di': prob given twice"),
    ("transform", "augment:ops=flip+blur", "augment': ops: unknown value\\(s\\) 'blur'"),
    ("filter", "ti:4", "filter 'ti': kernel must be odd, got 4"),
    ("update", "sign:1.0", "update 'sign': '1.0' needs a key"),
    ("update", "mi,ni", "expected exactly one update, got 2"),
])
def test_spec_errors_are_one_line_and_name_what_is_wrong(role, text, message):
    parse = components.parse_one if role == "update" else components.parse
    with pytest.raises(ComponentError, match=message) as error:
        parse(role, text)
    assert "\n" not in str(error.value)


def test_config_checks_slots_and_chain_order():
    with pytest.raises(ComponentError, match="transforms must be a transform component"):
        AttackConfig(transforms=(TI(3),))
    with pytest.raises(ComponentError, match="vt keep state across steps and must come first"):
        AttackConfig(estimators=(VT(2), VT(3)))
    with pytest.raises(ComponentError, match="jit_compile cannot compile jpeg"):
        build("mi_fgsm", transforms="augment:ops=flip+jpeg", execution={"jit_compile": True})
    with pytest.raises(ComponentError, match="norm must be one of linf, l2"):
        build(norm="l1")
    with pytest.raises(ComponentError, match="eps must be a finite number > 0 \\(an L2 radius\\)"):
        build(norm="l2", eps=0.0)
    assert build(norm="l2", eps=3.0).config.eps == 3.0  # an L2 radius may exceed 1
    with pytest.raises(ComponentError, match="the update 'test_plain_step' has no momentum/nesterov fields"):
        build("mi_fgsm", update=_PlainStep(), momentum=0.5)


class _PlainStep(components.Update):
    """An update outside the classic family (not registered)."""

    name = "test_plain_step"

    def step(self, ctx, x, gradient, state):
        return x + ctx.ascent(gradient), state


@pytest.mark.parametrize("name", attacks.presets())
def test_preset_configs_round_trip_through_json(name):
    config = attacks.PRESETS[name]
    again = AttackConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_flat_records_of_01_read_as_components():
    flat = dict(name="x", eps=8 / 255, steps=5, momentum=1.0, nesterov=True, ti_kernel=7, si_copies=5,
                diversity_prob=0.5, vt_samples=20, loss="cw", delta_blur_kernel=3, num_copies=2,
                resolved_step_size=8 / 255 / 5)
    config = AttackConfig.from_dict(flat)
    assert (config.update, config.filters, config.transforms, config.estimators, config.objective, config.post,
            config.views) == (NI(1.0), (TI(7),), (SI(5), DI(0.5)), (VT(20),), CW(), (Blur(3),), 2)
    assert legacy.to_flat(config)["ti_kernel"] == 7 and legacy.to_flat(config)["num_copies"] == 2


def test_legacy_arguments_edit_in_place_add_at_their_01_position_and_remove():
    config = build("admix_ti_dim", diversity_prob=0.7, si_copies=1, ti_kernel=1).config
    assert config.transforms == (Admix(0.2, 3), DI(0.7)) and config.filters == ()
    config = build("di_mi_fgsm", admix_strength=0.2, augmentations="flip").config
    assert [t.name for t in config.transforms] == ["admix", "di", "augment"]
    assert build("mi_fgsm", momentum=0.0).config.update == Sign()
    assert build("i_fgsm", momentum=0.5, nesterov=True).config.update == NI(0.5)
    assert build("nips17_iter_target_class", loss="cw").config.objective == CW(aux_weight=0.4)


def test_views_repeat_only_the_view_transforms():
    config = build(transforms="admix:0.2,si:2,di:0.5,augment:flip", views=3).config
    makers, viewers = config.split_transforms()
    assert [t.name for t in makers] == ["admix", "si"] and [t.name for t in viewers] == ["di", "augment"]
    assert config.copies == 3 * 2 * 3
    # identity components do not count and draw nothing
    assert build(transforms="di:0,si:1").config.copies == 1


# ---------------------------------------------------------------- identities

@pytest.mark.parametrize("overrides", [
    dict(transforms="di:0"), dict(transforms="si:1"), dict(transforms="augment"), dict(filters="ti:1"),
    dict(post="blur:1"), dict(transforms="augment:ops=noise,noise_std=0.0"),
])
def test_identity_settings_give_the_plain_attack(overrides):
    plain = build("mi_fgsm", steps=3, eps=EPS)(MODEL, CLEAN, LABELS).numpy()
    with_identity = build("mi_fgsm", steps=3, eps=EPS, **overrides)(MODEL, CLEAN, LABELS).numpy()
    np.testing.assert_allclose(with_identity, plain, atol=1e-6)


# ---------------------------------------------------------------- the L2 norm

def reference_l2_attack(model, clean, labels, eps, steps, momentum):
    """NumPy: g = mu*g + grad/mean|grad|; x = x + alpha*g/||g||_2; delta scaled to ||delta||_2 <= eps; box."""
    alpha = eps / steps
    adv, g = clean.astype(np.float64), np.zeros(clean.shape)
    for _ in range(steps):
        grad = model.ce_gradient(adv, labels)
        if momentum:
            g = momentum * g + grad / np.mean(np.abs(grad), axis=(1, 2, 3), keepdims=True)
        else:
            g = grad
        adv = adv + alpha * g / np.sqrt(np.sum(g ** 2, axis=(1, 2, 3), keepdims=True))
        delta = adv - clean
        length = np.sqrt(np.sum(delta ** 2, axis=(1, 2, 3), keepdims=True))
        adv = np.clip(clean + delta * np.minimum(1.0, eps / length), 0, 1)
    return adv


@pytest.mark.parametrize("preset, momentum", [("i_fgsm", 0.0), ("mi_fgsm", 1.0)])
def test_l2_attack_equals_numpy_transcription(preset, momentum):
    eps = 0.5
    adv = build(preset, norm="l2", eps=eps, steps=4)(MODEL, CLEAN, LABELS).numpy()
    expected = reference_l2_attack(MODEL, CLEAN, LABELS, eps, 4, momentum)
    np.testing.assert_allclose(adv, expected, atol=2e-5)
    lengths = np.sqrt(np.sum((adv.astype(np.float64) - CLEAN) ** 2, axis=(1, 2, 3)))
    assert np.all(lengths <= eps + 1e-5) and np.all(lengths > eps / 2)


def test_l2_quantize_stays_in_the_ball():
    rng = np.random.default_rng(0)
    for _ in range(50):
        clean = np.round(rng.uniform(0, 1, (2, 6, 6, 3)) * 255) / 255
        eps = rng.uniform(0.01, 0.5)
        direction = rng.normal(size=clean.shape)
        direction /= np.sqrt(np.sum(direction ** 2, axis=(1, 2, 3), keepdims=True))
        adv = np.clip(clean + eps * direction, 0, 1)
        legal = quantize(adv, clean, eps, "l2").astype(np.float64)
        assert np.all(np.sqrt(np.sum((legal - clean) ** 2, axis=(1, 2, 3))) <= eps + 1e-9)
        assert np.allclose(legal * 255, np.round(legal * 255), atol=1e-4) and legal.min() >= 0 and legal.max() <= 1


# ---------------------------------------------------------------- random compositions of every component

# Cheap settings of every registered component (what the property test composes). A component registered
# without an entry here is caught by test_every_component_has_a_cheap_setting.
CHEAP = {
    "transform": {"di": "di:0.5", "si": "si:2", "admix": "admix:0.2,copies=2", "augment": "augment:ops=flip+noise",
                  "bsr": "bsr:copies=2", "sia": "sia:copies=2", "ssa": "ssa:copies=2", "maskblock": "maskblock:2",
                  "decowa": "decowa:copies=2", "local_crop": "local_crop"},
    "estimator": {"vt": "vt:2", "pgn": "pgn:2", "gra": "gra:2", "emi": "emi:3", "mef": "mef:2", "mig": "mig:2",
                  "rap": "rap:0,inner_steps=2", "l2t": "l2t:samples=1,copies=2", "ops": "ops:1,operators=2",
                  "svre": "svre:1", "cwa": "cwa:0.1", "adaea": "adaea", "smer": "smer:1"},
    "objective": {"ce": "ce", "cw": "cw", "logit": "logit", "po_trip": "po_trip", "prob": "prob",
                  "fia": "fia:samples=2", "naa": "naa:samples=2", "logit_margin": "logit_margin",
                  "ila": "ila:base_steps=2", "rpa": "rpa:samples=2", "bfa": "bfa:samples=2", "su": "su"},
    "filter": {"ti": "ti:3"},
    "update": {"sign": "sign", "mi": "mi:1.0", "ni": "ni:1.0", "gra": "gra", "gimi": "gimi:2"},
    "post": {"blur": "blur:3"},
    # Backward policies need a native network (tests/test_model_related.py); the linear test model has none.
    "backward": {"sgm": "sgm:0.5", "bpa": "bpa", "linbp": "linbp"},
    # Forward edits need layer outputs routed through tfattack.edits (tests/test_cfm.py).
    "forward": {"cfm": "cfm", "ghost": "ghost", "ilpd": "ilpd:gamma=0.5"},
}


def test_every_component_has_a_cheap_setting():
    for role in components.ROLES:
        registered = {n for n in components.available(role) if not n.startswith("test_")}
        assert registered <= set(CHEAP[role]), f"add a cheap setting for {sorted(registered - set(CHEAP[role]))}"


def _available_cheap(role):
    known = set(components.available(role))
    return sorted(spec for name, spec in CHEAP[role].items() if name in known)


def _check_contract(adv, eps, norm):
    adv = np.asarray(adv)
    assert adv.shape == CLEAN.shape and adv.dtype == np.float32 and adv.min() >= 0 and adv.max() <= 1
    delta = adv.astype(np.float64) - CLEAN
    pixels = np.round(quantize(adv, CLEAN, eps, norm).astype(np.float64) * 255) - np.round(CLEAN * 255)
    if norm == "linf":
        assert np.abs(delta).max() <= eps + 1e-6 and np.abs(pixels).max() <= round(eps * 255)
    else:
        assert np.sqrt(np.sum(delta ** 2, axis=(1, 2, 3))).max() <= eps + 1e-5
        assert np.sqrt(np.sum(pixels ** 2, axis=(1, 2, 3))).max() / 255 <= eps + 1e-9


compositions = st.fixed_dictionaries({
    # local_crop pairs with the su objective only (tests/test_su.py).
    "transforms": st.lists(st.sampled_from([s for s in _available_cheap("transform") if s != "local_crop"]),
                           max_size=2, unique=True).map(",".join),
    "estimators": st.lists(st.sampled_from(_available_cheap("estimator")), max_size=1).map(",".join),
    # Feature-level objectives need named taps, which the linear test model has not (tests/test_feature_level.py).
    "objective": st.sampled_from([s for s in _available_cheap("objective") if s.split(":")[0] not in ("fia", "naa", "ila", "rpa", "bfa", "su")]),
    "filters": st.sampled_from(["none"] + _available_cheap("filter")),
    "update": st.sampled_from(_available_cheap("update")),
    "post": st.sampled_from(["none"] + _available_cheap("post")),
    "norm": st.sampled_from(["linf", "l2"]),
    "steps": st.integers(1, 2),
    "start": st.sampled_from(["zero", "uniform"]),
    "seed": st.integers(0, 2 ** 16),
})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compositions, st.booleans())
def test_random_compositions_keep_the_contract(pieces, targeted):
    eps = EPS if pieces["norm"] == "linf" else 0.4
    attack = build(eps=eps, **pieces)
    target = TARGETS if targeted else None
    model = PAIR if any(getattr(e, "ensemble_strategy", False) for e in attack.config.estimators) else MODEL
    first = attack(model, CLEAN, LABELS, target=target)
    second = attack(model, CLEAN, LABELS, target=target)
    _check_contract(first, eps, pieces["norm"])
    np.testing.assert_array_equal(first, second)
    assert attack.trace_count == 1
    again = AttackConfig.from_dict(json.loads(json.dumps(attack.config.to_dict())))
    assert again == attack.config


def test_stacked_points_see_their_own_batch():
    """The gradient oracle takes stacks of G copies of the batch (estimator samples): each copy's gradient equals
    the gradient of that copy alone, and Admix mixes within a copy's own batch."""
    from tfattack.attacks.loop import Context, make_objective

    config = build("mi_fgsm", transforms="admix:0.2,copies=2").config
    objective = make_objective(MODEL, config)
    clean = tf.constant(CLEAN)
    stack = tf.concat([clean, clean * 0.5], 0)

    def gradients(points, seed):
        ctx = Context(config, objective, clean, tf.constant(LABELS, tf.int32), None,
                      tf.random.Generator.from_seed(seed))
        return ctx.gradient(points).numpy()

    stacked = gradients(stack, 1)
    assert stacked.shape == (6, 8, 8, 3)
    # Admix draws one partner shift per copy for the whole stack: with seed fixed, each half of the stack equals
    # the oracle on that half alone when drawn with the same shifts (same generator state).
    np.testing.assert_allclose(stacked[:3], gradients(clean, 1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stacked[3:], gradients(clean * 0.5, 1), rtol=1e-5, atol=1e-7)


def test_di_draws_its_own_view_for_each_stacked_point():
    """With several stacked copies of the batch (estimator samples), DI resizes and pads each copy on its own draw:
    every copy equals DI of the image at some (size, offset), and the copies are not all the same view."""
    from tfattack.attacks.transforms.classic import _nearest_source

    images = tf.constant(np.random.default_rng(2).uniform(0, 1, (1, 8, 8, 3)), tf.float32)
    stack = tf.tile(images, [16, 1, 1, 1])
    out = DI(1.0, resize_ratio=1.5).apply(stack, tf.random.Generator.from_seed(3), batch=1).numpy()
    views = {}
    for size in range(8, 12):
        for top in range(0, 12 - size):
            for left in range(0, 12 - size):
                rows, rows_in = _nearest_source(12, 8, top, size)
                cols, cols_in = _nearest_source(12, 8, left, size)
                canvas = tf.gather(tf.gather(images, rows, axis=1), cols, axis=2)
                inside = tf.cast(rows_in[:, None] & cols_in[None, :], tf.float32)[None, :, :, None]
                views[(size, top, left)] = tf.image.resize(canvas * inside, [8, 8]).numpy()[0]
    matched = [next((key for key, view in views.items() if np.allclose(view, copy, atol=1e-6)), None) for copy in out]
    assert None not in matched
    assert len(set(matched)) > 4
