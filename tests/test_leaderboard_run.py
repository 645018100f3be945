"""The leaderboard's runner: its plan (budgets, shared folders, image counts), kept predictions, and
scripts/benchmark.py --what=leaderboard end to end on two real images (the CSV contract, reuse, reproduction, crafting
on Ray)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfattack
from tfattack import data, evaluate
from tfattack.bench import budget, leaderboard, leaderboard_run
from shared_data import requires_shared
from test_attack_script import ENV, REPO
from test_transfer_bench import REPRODUCIBLE_ENV, digests


def test_every_untargeted_preset_is_planned_once_per_setting_and_budget():
    planned = leaderboard_run.plan(num_images=1000, num_images_expensive=500)
    targeted = {"logit_ti_di_mi_fgsm", "po_trip_ti_di_mi_fgsm", "logit_margin", "cfm", "su"}
    assert set(leaderboard_run.METHODS) == {p for p in tfattack.attacks.presets()
                                            if p not in targeted and not p.startswith("nips17_")}
    names = [e.name for e in planned]
    assert len(names) == len(set(names))
    single = {e.method for e in planned if e.source == "single"}
    assert single == set(leaderboard_run.METHODS) - {"svre", "cwa", "adaea", "smer"}
    assert {e.method for e in planned if e.source == "ensemble"} == set(leaderboard_run.METHODS)
    assert {(e.eps_pixels, e.budget) for e in planned} == {(4, "paper"), (4, "matched"), (8, "paper"), (8, "matched")}
    for entry in planned:
        config = entry.config
        assert config.eps == pytest.approx(entry.eps_pixels / 255) and entry.passes == config.model_passes()
        cheap = config.model_passes() <= 2 * config.steps
        assert entry.images == (1000 if cheap else 500), entry.name
        if entry.budget == "matched":
            paper = leaderboard_run.protocol_config(entry.method, entry.eps_pixels, seed=0)
            want = budget.matched(paper, leaderboard_run.MATCHED_PASSES)
            assert config == want.config and entry.how == want.how
            # A method the budget leaves as it is shares its paper set's images, and only then.
            shares = want.knob is None or want.value == want.paper_value
            assert (entry.crafted_as == entry.name.replace("/matched/", "/paper/")) == shares, entry.name
        else:
            assert entry.crafted_as == entry.name and entry.how == "the paper's settings"
    crafted = leaderboard_run.crafted_sets(planned)
    assert sorted(e.crafted_as for e in crafted) == sorted({e.crafted_as for e in planned})
    by_name = {e.name: e for e in planned}
    mig = by_name["single/eps4/paper/mig"].config  # a paper schedule: 25 steps, its step scaled from eps 16
    assert mig.steps == 25 and mig.step_size == pytest.approx(tfattack.attacks.PRESETS["mig"].step_size * 4 / 16)
    assert by_name["single/eps8/paper/mi_fgsm"].config.steps == 10
    assert by_name["ensemble/eps8/paper/ops"].config.execution.copies_per_pass == 30  # memory, not the method


def test_unknown_names_are_value_errors_naming_the_known_ones():
    for kwargs, start in ((dict(methods=["mi_fgsm", "cfm"]), "methods: unknown cfm; known: fgsm, "),
                          (dict(sources=["triple"]), "sources: unknown triple; known: single, ensemble"),
                          (dict(budgets=["free"]), "budgets: unknown free; known: paper, matched")):
        with pytest.raises(ValueError) as err:
            leaderboard_run.plan(**kwargs)
        assert str(err.value).startswith(start)


def predictions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 1000, 7)
    clean = {("lite2", "none"): labels.copy(), ("lite2", "rs:0.25:4"): rng.integers(0, 1000, 7)}
    adv = {(s, v, d): rng.integers(-1, 1000, 7) for s in ("a", "b") for v, d in clean}
    return leaderboard.Predictions([leaderboard.ScoredSet("a", False), leaderboard.ScoredSet("b", True)], labels,
                                   (labels + 1) % 1000, clean, adv)


def test_kept_predictions_load_back_equal_and_take_new_names(tmp_path):
    kept = predictions()
    kept.save(str(tmp_path / "p.npz"))
    loaded = leaderboard.Predictions.load(str(tmp_path / "p.npz"))
    assert loaded.adv_sets == kept.adv_sets and list(loaded.clean_predictions) == list(kept.clean_predictions)
    assert np.array_equal(loaded.labels, kept.labels) and np.array_equal(loaded.targets, kept.targets)
    assert all(np.array_equal(loaded.adv_predictions[k], v) for k, v in kept.adv_predictions.items())
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no partial file left
    view = kept.renamed({"paper/x": "a", "matched/x": "a", "paper/y": "b"})
    assert [(s.name, s.targeted) for s in view.adv_sets] == [("paper/x", False), ("matched/x", False),
                                                            ("paper/y", True)]
    assert view.adv_predictions[("matched/x", "lite2", "none")] is kept.adv_predictions[("a", "lite2", "none")]
    with pytest.raises(KeyError, match="no predictions for the set"):
        kept.renamed({"z": "c"})


def test_predictions_split_per_set_and_merge_back_only_when_the_clean_ones_agree():
    kept = predictions()
    a, b = kept.only("a"), kept.only("b")
    assert [s.name for s in a.adv_sets] == ["a"] and {k[0] for k in a.adv_predictions} == {"a"}
    merged = leaderboard.Predictions.merged([a, b])
    assert merged.adv_sets == kept.adv_sets and merged.adv_predictions.keys() == kept.adv_predictions.keys()
    assert all(np.array_equal(merged.adv_predictions[k], v) for k, v in kept.adv_predictions.items())
    b.clean_predictions = {k: v.copy() for k, v in b.clean_predictions.items()}
    b.clean_predictions[("lite2", "rs:0.25:4")][3] += 1
    with pytest.raises(ValueError, match=r"kept predictions disagree on the clean images \(b against a\)"):
        leaderboard.Predictions.merged([a, b])
    with pytest.raises(KeyError, match="no predictions for the set c"):
        kept.only("c")


class MeanLevel:
    """Top-1 = the rounded mean level of one channel: a victim whose predictions move with rp's and rs's draws."""

    def __init__(self, name, channel):
        self.name, self.channel = name, channel

    def __call__(self, images):
        level = 255.0 * tf.reduce_mean(images[..., self.channel], axis=[1, 2])
        return -tf.square(level[:, None] - tf.range(1000, dtype=tf.float32)[None, :])


def scoring_case(tmp_path):
    """Five 12x12 images, three crafted sets of them, two victims and two random defenses."""
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    rows = ["ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass"]
    for k in range(5):
        pixels = rng.integers(60, 200, (12, 12, 3)).astype(np.uint8)
        data.write_png(pixels, str(tmp_path / "images" / f"im{k}.png"))
        rows.append(f"im{k},u,0,0,1,1,{int(pixels[..., 0].mean().round()) + 1},1")
        for method in ("mi_fgsm", "di_mi_fgsm", "bsr"):
            folder = tmp_path / "out" / "sets" / "single" / "eps4" / "paper" / method
            folder.mkdir(parents=True, exist_ok=True)
            data.write_png(np.clip(pixels.astype(int) + rng.integers(-4, 5, pixels.shape), 0, 255).astype(np.uint8),
                           str(folder / f"im{k}.png"))
    (tmp_path / "dev_dataset.csv").write_text("\n".join(rows) + "\n")
    dataset = data.read_dataset(str(tmp_path / "images"), csv=str(tmp_path / "dev_dataset.csv"))
    entries = [leaderboard_run.PlannedSet(m, "single", 4, "paper", tfattack.attacks.PRESETS[m], "", 1, 5,
                                          f"single/eps4/paper/{m}") for m in ("mi_fgsm", "di_mi_fgsm", "bsr")]
    victims = [MeanLevel("red", 0), MeanLevel("blue", 2)]
    specs = ["rp", "rs:0.3:3"]
    sets = [evaluate.read_adv_set(str(tmp_path / "out" / "sets" / e.crafted_as), name=e.crafted_as) for e in entries]
    at_once = leaderboard.Predictions.of(
        evaluate.evaluate(dataset, sets, victims, ["none"], batch_size=2, seed=0),
        evaluate.evaluate(dataset, sets, victims[:1], specs, batch_size=2, seed=0))
    return dataset, entries, victims, specs, at_once


def test_sets_are_scored_in_chunks_kept_one_file_each_and_equal_one_evaluation(tmp_path, monkeypatch):
    dataset, entries, victims, specs, at_once = scoring_case(tmp_path)
    monkeypatch.setattr(leaderboard_run, "SETS_PER_SCORING", 2)
    lines = []
    scored = leaderboard_run.score_group(entries, dataset, victims, specs, str(tmp_path / "out"), "fp", 0, 2,
                                         lines.append)
    assert len(list((tmp_path / "out" / "scores").glob("*.npz"))) == 3
    assert sum("(mi_fgsm, di_mi_fgsm) on red+rs:0.3:3" in l for l in lines) >= 1
    assert sum("(bsr) on blue" in l for l in lines) >= 1
    assert [s.name for s in scored.adv_sets] == [s.name for s in at_once.adv_sets]
    assert list(scored.clean_predictions) == list(at_once.clean_predictions)  # the columns in the table's order
    assert scored.adv_predictions.keys() == at_once.adv_predictions.keys()
    assert all(np.array_equal(scored.adv_predictions[k], v) for k, v in at_once.adv_predictions.items())
    assert all(np.array_equal(scored.clean_predictions[k], v) for k, v in at_once.clean_predictions.items())
    lines.clear()
    again = leaderboard_run.score_group(entries, dataset, victims, specs, str(tmp_path / "out"), "fp", 0, 2,
                                        lines.append)
    assert lines == ["leaderboard: the 3 sets of single/4 are already scored"]
    assert all(np.array_equal(again.adv_predictions[k], v) for k, v in at_once.adv_predictions.items())


def test_a_cut_scoring_run_keeps_its_finished_columns_and_the_next_run_scores_only_the_rest(tmp_path, monkeypatch):
    dataset, entries, victims, specs, at_once = scoring_case(tmp_path)
    monkeypatch.setattr(leaderboard_run, "SETS_PER_SCORING", 2)
    evaluate_all = evaluate.evaluate
    calls, killed = [], []

    class Killed(Exception):
        """The run stopping mid-column, as a kill or a session's end would stop it."""

    def evaluate_until_cut(dataset, sets, victims, defenses, **kwargs):
        calls.append(([s.name.rsplit("/", 1)[-1] for s in sets], [v.name for v in victims], list(defenses)))
        if len(calls) == 3 and not killed:  # the third column of the first chunk: killed while scoring it
            killed.append(True)
            raise Killed
        return evaluate_all(dataset, sets, victims, defenses, **kwargs)

    monkeypatch.setattr(leaderboard_run.evaluation_lib, "evaluate", evaluate_until_cut)
    out = str(tmp_path / "out")
    with pytest.raises(Killed):
        leaderboard_run.score_group(entries, dataset, victims, specs, out, "fp", 0, 2, print)
    partial = sorted((tmp_path / "out" / "scores").glob("*" + leaderboard_run.COLUMNS_SO_FAR))
    assert len(partial) == 2 and not [p for p in (tmp_path / "out" / "scores").glob("*.npz") if p not in partial]
    calls.clear()
    lines = []
    scored = leaderboard_run.score_group(entries, dataset, victims, specs, out, "fp", 0, 2, lines.append)
    first_chunk, second_chunk = ["mi_fgsm", "di_mi_fgsm"], ["bsr"]
    assert calls == [(first_chunk, ["red"], ["rp"]), (first_chunk, ["red"], ["rs:0.3:3"]),
                     (second_chunk, ["red"], ["none"]), (second_chunk, ["blue"], ["none"]),
                     (second_chunk, ["red"], ["rp"]), (second_chunk, ["red"], ["rs:0.3:3"])]
    assert ("leaderboard: scoring single/4 (mi_fgsm, di_mi_fgsm): 4 (set, column) pair(s) kept by an earlier run"
            in lines)
    assert not list((tmp_path / "out" / "scores").glob("*" + leaderboard_run.COLUMNS_SO_FAR))
    assert list(scored.clean_predictions) == list(at_once.clean_predictions)
    assert scored.adv_predictions.keys() == at_once.adv_predictions.keys()
    assert all(np.array_equal(scored.adv_predictions[k], v) for k, v in at_once.adv_predictions.items())
    assert all(np.array_equal(scored.clean_predictions[k], v) for k, v in at_once.clean_predictions.items())


