"""Compute-matched presets (tfattack.bench.budget): the knob each family turns, the value closest to the budget,
and a matched attack that really passes that many images through the surrogate."""

import numpy as np
import pytest

from analytic import LinearModel
from tfattack.attacks import build
from tfattack.attacks.loop import Attack
from tfattack.bench import budget, passes


@pytest.mark.parametrize("preset,knob,paper_value,value", [
    ("pgn", "pgn.samples", 20, 10),          # 2 passes per sample per step: 10 x 2 x 10 = 200
    ("vmi_fgsm", "vt.samples", 20, 19),      # the step's gradient + 19 neighbours: 20 x 10
    ("ti_di_mi_fgsm", "views", 1, 20),       # 20 independent DI draws per step
    ("si_ni_fgsm", "si.copies", 5, 20),
    ("decowa", "decowa.copies", 20, 10),     # each copy is searched once before its gradient: 2 passes
])
def test_each_family_turns_its_own_knob_to_the_budget(preset, knob, paper_value, value):
    result = budget.matched(build(preset, steps=10).config, 200)
    assert (result.knob, result.paper_value, result.value, result.passes) == (knob, paper_value, value, 200)
    assert result.config.model_passes() == 200 and result.how == f"{knob} {paper_value} -> {value}"


def test_a_deterministic_method_and_an_unreachable_budget():
    plain = budget.matched(build("mi_fgsm", steps=10).config, 200)
    assert plain.knob is None and plain.passes == plain.paper_passes == 10 and plain.config == build("mi_fgsm").config
    assert plain.how.startswith("unchanged")
    # OPS spends 30 operators x (1 + neighbours) + 1 per step: one neighbour is the least it can do
    ops = budget.matched(build("ops", steps=10).config, 200)
    assert (ops.knob, ops.value, ops.passes) == ("ops.neighbours", 1, 310)
    with pytest.raises(ValueError, match="at least one pass"):
        budget.matched(build("pgn").config, 0)


@pytest.mark.parametrize("preset,target", [("pgn", 12), ("ti_di_mi_fgsm", 10)])
def test_a_matched_attack_passes_as_many_images_as_promised(preset, target):
    result = budget.matched(build(preset, steps=2).config, target)
    model = LinearModel((6, 6, 3), seed=0)
    images = np.random.default_rng(0).uniform(0.2, 0.8, (2, 6, 6, 3)).astype(np.float32)
    counted = passes.measure(Attack(result.config), model, images, np.array([1, 2]))
    assert counted.per_image == result.passes == target


def test_a_knob_another_component_pins_is_left_alone():
    su = budget.matched(build("su", steps=10).config, 200)  # SU pairs each image with one local copy: views=1
    assert su.knob is None and su.config == build("su", steps=10).config
    assert su.how == "unchanged (views is pinned by objective 'su')"
