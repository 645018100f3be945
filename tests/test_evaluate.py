"""Evaluation numbers against a direct NumPy computation, on hand-made images and analytic victims.

Victims read one colour channel: `ChannelModel(c)` predicts class round(255 * mean of channel c), so
every prediction (also behind bits:2) can be computed by hand from the PNG files.
"""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfattack import data, defenses, evaluate, report

RED, BLUE = 0, 2


class ChannelModel:
    def __init__(self, name, channel):
        self.name, self.channel = name, channel
        self.differentiable = True
        self.classes = tf.range(1000, dtype=tf.float32)

    def __call__(self, images):
        level = 255.0 * tf.reduce_mean(images[..., self.channel], axis=[1, 2])
        return -tf.square(level[:, None] - self.classes[None, :])


# id: (R, B, label, target, size (h, w))
CLEAN = {"i0": (50, 60, 50, 60, (32, 32)), "i1": (70, 80, 70, 66, (32, 32)), "i2": (90, 100, 90, 95, (32, 32)),
         "i3": (110, 120, 111, 100, (32, 32)), "i4": (130, 140, 140, 120, (30, 40)), "i5": (150, 160, 150, 151, (32, 32))}
# id: (dR, dB, checkerboard amplitude on G) — None = no file, "corrupt" = garbage bytes
UNTARGETED = {"i0": (10, 0, 3), "i1": (0, 0, 0), "i2": (16, 16, 8), "i3": (-5, 3, 1), "i4": (20, 0, 2), "i5": None}
TARGETED = {"i0": (10, 0, 4), "i1": (-4, 0, 0), "i2": (0, -5, 2), "i3": (-10, 0, 16), "i4": "corrupt", "i5": (1, 0, 1)}


