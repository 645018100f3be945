"""The leaderboard's rows from per-image predictions: rates over clean-correct and over all images, Wilson
intervals, the paired test against the reference method of the same setting, the CSV contract, the Pareto front."""

import csv
import math
import types

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tfattack.bench import leaderboard
from tfattack.bench.leaderboard import SetInfo

N = 60


@pytest.fixture(scope="module")
def evaluation():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 10, N)
    targets = (labels + 1) % 10
    clean = {("lite2", d): np.where(rng.random(N) < 0.8, labels, (labels + 3) % 10) for d in ("none", "rs:0.25:100")}
    adv = {}
    for name, rate in (("tdm", 0.4), ("pgn", 0.7), ("pgn_matched", 0.6), ("tgt", 0.3)):
        for (victim, defense), pred in clean.items():
            fooled = rng.random(N) < rate
            wrong = (labels + 5) % 10 if name != "tgt" else targets
            adv[(name, victim, defense)] = np.where(fooled, wrong, labels)
    adv[("pgn", "lite2", "none")][:3] = -1  # three files not evaluated
    sets = [types.SimpleNamespace(name=n, targeted=(n == "tgt")) for n in ("tdm", "pgn", "pgn_matched", "tgt")]
    return types.SimpleNamespace(adv_sets=sets, victims=["lite2"], defenses=["none", "rs:0.25:100"], labels=labels,
                                 targets=targets, clean_predictions=clean, adv_predictions=adv)


SETS = {"tdm": SetInfo("ti_di_mi_fgsm", "single", 8, "paper", 10, 0.5),
        "pgn": SetInfo("pgn", "single", 8, "paper", 400, 9.0),
        "pgn_matched": SetInfo("pgn", "single", 8, "matched", 200, 4.5),
        "tgt": SetInfo("logit_ti_di_mi_fgsm", "single", 8, "paper", 300, 12.0)}


def test_rows_equal_a_direct_computation(evaluation):
    table = leaderboard.rows(evaluation, SETS)
    assert len(table) == 4 * 2 and [r["victim"] for r in table[:2]] == ["lite2", "lite2+rs:0.25:100"]
    for row in table:
        name = next(n for n, info in SETS.items() if (info.method, info.budget) == (row["method"], row["budget"]))
        defense = "none" if row["victim"] == "lite2" else "rs:0.25:100"
        clean = evaluation.clean_predictions[("lite2", defense)]
        adv = evaluation.adv_predictions[(name, "lite2", defense)]
        evaluated = adv >= 0
        correct = (clean == evaluation.labels) & evaluated
        success = (adv == evaluation.targets) if name == "tgt" else (adv != evaluation.labels)
        success &= evaluated
        assert row["n_images"] == correct.sum() and row["n_images_all"] == evaluated.sum()
        assert row["success_pct"] == pytest.approx(100 * (success & correct).sum() / correct.sum())
        assert row["success_pct_all"] == pytest.approx(100 * success.sum() / evaluated.sum())
        ci = scipy_stats.binomtest(int((success & correct).sum()), int(correct.sum())).proportion_ci(method="wilson")
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((100 * ci.low, 100 * ci.high))
        if name in ("tdm", "pgn_matched"):  # the reference itself; no reference set at the matched budget
            assert row["p_vs_reference"] == ""
            continue
        reference = evaluation.adv_predictions[("tdm", "lite2", defense)]
        reference_success = reference != evaluation.labels
        both = correct & (clean == evaluation.labels)
        only_a = int((success & ~reference_success & both).sum())
        only_b = int((reference_success & ~success & both).sum())
        assert row["reference"] == "tdm"
        assert row["p_vs_reference"] == pytest.approx(scipy_stats.binomtest(only_a, only_a + only_b).pvalue)
    assert math.isclose(table[0]["grad_evals_per_image"], 10) and table[2]["craft_s_per_image"] == 9.0


def test_the_csv_keeps_the_contract_columns_in_order(evaluation, tmp_path):
    path = tmp_path / "leaderboard.csv"
    leaderboard.write_csv(leaderboard.rows(evaluation, SETS), str(path))
    with open(path) as handle:
        read = list(csv.reader(handle))
    assert tuple(read[0][:11]) == ("method", "source", "eps_pixels", "budget", "grad_evals_per_image",
                                   "craft_s_per_image", "n_images", "victim", "success_pct", "ci_low", "ci_high")
    assert len(read) == 1 + 8 and read[1][0] == "ti_di_mi_fgsm" and read[1][7] == "lite2"


def test_bad_inputs_are_one_line_errors(evaluation):
    with pytest.raises(ValueError, match="no SetInfo for the evaluated set"):
        leaderboard.rows(evaluation, {k: v for k, v in SETS.items() if k != "tgt"})
    with pytest.raises(ValueError, match="budget must be one of paper, matched"):
        SetInfo("pgn", "single", 8, "cheap", 1, 1)


def test_pareto_front_and_means():
    #          cost, value
    points = [(10, 40), (400, 70), (200, 72), (10, 35), (50, 40), (900, 90), (200, 60)]
    assert leaderboard.pareto_front(points) == [0, 2, 5]
    table = [{"method": "a", "source": "s", "eps_pixels": 8, "budget": "paper", "victim": v, "success_pct": p}
             for v, p in (("x", 10.0), ("y", 30.0), ("z", float("nan")))]
    assert leaderboard.mean_over_victims(table, ["x", "y"]) == {("a", "s", 8, "paper"): 20.0}
    assert leaderboard.mean_over_victims(table, ["x", "w"]) == {}
    assert leaderboard.victim_label("lite2", "none") == "lite2"


def test_versus_reference_counts_victim_by_victim():
    nan = float("nan")

    def row(method, victim, rate, p="", budget="paper"):
        return {"method": method, "source": "single", "eps_pixels": 4, "budget": budget, "victim": victim,
                "success_pct": rate, "p_vs_reference": p}

    table = [row("ti_di_mi_fgsm", v, r) for v, r in (("a", 50.0), ("b", 0.0), ("c", nan), ("d", 40.0))]
    table += [row("bsr", "a", 70.0, 0.001), row("bsr", "b", 0.0, 1.0), row("bsr", "c", nan), row("bsr", "d", 41.0, 0.5)]
    table += [row("mi_fgsm", "a", 30.0, 0.01), row("mi_fgsm", "b", 1.0, 0.9), row("mi_fgsm", "c", nan),
              row("mi_fgsm", "d", 39.0, 0.04)]
    table += [row("pgn", "a", 80.0, 0.001, budget="matched")]  # no reference at this budget: not compared
    versus = leaderboard.versus_reference(table)
    assert set(versus) == {("bsr", "single", 4, "paper"), ("mi_fgsm", "single", 4, "paper")}
    bsr, mi = versus[("bsr", "single", 4, "paper")], versus[("mi_fgsm", "single", 4, "paper")]
    assert (bsr.above, bsr.equal, bsr.below, bsr.significantly_above, bsr.significantly_below) == (2, 1, 0, 1, 0)
    assert bsr.never_below and bsr.victims == 3
    assert (mi.above, mi.equal, mi.below, mi.significantly_above, mi.significantly_below) == (1, 0, 2, 0, 2)
    assert not mi.never_below