def test_a_column_reuses_the_clean_predictions_of_the_sets_already_scored_in_it(tmp_path, monkeypatch):
    """Scoring one more set of a group costs its adversarial images only: each column takes its clean predictions
    from a set scored before, in this run or kept by an earlier one, and the scores equal one evaluation of all."""
    dataset, entries, victims, specs, at_once = scoring_case(tmp_path)
    monkeypatch.setattr(leaderboard_run, "SETS_PER_SCORING", 2)
    evaluate_all = evaluate.evaluate
    given = []

    def recording(dataset, sets, victims, defenses, **kwargs):
        given.append(([s.name.rsplit("/", 1)[-1] for s in sets], kwargs["clean_predictions"]))
        return evaluate_all(dataset, sets, victims, defenses, **kwargs)

    monkeypatch.setattr(leaderboard_run.evaluation_lib, "evaluate", recording)
    out = str(tmp_path / "out")
    leaderboard_run.score_group(entries[:2], dataset, victims, specs, out, "fp", 0, 2, print)  # an earlier run
    scored = leaderboard_run.score_group(entries, dataset, victims, specs, out, "fp", 0, 2, print)
    columns = list(at_once.clean_predictions)
    assert [names for names, _ in given] == [["mi_fgsm", "di_mi_fgsm"]] * 4 + [["bsr"]] * 4
    assert all(clean is None for _, clean in given[:4])  # nothing scored before them
    for (_, clean), key in zip(given[4:], columns):
        assert list(clean) == [key]
        np.testing.assert_array_equal(clean[key], at_once.clean_predictions[key])
    assert all(np.array_equal(scored.adv_predictions[k], v) for k, v in at_once.adv_predictions.items())
    assert all(np.array_equal(scored.clean_predictions[k], v) for k, v in at_once.clean_predictions.items())


