"""scripts/evaluate.py as a subprocess: real DEV images (../shared), two random-weight zoo models, error paths."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared_data import NIPS17_DEV, NIPS17_DEV_CSV, nips17_dev_rows, requires_shared

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "evaluate.py"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
ENV.pop("TFATTACK_MODEL_DIR", None)
# Two different architectures, cheap on a CPU with random weights (no checkpoint needed).
VICTIMS = ("efficientnet_lite0", "inception_v3")

def run_evaluate(*args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=REPO)


def error_line(result):
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [l for l in result.stderr.strip().splitlines() if l.startswith("evaluate.py: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), np.int32)


def dev_input(tmp_path, count):
    """`count` real DEV images and their dev_dataset.csv rows in a fresh folder."""
    images = tmp_path / "in"
    images.mkdir()
    rows = list(nips17_dev_rows()[:count])
    with open(NIPS17_DEV_CSV, newline="") as handle:
        fields = next(csv.reader(handle))
    for row in rows:
        shutil.copy(NIPS17_DEV / "images" / f"{row['ImageId']}.png", images)
    with open(images / "dev_dataset.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return images, rows


def noisy_copy(images, rows, folder, amplitude, seed, record=None, overshoot=None):
    """Adversarial-looking PNGs: clean + uniform noise in [-amplitude, amplitude]; `overshoot` breaks the bound."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for k, row in enumerate(rows):
        clean = pixels(images / f"{row['ImageId']}.png")
        adv = clean + rng.integers(-amplitude, amplitude + 1, clean.shape)
        if overshoot is not None and k == 0:
            adv[0, 0, 0] = clean[0, 0, 0] + overshoot if clean[0, 0, 0] < 128 else clean[0, 0, 0] - overshoot
        Image.fromarray(np.clip(adv, 0, 255).astype(np.uint8)).save(folder / f"{row['ImageId']}.png")
    if record is not None:
        (folder / "run.json").write_text(json.dumps(record))


@requires_shared
def test_report_numbers_equal_a_direct_computation(tmp_path):
    import tfattack

    missing = sorted(set(VICTIMS) - set(tfattack.models.available()))
    if missing:
        pytest.skip(f"victim model(s) not registered: {', '.join(missing)}")
    images, rows = dev_input(tmp_path, 3)
    noisy_copy(images, rows, tmp_path / "noise", 8, 0, record={"targeted": False, "max_epsilon": 8}, overshoot=12)
    noisy_copy(images, rows, tmp_path / "aimed", 16, 1)
    report = tmp_path / "results" / "report.md"
    result = run_evaluate(f"--input_dir={images}", f"--adv_dirs={tmp_path / 'noise'},{tmp_path / 'aimed'}",
                          f"--models={','.join(VICTIMS)}", "--defenses=none,bits:4", f"--report={report}",
                          "--random_weights", "--targeted", "--batch_size=3", "--examples=2")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("report.md", "report.csv", "report.json", "report_success.png", "report_examples.png"):
        assert (report.parent / name).is_file(), name
    assert "WARNING: noise: 1 image(s) exceed the eps bound 8" in result.stderr

    # The same numbers, computed here: the same random-weight models on the same files.
    labels = np.array([int(r["TrueLabel"]) - 1 for r in rows])
    targets = np.array([int(r["TargetClass"]) - 1 for r in rows])
    order = np.argsort([r["ImageId"] for r in rows])  # the dataset is sorted by ImageId
    labels, targets, ids = labels[order], targets[order], [rows[i]["ImageId"] for i in order]
    clean = np.stack([pixels(images / f"{i}.png") for i in ids]).astype(np.float32) / 255
    with open(report.parent / "report.csv", newline="") as handle:
        table = {(r["attack"], r["model"], r["defense"]): r for r in csv.DictReader(handle)}
    assert len(table) == 2 * len(VICTIMS) * 2
    for victim in VICTIMS:
        model = tfattack.models.load(victim, random_weights=True)
        for defense in ("none", "bits:4"):
            def predict(batch):
                x = np.round(batch * 15) / 15 if defense == "bits:4" else batch
                return np.argmax(model(x.astype(np.float32)).numpy(), axis=1)

            clean_pred = predict(clean)
            for attack, targeted in (("noise", False), ("aimed", True)):
                adv_pixels = np.stack([pixels(tmp_path / attack / f"{i}.png") for i in ids])
                adv_pred = predict(adv_pixels.astype(np.float32) / 255)
                success = adv_pred == targets if targeted else adv_pred != labels
                correct = clean_pred == labels
                linf = np.abs(adv_pixels - clean * 255).reshape(3, -1).max(axis=1)
                score = np.where(adv_pred != labels, 2 * (2 - linf / 32), 0.0)
                if targeted:
                    score = np.where(adv_pred == targets, 5 * (2 - linf / 32), score)
                row = table[(attack, victim, defense)]
                assert row["targeted"] == str(targeted)
                assert int(row["images"]) == 3 and int(row["clean_correct"]) == correct.sum()
                assert int(row["adv_correct"]) == (adv_pred == labels).sum()
                assert int(row["success_all"]) == success.sum()
                assert int(row["success_clean_correct"]) == (success & correct).sum()
                assert float(row["tianchi_score"]) == pytest.approx(score.mean())
                assert float(row["linf_max"]) == pytest.approx(linf.max())
                assert int(row["eps_violations"]) == (1 if attack == "noise" else 0)
    text = report.read_text()
    assert "| noise (untargeted) |" in text and "| aimed (targeted) |" in text
    assert "targeted (--targeted flag)" in text and "eps bound 8 (run.json)" in text