def clean_image(r, b, size):
    image = np.empty(size + (3,), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = r, 128, b
    return image


def adv_image(clean, change):
    d_r, d_b, amplitude = change
    adv = clean.astype(np.int32)
    adv[..., 0] += d_r
    adv[..., 2] += d_b
    checker = (np.indices(clean.shape[:2]).sum(0) % 2) * 2 - 1
    adv[..., 1] += amplitude * checker
    return np.clip(adv, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    images = root / "images"
    images.mkdir()
    rows = ["ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass"]
    for image_id, (r, b, label, target, size) in CLEAN.items():
        data.write_png(clean_image(r, b, size), str(images / f"{image_id}.png"))
        rows.append(f"{image_id},u,0,0,1,1,{label + 1},{target + 1}")
    (root / "dev_dataset.csv").write_text("\n".join(rows) + "\n")
    for name, changes, record in (("untargeted", UNTARGETED, None), ("targeted", TARGETED, {"targeted": True, "max_epsilon": 16})):
        folder = root / name
        folder.mkdir()
        for image_id, change in changes.items():
            r, b, _, _, size = CLEAN[image_id]
            if change == "corrupt":
                (folder / f"{image_id}.png").write_bytes(b"not a png")
            elif change is not None:
                data.write_png(adv_image(clean_image(r, b, size), change), str(folder / f"{image_id}.png"))
        if record:
            (folder / "run.json").write_text(json.dumps(record))
    return root


def read(path):
    return np.asarray(Image.open(path).convert("RGB"))


def direct_prediction(pixels, channel, defense):
    x = pixels.astype(np.float64) / 255.0
    if defense == "bits:2":
        x = np.round(x * 3) / 3
    return int(np.round(255.0 * x[..., channel].mean()))


def direct_numbers(root, set_name, targeted, channel, defense, label_source="truth"):
    """The report's numbers for one (set, victim, defense), by plain loops over the files."""
    rows = []
    for image_id, (_, _, label, target, _) in CLEAN.items():
        adv_file = root / set_name / f"{image_id}.png"
        try:
            adv = read(adv_file)
        except (FileNotFoundError, OSError):
            continue
        clean = read(root / "images" / f"{image_id}.png")
        # clean_prediction: the surrogate is the red victim, undefended.
        y = direct_prediction(clean, RED, "none") if label_source == "clean_prediction" else label
        rows.append((y, target, direct_prediction(clean, channel, defense), direct_prediction(adv, channel, defense),
                     np.abs(adv.astype(int) - clean.astype(int)).max()))
    y, t, clean_pred, adv_pred, linf = map(np.array, zip(*rows))
    success = adv_pred == t if targeted else adv_pred != y
    correct = clean_pred == y
    score = np.where(adv_pred != y, 2 * (2 - linf / 32), 0.0)
    if targeted:
        score = np.where(adv_pred == t, 5 * (2 - linf / 32), score)
    return {"images": len(rows), "clean_correct": int(correct.sum()), "adv_correct": int((adv_pred == y).sum()),
            "success_all": int(success.sum()), "success_clean_correct": int((success & correct).sum()),
            "tianchi_score": score.mean()}


def run(root, label_source="truth", denominator="clean_correct", max_epsilon=16, batch_size=2, compiled=None):
    dataset = data.read_dataset(str(root / "images"))
    sets = [evaluate.read_adv_set(str(root / "untargeted"), max_epsilon=max_epsilon),
            evaluate.read_adv_set(str(root / "targeted"))]
    victims = [ChannelModel("red", RED), ChannelModel("blue", BLUE)]
    return evaluate.evaluate(dataset, sets, victims, ["none", "bits:2"], label_source=label_source,
                             label_model=victims[0] if label_source == "clean_prediction" else None,
                             denominator=denominator, batch_size=batch_size, compiled=compiled)


@pytest.fixture(scope="module")
def evaluation(layout):
    return run(layout)


def test_counts_equal_a_direct_computation(layout, evaluation):
    assert len(evaluation.results) == 2 * 2 * 2
    for r in evaluation.results:
        channel = RED if r.model == "red" else BLUE
        expected = direct_numbers(layout, r.attack, r.attack == "targeted", channel, r.defense)
        got = {k: getattr(r, k) for k in expected}
        # i5 has no untargeted file and i4 is corrupt in the targeted set: one image of six is not evaluated.
        assert r.not_evaluated == len(CLEAN) - expected["images"] == 1, (r.attack, r.model, r.defense)
        assert got.pop("tianchi_score") == pytest.approx(expected.pop("tianchi_score"), abs=1e-12)
        assert got == expected, (r.attack, r.model, r.defense)
        if r.clean_correct:
            assert r.success_rate == r.success_rate_clean_correct == r.success_clean_correct / r.clean_correct
        else:  # no clean-correct image: the rate over them is undefined, not 0
            assert np.isnan(r.success_rate) and np.isnan(r.success_rate_clean_correct)
        assert r.clean_accuracy == r.clean_correct / r.images


def test_known_values_of_the_hand_made_case(evaluation):
    red = evaluation.result("untargeted", "red", "none")
    # Evaluated i0..i4 (i5 has no file). Red clean: correct on i0, i1, i2 (i3: 110 vs 111, i4: 130 vs 140).
    # Adversarial red: i0 60, i1 70, i2 106, i3 105, i4 150 -> correct only i1.
    assert (red.images, red.clean_correct, red.adv_correct) == (5, 3, 1)
    assert (red.success_all, red.success_clean_correct) == (4, 2)
    assert red.success_rate_all == 0.8 and red.success_rate_clean_correct == pytest.approx(2 / 3)
    blue_target = evaluation.result("targeted", "blue", "none")
    # Targeted, evaluated i0, i1, i2, i3, i5 (i4 corrupt): blue is on the target at i0 (60, already when
    # clean) and i2 (100 - 5 = 95); i0 is not clean-correct (label 50), i2 is not either (label 90).
    assert (blue_target.images, blue_target.success_all, blue_target.success_clean_correct) == (5, 2, 0)


def test_perturbation_sizes_and_eps_check(layout, evaluation):
    by_name = {p.attack: p for p in evaluation.perturbations}
    untargeted = by_name["untargeted"]
    assert untargeted.missing == ("i5",) and untargeted.images == 5
    assert untargeted.max_epsilon == 16 and untargeted.violations == ("i4",)
    linf, l2, mean_abs = [], [], []
    for image_id in ("i0", "i1", "i2", "i3", "i4"):
        delta = read(layout / "untargeted" / f"{image_id}.png").astype(float) - read(layout / "images" / f"{image_id}.png")
        linf.append(np.abs(delta).max())
        l2.append(np.sqrt((delta ** 2).sum()))
        mean_abs.append(np.abs(delta).mean())
    assert untargeted.linf_mean == pytest.approx(np.mean(linf)) and untargeted.linf_max == 20
    assert untargeted.l2_mean == pytest.approx(np.mean(l2)) and untargeted.mean_abs_mean == pytest.approx(np.mean(mean_abs))
    targeted = by_name["targeted"]
    assert targeted.max_epsilon == 16 and targeted.violations == () and targeted.linf_max == 16
    assert [s.path for s in targeted.skipped] == [str(layout / "targeted" / "i4.png")]
    assert any("exceed the eps bound 16: i4" in note for note in evaluation.notes)
    np.testing.assert_allclose(evaluation.linf["untargeted"][:5], linf)
    assert np.isnan(evaluation.linf["untargeted"][5])


def test_denominator_all_and_clean_prediction_labels(layout):
    ev = run(layout, label_source="clean_prediction", denominator="all", batch_size=8)
    for r in ev.results:
        channel = RED if r.model == "red" else BLUE
        expected = direct_numbers(layout, r.attack, r.attack == "targeted", channel, r.defense, "clean_prediction")
        assert r.success_all == expected["success_all"] and r.clean_correct == expected["clean_correct"]
        assert r.success_rate == r.success_rate_all and r.label_source == "clean_prediction"
    assert ev.result("untargeted", "red", "none").clean_accuracy == 1.0  # labels are red's own clean predictions
    assert ev.notes[0] == "labels: the clean top-1 of the surrogate red (not ground truth)"


def labelled_copy(layout, tmp_path, name, labels):
    """The untargeted set again, with `labels` recorded as an unlabelled attack run records them."""
    folder = tmp_path / name
    shutil.copytree(layout / "untargeted", folder)
    (folder / "run.json").write_text(json.dumps({"targeted": False, "predicted_labels": labels}))
    return evaluate.read_adv_set(str(folder))


def test_recorded_clean_predictions_serve_as_labels(layout, tmp_path):
    dataset = data.read_dataset(str(layout / "images"))
    red, blue = ChannelModel("red", RED), ChannelModel("blue", BLUE)
    red_top1 = {i: int(direct_prediction(read(layout / "images" / f"{i}.png"), RED, "none")) for i in CLEAN}
    recorded = labelled_copy(layout, tmp_path, "recorded", red_top1)
    assert recorded.predicted_labels == red_top1
    by_model = evaluate.evaluate(dataset, [recorded], [red, blue], label_source="clean_prediction", label_model=red)
    by_record = evaluate.evaluate(dataset, [recorded], [red, blue], label_source="clean_prediction")
    assert [repr(r.to_dict()) for r in by_record.results] == [repr(r.to_dict()) for r in by_model.results]
    assert by_record.notes[0].startswith("labels: the surrogate's clean top-1 as the attack runs recorded it")
    # An image no record labels is left out (with a note); sets that disagree on a label are an error.
    partial = labelled_copy(layout, tmp_path, "partial", {k: v for k, v in red_top1.items() if k != "i0"})
    ev = evaluate.evaluate(dataset, [partial], [red], label_source="clean_prediction")
    assert ev.results[0].images == by_model.results[0].images - 1
    assert "1 image(s) have no recorded label (not evaluated): i0" in ev.notes
    other = labelled_copy(layout, tmp_path, "other", {**red_top1, "i2": (red_top1["i2"] + 1) % 1000})
    with pytest.raises(data.DataError, match=r"recorded and other record different labels for i2 \(90 vs 91; "):
        evaluate.evaluate(dataset, [recorded, other], [red], label_source="clean_prediction")
    (tmp_path / "other" / "run.json").write_text(json.dumps({"predicted_labels": {"i0": 1000}}))
    with pytest.raises(data.DataError, match=r"other: the run record's predicted_labels must map ImageId to a class"):
        evaluate.read_adv_set(str(tmp_path / "other"))


def test_batch_size_does_not_change_the_numbers(layout, evaluation):
    other = run(layout, batch_size=1)
    assert [repr(r.to_dict()) for r in other.results] == [repr(r.to_dict()) for r in evaluation.results]  # NaN-safe


def test_compiled_forward_passes_give_the_same_numbers(layout, evaluation):
    other = run(layout, compiled=True)
    assert [repr(r.to_dict()) for r in other.results] == [repr(r.to_dict()) for r in evaluation.results]
    assert all(np.array_equal(other.adv_predictions[k], evaluation.adv_predictions[k])
               for k in evaluation.adv_predictions)


def test_forward_passes_are_compiled_from_sixteen_batches_on(layout, monkeypatch):
    modes = []
    real = evaluate._predictor
    monkeypatch.setattr(evaluate, "_predictor", lambda model, compiled=False: modes.append(compiled) or real(model,
                                                                                                          compiled))
    run(layout, batch_size=1)  # 6 images: 6 batches, eager
    assert modes and not any(modes)
    monkeypatch.setattr(evaluate, "COMPILE_FROM_BATCHES", 6)
    modes.clear()
    run(layout, batch_size=1)
    assert modes and all(modes)


def test_tianchi_formula():
    labels, targets = np.array([1, 1, 1, 1]), np.array([7, 7, 7, 7])
    pred, linf = np.array([1, 2, 7, 7]), np.array([16.0, 16.0, 8.0, 64.0])
    np.testing.assert_allclose(evaluate.tianchi_scores(pred, labels, linf), [0, 3, 3.5, 0])
    np.testing.assert_allclose(evaluate.tianchi_scores(pred, labels, linf, targets), [0, 3, 8.75, 0])


def test_read_adv_set_record_and_flags(layout, tmp_path):
    plain = evaluate.read_adv_set(str(layout / "untargeted"))
    assert (plain.targeted, plain.max_epsilon, plain.name) == (False, None, "untargeted")
    assert plain.notes[1] == "eps bound unknown (no --max_epsilon, no max_epsilon in a run record): not checked"
    assert evaluate.read_adv_set(str(layout / "untargeted"), targeted=True).targeted
    recorded = evaluate.read_adv_set(str(layout / "targeted"), targeted=False, max_epsilon=8)
    assert recorded.targeted and recorded.max_epsilon == 8  # the record says targeted; the given eps wins
    assert recorded.notes == ("targeted (run.json)", "eps bound 8 (given); run.json says 16")
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(data.DataError, match=r"run.json: not a readable JSON run record \(Expecting"):
        evaluate.read_adv_set(str(tmp_path))
    with pytest.raises(data.DataError, match="adv dir .*absent: no such folder"):
        evaluate.read_adv_set(str(tmp_path / "absent"))
    (tmp_path / "run.json").write_text(json.dumps({"max_epsilon": "sixteen"}))
    with pytest.raises(data.DataError, match=r"run.json: max_epsilon must be a number of pixels, got 'sixteen'$"):
        evaluate.read_adv_set(str(tmp_path))


def test_shard_records_must_agree(tmp_path):
    for k, eps in enumerate((16, 16)):
        (tmp_path / f"run.shard-{k}-of-2.json").write_text(json.dumps({"targeted": True, "max_epsilon": eps,
                                                                        "predicted_labels": {f"i{k}": k + 5}}))
    adv = evaluate.read_adv_set(str(tmp_path))
    assert adv.targeted and adv.max_epsilon == 16 and adv.predicted_labels == {"i0": 5, "i1": 6}
    (tmp_path / "run.shard-1-of-2.json").write_text(json.dumps({"targeted": True, "max_epsilon": 8}))
    with pytest.raises(data.DataError) as err:
        evaluate.read_adv_set(str(tmp_path))
    assert str(err.value) == f"{tmp_path}: the shard run records disagree on max_epsilon (16, 8)"


def test_evaluate_errors(layout, tmp_path):
    dataset = data.read_dataset(str(layout / "images"))
    victims = [ChannelModel("red", RED)]
    targeted = evaluate.read_adv_set(str(layout / "targeted"))
    no_labels = tmp_path / "bare"
    no_labels.mkdir()
    data.write_png(clean_image(1, 2, (8, 8)), str(no_labels / "i0.png"))
    bare = data.read_dataset(str(no_labels))
    with pytest.raises(data.DataError, match="no ground-truth labels"):
        evaluate.evaluate(bare, [targeted], victims)
    with pytest.raises(data.DataError, match="a targeted run needs target classes"):
        evaluate.evaluate(bare, [targeted], victims, label_source="clean_prediction", label_model=victims[0])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataError) as err:
        evaluate.evaluate(dataset, [evaluate.read_adv_set(str(empty))], victims)
    assert str(err.value) == f"adv dir {empty}: none of the 6 images of {layout / 'images'} is there as <ImageId>.png"
    with pytest.raises(ValueError, match="label_source must be one of truth, clean_prediction, got 'gt'"):
        evaluate.evaluate(dataset, [targeted], victims, label_source="gt")
    with pytest.raises(data.DataError, match=r"adv set\(s\) targeted record none \(run.json predicted_labels"):
        evaluate.evaluate(dataset, [targeted], victims, label_source="clean_prediction")
    with pytest.raises(defenses.DefenseError, match="unknown defense 'blur'"):
        evaluate.evaluate(dataset, [targeted], victims, ["blur"])


def test_report_files_hold_the_same_numbers(layout, evaluation, tmp_path):
    paths = report.write_report(evaluation, str(tmp_path / "out" / "report.md"), examples=3)
    assert sorted(os.path.basename(p) for p in paths.values()) == [
        "report.csv", "report.json", "report.md", "report_examples.png", "report_success.png"]
    for key in ("success_plot", "examples_plot"):
        with Image.open(paths[key]) as image:
            assert image.format == "PNG" and image.size[0] > 300
    with open(paths["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(evaluation.results)
    for row, r in zip(rows, evaluation.results):
        assert (row["attack"], row["model"], row["defense"]) == (r.attack, r.model, r.defense)
        assert int(row["success_all"]) == r.success_all and int(row["clean_correct"]) == r.clean_correct
        assert float(row["success_rate"]) == pytest.approx(r.success_rate, nan_ok=True)
        assert float(row["tianchi_score"]) == pytest.approx(r.tianchi_score)
        assert (int(row["images"]), int(row["not_evaluated"])) == (r.images, r.not_evaluated) == (5, 1)
    payload = json.loads(open(paths["json"]).read())
    assert payload["results"][0]["success_rate_all"] == evaluation.results[0].success_rate_all
    assert payload["results"][0]["not_evaluated"] == 1
    assert payload["images"][0]["adversarial"]["untargeted"]["top1"]["red"] == 60
    text = open(paths["markdown"]).read()
    red = evaluation.result("untargeted", "red", "none")
    assert "## Attack success rate (%), over images the victim classified correctly when clean" in text
    assert "| attack | red | red+bits:2 | blue | blue+bits:2 |" in text
    # Every rate names its coverage: 5 of the 6 images were read in each set.
    assert (f"| untargeted (untargeted) | {100 * red.success_rate:.1f} ({100 * red.clean_accuracy:.1f}) "
            f"[5 of 6 images] |") in text
    assert text.count("[5 of 6 images]") == len(evaluation.results)
    assert "| attack | victim | defense | images | not evaluated | clean acc |" in text
    assert f"| untargeted | red | none | 5 | 1 | {100 * red.clean_accuracy:.1f} |" in text
    # The perturbation table tells a missing file (untargeted i5) from an unreadable one (targeted i4).
    assert "| attack | images | missing | unreadable | L∞ mean |" in text
    assert "| untargeted | 5 | 1 | 0 |" in text and "| targeted | 5 | 0 | 1 |" in text
    assert "IJCAI-19 Alibaba Adversarial AI Challenge" in text and "5*(2 - Linf/32)" in text
    assert "**1**: i4" in text  # the eps violation is flagged


def test_smoothing_and_stacks_evaluate_like_the_defenses_they_reduce_to(layout, evaluation):
    """rs with negligible noise votes for the undefended prediction; median:3 leaves the victims' constant R and B
    channels alone, so median:3+bits:2 scores like bits:2. Both run through the same batch loop as any defense."""
    dataset = data.read_dataset(str(layout / "images"))
    sets = [evaluate.read_adv_set(str(layout / "untargeted"), max_epsilon=16),
            evaluate.read_adv_set(str(layout / "targeted"))]
    victims = [ChannelModel("red", RED), ChannelModel("blue", BLUE)]
    ev = evaluate.evaluate(dataset, sets, victims, ["rs:0.0001:3", "median:3+bits:2"], batch_size=2)
    fields = ("images", "clean_correct", "adv_correct", "success_all", "success_clean_correct", "tianchi_score")
    for new, old in (("rs:0.0001:3", "none"), ("median:3+bits:2", "bits:2")):
        for attack in ("untargeted", "targeted"):
            for model in ("red", "blue"):
                got, expected = ev.result(attack, model, new), evaluation.result(attack, model, old)
                assert [getattr(got, f) for f in fields] == [getattr(expected, f) for f in fields], (new, attack, model)


def test_defended_zoo_model_evaluates(layout):
    from tfattack import models

    if "inception_v3" not in models.available():
        pytest.skip("inception_v3 is not registered")
    victim = models.load("inception_v3", random_weights=True)
    dataset = data.read_dataset(str(layout / "images")).select(["i0", "i1"])
    ev = evaluate.evaluate(dataset, [evaluate.read_adv_set(str(layout / "untargeted"))], [victim], ["jpeg:75"],
                            batch_size=2)
    assert [(r.model, r.defense, r.images) for r in ev.results] == [("inception_v3", "jpeg:75", 2)]
    clean = np.stack([data.load_image(p) for p in dataset.paths])
    expected = np.argmax(defenses.wrap(victim, "jpeg:75")(clean).numpy(), axis=1)
    np.testing.assert_array_equal(ev.clean_predictions[("inception_v3", "jpeg:75")], expected)


def test_report_shows_no_coverage_note_when_every_image_counted(layout, tmp_path):
    # i0..i3 have readable files in both sets: nothing is left out, so no cell carries "[N of M images]".
    dataset = data.read_dataset(str(layout / "images")).select(["i0", "i1", "i2", "i3"])
    sets = [evaluate.read_adv_set(str(layout / name)) for name in ("untargeted", "targeted")]
    ev = evaluate.evaluate(dataset, sets, [ChannelModel("red", RED)], ["none"])
    assert [(r.images, r.not_evaluated) for r in ev.results] == [(4, 0), (4, 0)]
    paths = report.write_report(ev, str(tmp_path / "report.md"), examples=0)
    text = open(paths["markdown"]).read()
    assert " of 4 images]" not in text and "| untargeted | red | none | 4 | 0 |" in text
    with open(paths["csv"]) as handle:
        assert [row["not_evaluated"] for row in csv.DictReader(handle)] == ["0", "0"]


def test_a_victims_numbers_behind_a_random_defense_do_not_depend_on_the_other_victims(layout):
    """A random defense's draws follow each image's ImageId, so a victim's predictions behind rp are the same whether
    it is evaluated alone or after another victim (and a run split by victims, or spread over workers, gives the same
    numbers)."""
    dataset = data.read_dataset(str(layout / "images"))
    sets = [evaluate.read_adv_set(str(layout / "untargeted"), max_epsilon=16)]
    both = evaluate.evaluate(dataset, sets, [ChannelModel("red", RED), ChannelModel("blue", BLUE)], ["rp", "rs:0.2:3"],
                             batch_size=2, seed=5)
    alone = evaluate.evaluate(dataset, sets, [ChannelModel("blue", BLUE)], ["rp", "rs:0.2:3"], batch_size=2, seed=5)
    for spec in ("rp", "rs:0.2:3"):
        np.testing.assert_array_equal(both.clean_predictions[("blue", spec)], alone.clean_predictions[("blue", spec)])
        np.testing.assert_array_equal(both.adv_predictions[("untargeted", "blue", spec)],
                                      alone.adv_predictions[("untargeted", "blue", spec)])


def test_a_sets_numbers_behind_a_random_defense_do_not_depend_on_the_other_sets_or_the_batches(layout, tmp_path):
    """Each image meets the draws of its ImageId: a set scored alone, after another set, or in other batches gets the
    same predictions behind rp and rs (so scores can be kept per set), and an adversarial file equal to its clean image
    gets the clean image's prediction (the same draw on both)."""
    dataset = data.read_dataset(str(layout / "images"))
    copy = tmp_path / "copy"
    shutil.copytree(layout / "images", copy)
    untargeted, targeted = (evaluate.read_adv_set(str(layout / name), max_epsilon=16)
                            for name in ("untargeted", "targeted"))
    unchanged = evaluate.read_adv_set(str(copy), max_epsilon=16)
    specs = ["rp", "rs:0.2:3", "bits:4+rp"]
    together = evaluate.evaluate(dataset, [untargeted, targeted, unchanged], [ChannelModel("blue", BLUE)], specs,
                                 batch_size=2, seed=5)
    alone = evaluate.evaluate(dataset, [unchanged, targeted], [ChannelModel("blue", BLUE)], specs, batch_size=3,
                              seed=5)
    for spec in specs:
        clean = together.clean_predictions[("blue", spec)]
        np.testing.assert_array_equal(alone.clean_predictions[("blue", spec)], clean)
        for name in ("targeted", "copy"):
            np.testing.assert_array_equal(alone.adv_predictions[(name, "blue", spec)],
                                          together.adv_predictions[(name, "blue", spec)])
        np.testing.assert_array_equal(together.adv_predictions[("copy", "blue", spec)], clean)
    # the draw is the ImageId's: i2's adversarial file behind rp, by hand
    adv = read(layout / "untargeted" / "i2.png")[None].astype(np.float32) / 255.0
    by_hand = ChannelModel("blue", BLUE)(defenses.parse("rp", 5)(adv, [defenses.id_key("i2")])).numpy().argmax()
    assert together.adv_predictions[("untargeted", "blue", "rp")][dataset.ids.index("i2")] == by_hand
    # the draws matter: another seed moves some prediction behind rp
    reseeded = evaluate.evaluate(dataset, [unchanged], [ChannelModel("blue", BLUE)], ["rp"], batch_size=2, seed=6)
    assert not np.array_equal(reseeded.clean_predictions[("blue", "rp")], together.clean_predictions[("blue", "rp")])


class CountingModel(ChannelModel):
    """A ChannelModel that counts the images it is shown."""

    def __init__(self, name, channel):
        super().__init__(name, channel)
        self.shown = 0

    def __call__(self, images):
        self.shown += int(images.shape[0])
        return super().__call__(images)


def test_known_clean_predictions_are_reused_not_predicted_again(layout):
    """A column's clean predictions from an earlier scoring of the same images give the same evaluation as predicting
    them, and the victim is shown none of that pair's clean images (behind rs, 3 noisy copies of each)."""
    dataset = data.read_dataset(str(layout / "images"))
    sets = [evaluate.read_adv_set(str(layout / "untargeted"), max_epsilon=16)]
    specs = ["none", "rs:0.01:3"]
    predicting, reusing = CountingModel("red", RED), CountingModel("red", RED)
    fresh = evaluate.evaluate(dataset, sets, [predicting], specs, batch_size=2, seed=5)
    known = {("red", "rs:0.01:3"): fresh.clean_predictions[("red", "rs:0.01:3")]}
    reused = evaluate.evaluate(dataset, sets, [reusing], specs, batch_size=2, seed=5, clean_predictions=known)
    assert reused.clean_predictions.keys() == fresh.clean_predictions.keys()
    for key, values in fresh.clean_predictions.items():
        np.testing.assert_array_equal(reused.clean_predictions[key], values)
    for key, values in fresh.adv_predictions.items():
        np.testing.assert_array_equal(reused.adv_predictions[key], values)
    assert json.dumps([r.to_dict() for r in reused.results]) == json.dumps([r.to_dict() for r in fresh.results])
    assert all(r.clean_correct > 0 for r in fresh.results)
    assert predicting.shown - reusing.shown == 3 * len(dataset)


@pytest.mark.parametrize("known,message", [
    ({("blue", "none"): np.zeros(6, np.int64)}, r"clean_predictions for \('blue', 'none'\) do not fit"),
    ({("red", "none"): np.zeros(5, np.int64)}, r"clean_predictions for \('red', 'none'\) do not fit")])
def test_known_clean_predictions_must_fit_the_pairs_and_images(layout, known, message):
    dataset = data.read_dataset(str(layout / "images"))
    sets = [evaluate.read_adv_set(str(layout / "untargeted"), max_epsilon=16)]
    with pytest.raises(ValueError, match=message):
        evaluate.evaluate(dataset, sets, [ChannelModel("red", RED)], ["none"], clean_predictions=known)


def test_known_clean_predictions_are_not_taken_with_a_scorer(layout):
    dataset = data.read_dataset(str(layout / "images"))
    sets = [evaluate.read_adv_set(str(layout / "untargeted"), max_epsilon=16)]
    with pytest.raises(ValueError, match="not on a scorer's workers"):
        evaluate.evaluate(dataset, sets, [ChannelModel("red", RED)], ["none"], scorer=object(),
                          clean_predictions={("red", "none"): np.zeros(6, np.int64)})