def run_leaderboard(output_dir, *extra, env=REPRODUCIBLE_ENV):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--what=leaderboard", "--num_images=2",
         "--num_images_expensive=1", "--methods=mi_fgsm,ti_di_mi_fgsm", "--sources=single", "--eps_pixels=8",
         "--matched_passes=40", "--rs_samples=3", f"--output_dir={output_dir}", *extra],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=1200)


@requires_shared
def test_leaderboard_is_written_kept_and_reproduced(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"

    def plan_of(folder):
        """--plan's lines: {set: its line}, and the totals line."""
        result = run_leaderboard(folder, "--plan")
        assert result.returncode == 0, result.stderr[-3000:]
        *sets, totals = result.stdout.strip().splitlines()
        return {line.split(":")[0]: line for line in sets}, totals

    before, totals = plan_of(first)
    assert "single/eps8/paper/mi_fgsm: 10 passes/image x 2 images; the paper's settings; crafted 0/2 in" in (
        before["single/eps8/paper/mi_fgsm"])
    # 4 sets to craft: MI-FGSM 10 x 2, TI-DI-MI 10 x 2, its matched set 40 x 1 (MI-FGSM's matched one is its paper set)
    assert totals == "4 table entries, 3 sets to craft, 80 single-network image passes (80 still to craft, 0 sets complete)"
    assert not first.exists()  # the plan reads, never writes
    result = run_leaderboard(first)
    assert result.returncode == 0, result.stderr[-3000:]
    after, totals = plan_of(first)
    assert "crafted 2/2 in" in after["single/eps8/matched/mi_fgsm"] and "crafted 1/1 in" in after[
        "single/eps8/matched/ti_di_mi_fgsm"]
    assert totals.endswith("(0 still to craft, 3 sets complete)")
    with open(first / "leaderboard.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0])[:12] == ["method", "source", "eps_pixels", "budget", "grad_evals_per_image",
                                   "craft_s_per_image", "n_images", "victim", "success_pct", "ci_low", "ci_high",
                                   "n_images_all"]
    victims = ["efficientnet_lite2", "mobilenet_v2_quant_int8", "mobilenet_v1_075_192_quant_int8",
               "mobilenet_v1_05_160_quant_int8"] + [f"efficientnet_lite2+{d}" for d in (
                   "jpeg:75", "bits:4", "rp", "median:3", "jpeg:75+bits:4+rp", "rs:0.25:3", "rs:0.5:3")]
    keys = [(r["method"], r["budget"]) for r in table]
    assert keys == [(m, b) for m, b in (("mi_fgsm", "paper"), ("mi_fgsm", "matched"), ("ti_di_mi_fgsm", "paper"),
                                        ("ti_di_mi_fgsm", "matched")) for _ in victims]
    assert [r["victim"] for r in table] == victims * 4
    payload = json.loads((first / "leaderboard.json").read_text())
    # The record says the budget and images the plan used (--matched_passes=40, not the default 200).
    assert payload["protocol"]["matched_passes"] == 40
    assert payload["protocol"]["images"]["rule"] == ("the first 2 for methods of at most 2 passes per iteration, "
                                                     "the first 1 for the others")
    sets = {s["name"]: s for s in payload["sets"]}
    # MI-FGSM has nothing to scale: its matched entry is its paper set, same images, same numbers.
    assert sets["single/eps8/matched/mi_fgsm"]["crafted_as"] == "single/eps8/paper/mi_fgsm"
    paper, matched = ([{k: v for k, v in r.items() if k not in ("budget", "reference", "p_vs_reference")}
                       for r in table if r["method"] == "mi_fgsm" and r["budget"] == b] for b in ("paper", "matched"))
    assert paper == matched
    # TI-DI-MI's matched set: DI views 1 -> 4 for 40 passes, on the expensive subset (4 passes per iteration).
    tdm = sets["single/eps8/matched/ti_di_mi_fgsm"]
    assert (tdm["how"], tdm["grad_evals_per_image"], tdm["images"]) == ("views 1 -> 4", 40, 1)
    assert {r["n_images_all"] for r in table if r["method"] == "ti_di_mi_fgsm" and r["budget"] == "matched"} == {"1"}
    assert {r["n_images_all"] for r in table if r["budget"] == "paper"} == {"2"}
    for row in table:
        low, rate, high = float(row["ci_low"]), float(row["success_pct"] or "nan"), float(row["ci_high"])
        if row["n_images"] == "0":  # the victim got neither image right when clean: no rate, no interval
            assert rate != rate and low != low and high != high
        else:
            assert 0 <= low <= rate <= high <= 100
    for name in ("leaderboard.md", "leaderboard.png", "leaderboard_heatmap.png"):
        assert (first / name).stat().st_size > 0
    assert "### single, eps 8/255, matched budget" in (first / "leaderboard.md").read_text()
    assert "Against ti_di_mi_fgsm, victim by victim (" in (first / "leaderboard.md").read_text()
    from tfattack import runs
    assert {tuple(s["tfattack_sources"]) for s in payload["sets"]} == {(runs.source_digest(),)}
    assert {tuple(s["kernels"]) for s in payload["sets"]} == {(runs.kernels(),)}
    assert f"Every set was crafted by the tfattack sources {runs.source_digest()}" in (
        first / "leaderboard.md").read_text()
    # The analysis: one entry per (source, eps, budget); MI-FGSM is the only method TransferAttack has too (no
    # ordering below 3), and the front of the (single, eps 8) panel, by passes.
    analysis = payload["analysis"]
    assert [(a["source"], a["eps_pixels"], a["budget"]) for a in analysis] == [("single", 8, "paper"),
                                                                           ("single", 8, "matched")]
    assert all(a["transferattack"] is None and a["di_mi_fgsm"] is None for a in analysis)
    front = analysis[0]["pareto_front"]
    assert front == analysis[1]["pareto_front"] and front and set(front) <= {
        f"{m}{b}" for m in ("mi_fgsm", "ti_di_mi_fgsm") for b in ("", " (matched)")}
    assert "### Orderings against the published ones" in (first / "leaderboard.md").read_text()
    # The same command again: nothing crafted, nothing scored, the same table.
    result = run_leaderboard(first)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already scored" in result.stderr and "scoring" not in result.stderr.replace("already scored", "")
    assert json.loads((first / "leaderboard.json").read_text())["rows"] == payload["rows"]
    # A fresh folder, crafted on Ray workers then scored here in a second run, with the same seed: the same files
    # and numbers (crafting seconds aside) as a local run with the workers' threads. A CPU worker runs the threads
    # Ray reserves for it (--worker_cpus, 1), and the thread count changes last bits even with oneDNN off.
    pytest.importorskip("ray")
    result = run_leaderboard(second, "--craft_only", "--engine=ray", "--num_workers=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (second / "leaderboard.json").exists() and "2 Ray worker(s) ready on" in result.stderr
    result = run_leaderboard(second)
    assert result.returncode == 0, result.stderr[-3000:]
    one_thread = dict(REPRODUCIBLE_ENV, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    third = tmp_path / "c"
    result = run_leaderboard(third, env=one_thread)
    assert result.returncode == 0, result.stderr[-3000:]
    assert digests(third / "leaderboard" / "sets") == digests(second / "leaderboard" / "sets")
    assert len(digests(second / "leaderboard" / "sets")) == len(digests(first / "leaderboard" / "sets"))
    # Both records name the kernels that made them: one thread per process.
    on_ray, here = (json.loads((folder / "leaderboard.json").read_text()) for folder in (second, third))
    for made in (on_ray, here):
        assert {tuple(s["kernels"]) for s in made["sets"]} == {
            ("CPU TF_ENABLE_ONEDNN_OPTS=0 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1",)}
    assert [{k: v for k, v in r.items() if k != "craft_s_per_image"} for r in on_ray["rows"]] == [
        {k: v for k, v in r.items() if k != "craft_s_per_image"} for r in here["rows"]]
    # A method added later: only its set is scored, and the others' rows stay as they were (a set's predictions do
    # not depend on the sets scored with it).
    result = run_leaderboard(first, "--methods=mi_fgsm,fgsm,ti_di_mi_fgsm")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scoring 1 set(s) of single/8 on 2 images (3 already scored)" in result.stderr
    grown = json.loads((first / "leaderboard.json").read_text())["rows"]
    assert [r for r in grown if r["method"] != "fgsm"] == payload["rows"]
    assert {r["method"] for r in grown} == {"mi_fgsm", "fgsm", "ti_di_mi_fgsm"}


def test_bad_leaderboard_flags_are_one_line_errors_before_any_work(tmp_path):
    def error(*flags):
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--what=leaderboard",
                                 f"--output_dir={tmp_path / 'out'}", *flags], capture_output=True, text=True, env=ENV,
                                cwd=REPO, timeout=300)
        assert result.returncode == 2 and not (tmp_path / "out").exists()
        (line,) = [l for l in result.stderr.splitlines() if l.startswith("benchmark.py: error:")]
        return line[len("benchmark.py: error: "):]

    assert error("--methods=mi_fgsm,cfm").startswith("--methods: unknown cfm; known: fgsm, i_fgsm, ")
    assert error("--eps_pixels=4,x") == "--eps_pixels: 'x' is not a number of pixels"
    assert error("--methods=svre", "--sources=single") == (
        "--methods: only ensemble strategies chosen, and --sources has no ensemble; add --sources=ensemble")


def test_a_method_that_cannot_act_on_the_surrogate_is_left_out_with_the_reason():
    planned = leaderboard_run.plan(methods=("sgm", "linbp", "mi_fgsm"), sources=("single",), eps_pixels=(8,))
    surrogates = leaderboard_run.load_surrogates(("single",), None)
    kept, left_out = leaderboard_run.applicable(planned, surrogates)
    assert [e.name for e in kept] == [e.name for e in planned if e.method != "linbp"]
    assert sorted(left_out) == ["single/eps8/matched/linbp", "single/eps8/paper/linbp"]
    assert all(why.startswith("backward 'linbp': model 'efficientnet_lite0' has no residual units")
               for why in left_out.values())


def test_the_protocol_names_the_plans_matched_budget_and_image_counts():
    both = leaderboard_run.plan(methods=("mi_fgsm", "bsr"), sources=("single",), eps_pixels=(4,),
                                matched_passes=120)
    assert leaderboard_run.matched_budget(both) == 120
    paper = [e for e in both if e.budget == "paper"]
    assert leaderboard_run.matched_budget(paper) is None
    other = leaderboard_run.plan(methods=("bsr",), sources=("single",), eps_pixels=(4,), matched_passes=60)
    with pytest.raises(ValueError, match=r"matched entries planned at several budgets: \[60, 120\]"):
        leaderboard_run.matched_budget(both + other)
    assert leaderboard_run.images_rule(200, 200) == "the first 200 for every method"
    assert leaderboard_run.images_rule(1000, 500) == ("the first 1000 for methods of at most 2 passes per iteration, "
                                                      "the first 500 for the others")


def test_the_plan_totals_estimate_the_time_left_from_the_crafting_runs_records():
    planned = leaderboard_run.plan(methods=("mi_fgsm", "bsr"), sources=("single", "ensemble"), eps_pixels=(4,),
                                   budgets=("paper",), num_images=10, num_images_expensive=5)
    names = [e.crafted_as for e in planned]
    assert names == ["single/eps4/paper/mi_fgsm", "single/eps4/paper/bsr", "ensemble/eps4/paper/mi_fgsm",
                     "ensemble/eps4/paper/bsr"]
    # passes per image: MI-FGSM 10, BSR 200 (x3 on the three-member ensemble); images: 10 and 5
    done = dict(zip(names, (10, 2, 0, 0)))
    totals = "4 table entries, 4 sets to craft, 4400 single-network image passes (3900 still to craft, 1 sets complete)"
    assert leaderboard_run.plan_totals(planned, done, {}) == totals
    histories = {names[0]: {"images": 10, "seconds": 200.0}, names[1]: {"images": 1, "seconds": 400.0},
                 names[2]: {"images": 0, "seconds": 0.0}}  # 100 + 200 passes counted in 600 s; 3900 x 2 s left
    assert leaderboard_run.plan_totals(planned, done, histories) == (
        totals + "; at the 2000.0 ms per pass that the crafting runs measured over 300 passes, about 2.2 h of "
        "crafting left")
    assert leaderboard_run.plan_totals(planned, dict.fromkeys(names, 0) | {names[0]: 10, names[1]: 5,
                                                                        names[2]: 10, names[3]: 5},
                                       histories).endswith("(0 still to craft, 4 sets complete)")


def test_the_summary_ranks_the_top_methods_keeps_the_reference_and_names_who_is_never_below_it():
    def rows(method, rates, evals=10):
        return [{"method": method, "source": "single", "eps_pixels": 4, "budget": "paper", "victim": victim,
                 "success_pct": rate, "p_vs_reference": p, "grad_evals_per_image": evals}
                for victim, (rate, p) in zip(("v1", "v2", "v3"), rates)]

    table = (rows("ti_di_mi_fgsm", [(40.0, ""), (20.0, ""), (10.0, "")])
             + rows("bsr", [(70.0, 0.001), (30.0, 0.2), (10.0, 1.0)], evals=200)  # mean 36.7, never below
             + rows("pgn", [(80.0, 0.001), (10.0, 0.01), (30.0, 0.3)], evals=400)  # mean 40, below on v2
             + rows("mi_fgsm", [(30.0, 0.04), (10.0, 0.5), (5.0, 0.5)]))  # mean 15
    payload = {"rows": table, "protocol": {"reference": "ti_di_mi_fgsm", "images": {"rule": "the first 2"}}}
    text = leaderboard_run.summary(payload, top=2)
    lines = text.splitlines()
    assert lines[0].startswith("Mean untargeted success (%) over 3 victims and defenses; images: the first 2;")
    assert "single, eps 4/255, paper budget (4 methods, the first 2 shown)" in lines
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| #")]
    assert body == ["| 1 | pgn | 400 | 40.0 | 2 above / 1 below (1▲ 1▼) |",
                    "| 2 | bsr | 200 | 36.7 | 2 above / 0 below (1▲ 0▼) |",
                    "| 3 | ti_di_mi_fgsm | 10 | 23.3 | reference |"]  # ranked below the first 2, shown anyway
    assert lines[-1] == ("Against ti_di_mi_fgsm, victim by victim (3 victims with a rate for both): never below it: "
                         "bsr (2 above, 0 below; 1▲ 0▼). Below it on at least one victim: pgn (2 above, 1 below; "
                         "1▲ 1▼), mi_fgsm (0 above, 3 below; 0▲ 1▼).")
    everything = leaderboard_run.summary(payload)
    assert "single, eps 4/255, paper budget (4 methods)" in everything.splitlines()
    assert everything.count("\n| ") == 5  # the header and all 4 methods


def test_the_table_says_which_sources_and_kernels_crafted_its_sets():
    def payload(*lists, kernels=None):
        kernels = kernels or [["CPU TF_ENABLE_ONEDNN_OPTS=0"]] * len(lists)
        sets = [{"crafted_as": f"set{i}", "tfattack_sources": sources, "kernels": kernel}
                for i, (sources, kernel) in enumerate(zip(lists, kernels))]
        return {"sets": sets + [dict(sets[0])]}  # a matched entry sharing set0's folder

    one_kernel = "Every set was crafted by the kernels CPU TF_ENABLE_ONEDNN_OPTS=0 (`runs.kernels`)."
    assert leaderboard_run.code_line(payload(["abc"], ["abc"])) == (
        "Every set was crafted by the tfattack sources abc (`runs.source_digest`). " + one_kernel)
    assert leaderboard_run.code_line(payload(["abc"], ["abc", "def"], [], None)) == (
        "The sets were crafted by several versions of the tfattack sources (`runs.source_digest`; each set's list "
        "is in the JSON): abc (2 sets), def (1 set), unrecorded (2 sets); unrecorded: crafted before run records "
        "kept it. " + one_kernel)
    assert leaderboard_run.code_line(payload([], None)).startswith(
        "The sets' run records do not say which tfattack sources crafted them")
    assert leaderboard_run.code_line(payload([], None, kernels=[[], ["unrecorded"]])) == (
        "The sets' run records do not say which tfattack sources and kernels crafted them (made before they kept it).")
    mixed = payload(["abc"], ["abc"], ["abc"], kernels=[["CPU TF_ENABLE_ONEDNN_OPTS=0"], ["unrecorded"],
                                                      ["CPU TF_ENABLE_ONEDNN_OPTS=0", "CPU TF_ENABLE_ONEDNN_OPTS=unset"]])
    assert leaderboard_run.code_line(mixed).endswith(
        "The sets were crafted by several kernel settings (`runs.kernels`; each set's list is in the JSON): "
        "CPU TF_ENABLE_ONEDNN_OPTS=0 (2 sets), CPU TF_ENABLE_ONEDNN_OPTS=unset (1 set), unrecorded (1 set); "
        "unrecorded: crafted before run records kept it.")


def test_crafting_history_keeps_the_sources_and_kernels_of_every_run_that_wrote_images(monkeypatch):
    from tfattack import runs
    from tfattack.bench import transfer

    monkeypatch.setattr(runs, "source_digest", lambda: "new")
    monkeypatch.setattr(transfer, "HISTORY", {"sources": runs.source_digest, "kernels": lambda: "cpu"})
    first = transfer._add_crafting_time({}, 5, 10.0)
    assert first == {"images": 5, "seconds": 10.0, "sources": ["new"], "kernels": ["cpu"]}
    assert transfer._add_crafting_time(first, 0, 3.0) == first  # a run that wrote nothing adds nothing
    old = {"images": 4, "seconds": 8.0}  # a record from before the history was kept
    assert transfer._add_crafting_time(old, 2, 1.0) == {"images": 6, "seconds": 9.0, "sources": ["new", "unrecorded"],
                                                        "kernels": ["cpu", "unrecorded"]}
    assert transfer.crafted_by(old, "sources") == ["unrecorded"] and transfer.crafted_by({}, "kernels") == []
    # A record that kept the sources but not yet the kernels: its earlier images' kernels are unrecorded.
    sources_only = {"images": 4, "seconds": 8.0, "sources": ["older"]}
    assert transfer._add_crafting_time(sources_only, 1, 1.0)["kernels"] == ["cpu", "unrecorded"]
    # Images found done that no earlier run counted and nothing vouches for: made by a run that recorded nothing.
    assert transfer._add_crafting_time({}, 3, 1.0, kept=30)["sources"] == ["new", "unrecorded"]
    # A run killed after it recorded its history (from its first write) but before its count: its history stands.
    started = {"images": 0, "seconds": 0.0, "sources": ["killed"], "kernels": ["gpu"]}
    assert transfer._add_crafting_time(started, 3, 1.0, kept=30) == {
        "images": 3, "seconds": 1.0, "sources": ["killed", "new"], "kernels": ["cpu", "gpu"]}


def test_kernels_name_the_device_the_onednn_switch_and_the_thread_pools_the_environment_sets(monkeypatch):
    from tfattack import runs

    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert runs.kernels() == "CPU TF_ENABLE_ONEDNN_OPTS=0"  # the test machines have no GPU
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    assert runs.kernels() == "CPU TF_ENABLE_ONEDNN_OPTS=unset"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert runs.kernels() == "CPU TF_ENABLE_ONEDNN_OPTS=1 TF_NUM_INTRAOP_THREADS=1"
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "2")
    assert runs.kernels() == "CPU TF_ENABLE_ONEDNN_OPTS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=2"