def test_unknown_model_exits_2_with_the_known_names(tmp_path):
    import tfattack

    line = error_line(run_evaluate(f"--input_dir={tmp_path}", f"--adv_dirs={tmp_path}", "--models=no_such_net"))
    assert line == ("evaluate.py: error: --models: unknown model 'no_such_net'; known models: "
                    + ", ".join(n for n in tfattack.models.available() if not n.startswith("test_")))


def test_unknown_defense_exits_2_listing_the_forms(tmp_path):
    line = error_line(run_evaluate(f"--input_dir={tmp_path}", f"--adv_dirs={tmp_path}", "--models=inception_v3",
                                   "--defenses=none,blur:3"))
    assert line == ("evaluate.py: error: unknown defense 'blur:3'; valid forms: none, jpeg:QUALITY (integer 1-100), "
                    "bits:BITS (integer 1-8), rp, median:K (odd integer K >= 1), gauss:SIGMA (number > 0), "
                    "rs:SIGMA:N (sigma > 0, N >= 1 noisy copies), A+B+... (applied left to right, rs last)")


def test_label_models_without_clean_prediction_labels_exit_2(tmp_path):
    line = error_line(run_evaluate(f"--input_dir={tmp_path}", f"--adv_dirs={tmp_path}", "--models=inception_v3",
                                   "--label_models=efficientnet_lite0"))
    assert line == ("evaluate.py: error: --label_models only applies with --labels=clean_prediction (the labels are "
                    "the CSV's TrueLabel now)")


def test_missing_input_dir_and_missing_checkpoint_exit_2(tmp_path):
    line = error_line(run_evaluate(f"--input_dir={tmp_path / 'absent'}", f"--adv_dirs={tmp_path}",
                                   "--models=inception_v3"))
    assert line == f"evaluate.py: error: input_dir {tmp_path / 'absent'}: no such folder"
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    (images / "images.csv").write_text("ImageId,TrueLabel\na,1\n")
    adv = tmp_path / "adv"  # complete: a set with a missing file would stop the run before the checkpoint check
    adv.mkdir()
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(adv / "a.png")
    line = error_line(run_evaluate(f"--input_dir={images}", f"--adv_dirs={adv}", "--models=inception_v3",
                                   f"--checkpoints=inception_v3={tmp_path / 'none.ckpt'}"))
    assert line == (f"evaluate.py: error: --models: checkpoint {tmp_path / 'none.ckpt'} for model 'inception_v3' does "
                    f"not exist; download it with: tfattack-download --models=inception_v3")


def test_recorded_labels_missing_from_an_adv_dir_exit_2(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    adv = tmp_path / "adv"
    adv.mkdir()
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(adv / "a.png")
    line = error_line(run_evaluate(f"--input_dir={images}", f"--adv_dirs={adv}", "--models=inception_v3",
                                   "--labels=clean_prediction"))
    assert line == ("evaluate.py: error: labels from the attack runs' clean predictions: adv set(s) adv record none "
                    "(run.json predicted_labels; written when the attacked images had no ground truth): give the "
                    "surrogate (--label_models) instead")


def small_input(tmp_path, names=("a", "b")):
    """Tiny labelled clean images (each model resizes internally) and a complete adversarial copy of them."""
    images, adv = tmp_path / "in", tmp_path / "adv"
    images.mkdir()
    adv.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        clean = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
        Image.fromarray(clean).save(images / f"{name}.png")
        Image.fromarray(np.clip(clean.astype(int) + 4, 0, 255).astype(np.uint8)).save(adv / f"{name}.png")
    (images / "images.csv").write_text("ImageId,TrueLabel\n" + "".join(f"{n},{k + 1}\n" for k, n in enumerate(names)))
    return images, adv


def test_missing_adversarial_file_stops_before_any_model_loads(tmp_path):
    images, adv = small_input(tmp_path)
    (adv / "b.png").unlink()
    report = tmp_path / "results" / "report.md"
    # The checkpoint does not exist: a run that loaded the model first would fail on it instead.
    line = error_line(run_evaluate(f"--input_dir={images}", f"--adv_dirs={adv}", "--models=inception_v3",
                                   f"--checkpoints=inception_v3={tmp_path / 'none.ckpt'}", f"--report={report}"))
    assert line == (f"evaluate.py: error: adv dir {adv}: 1 of the 2 images of {images} have no adversarial file "
                    f"(b.png): finish the attack (rerun attack.py), or pass --allow_partial to rate the others")
    assert not report.parent.exists()


def test_allow_partial_rates_the_images_there_and_shows_the_coverage(tmp_path):
    images, adv = small_input(tmp_path)
    (adv / "b.png").unlink()
    report = tmp_path / "results" / "report.md"
    result = run_evaluate(f"--input_dir={images}", f"--adv_dirs={adv}", "--models=efficientnet_lite0",
                          f"--report={report}", "--allow_partial", "--examples=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "error:" not in result.stderr
    rows = [l for l in result.stdout.splitlines() if l.startswith("adv\tefficientnet_lite0\tnone\t")]
    assert len(rows) == 1 and rows[0].endswith("(1 of 2 images, 1 NOT EVALUATED)"), result.stdout
    text = report.read_text()
    assert text.count("[1 of 2 images]") == 1
    assert "| adv | efficientnet_lite0 | none | 1 | 1 |" in text
    with open(report.parent / "report.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["images"], row["not_evaluated"]) == ("1", "1")


def test_unreadable_adversarial_file_exits_1_after_writing_the_report(tmp_path):
    images, adv = small_input(tmp_path)
    whole = (adv / "b.png").read_bytes()
    (adv / "b.png").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    report = tmp_path / "results" / "report.md"
    args = [f"--input_dir={images}", f"--adv_dirs={adv}", "--models=efficientnet_lite0", f"--report={report}",
            "--examples=0"]
    strict = run_evaluate(*args)
    assert strict.returncode == 1, strict.stderr[-3000:]
    errors = [l for l in strict.stderr.splitlines() if l.startswith("evaluate.py:")]
    assert errors == ["evaluate.py: error: 1 adversarial image(s) could not be read (adv: 1; the report's notes name "
                      "them): the rates are over the others; pass --allow_partial to accept that"], strict.stderr
    text = report.read_text()
    assert "[1 of 2 images]" in text and f"{adv / 'b.png'}" in text
    report.unlink()
    partial = run_evaluate(*args, "--allow_partial")
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert "error:" not in partial.stderr and "(1 of 2 images, 1 NOT EVALUATED)" in partial.stdout
    assert report.is_file()
