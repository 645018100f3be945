"""scripts/attack.py end to end, as a subprocess, on real DEV images and a real model (EfficientNet-Lite0)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SCRIPT = REPO / "scripts" / "attack.py"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def run_attack(*args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=REPO)


def error_line(result):
    lines = [l for l in result.stderr.strip().splitlines() if l.startswith("attack.py: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def make_input(tmp_path, count=3, csv_rows=None):
    """A NIPS'17-style folder: `count` bundled sample images and the matching dev_dataset.csv rows."""
    images = tmp_path / "in"
    images.mkdir()
    rows = list(csv.DictReader(open(SAMPLES / "dev_dataset.csv")))[:count]
    for row in rows:
        shutil.copy(SAMPLES / "images" / f"{row['ImageId']}.png", images)
    rows = csv_rows(rows) if csv_rows else rows
    with open(images / "dev_dataset.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return images, rows


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), np.int32)


COMMON = ["--models=efficientnet_lite0", "--attack=mi_fgsm", "--num_iter=2", "--batch_size=2", "--max_epsilon=8"]


def test_attack_writes_legal_pngs_and_run_json(tmp_path):
    images, rows = make_input(tmp_path, 3)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", *COMMON)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 written, 0 already done, 0 failed" in result.stderr
    for row in rows:
        clean, adv = pixels(images / f"{row['ImageId']}.png"), pixels(out / f"{row['ImageId']}.png")
        assert adv.shape == clean.shape
        linf = np.abs(adv - clean).max()
        assert 0 < linf <= 8, f"{row['ImageId']}: L-inf {linf}"
    record = json.loads((out / "run.json").read_text())
    assert record["max_epsilon"] == 8 and record["images_written"] == 3 and record["label_source"] == "metadata"
    assert record["attack_config"]["name"] == "mi_fgsm" and record["attack_config"]["steps"] == 2
    assert record["attack_config"]["update"] == "mi:decay=1.0" and abs(record["attack_config"]["eps"] - 8 / 255) < 1e-9
    assert record["models"][0]["name"] == "efficientnet_lite0" and record["flags"]["batch_size"] == 2
    assert record["environment"]["tensorflow"] and record["images_per_second"] > 0
    assert record["environment"]["TF_ENABLE_ONEDNN_OPTS"] == ENV.get("TF_ENABLE_ONEDNN_OPTS")
    from tfattack import runs
    assert record["environment"]["tfattack_sources"] == runs.source_digest()  # the code that made the images
    assert sorted(os.listdir(images)) == sorted([f"{r['ImageId']}.png" for r in rows] + ["dev_dataset.csv"])
    # A rerun skips finished images; --overwrite attacks them again.
    again = run_attack(f"--input_dir={images}", f"--output_dir={out}", *COMMON)
    assert again.returncode == 0 and "0 written, 3 already done" in again.stderr


def test_piece_flags_override_the_preset_and_unlabelled_folders_use_predictions(tmp_path):
    images, rows = make_input(tmp_path, 2)
    (images / "dev_dataset.csv").unlink()
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", *COMMON, "--momentum=0.5",
                        "--ti_kernel=5", "--augmentations=flip,noise")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "clean ensemble's predictions" in result.stderr
    record = json.loads((out / "run.json").read_text())
    config = record["attack_config"]
    assert config["update"] == "mi:decay=0.5" and config["filters"] == "ti:kernel=5,nsig=3.0"
    assert config["transforms"].startswith("augment:ops=flip+noise,mode=all,prob=1.0,")
    assert record["label_source"] == "clean_prediction"
    assert set(record["predicted_labels"]) == {r["ImageId"] for r in rows}
    # A resumed run that writes nothing keeps the label each image was attacked with, as its record entry says:
    # with one image to redo, the entry of the other is kept (the derived predicted_labels follow the entries) ...
    again_args = [f"--input_dir={images}", f"--output_dir={out}", *COMMON, "--momentum=0.5", "--ti_kernel=5",
                  "--augmentations=flip,noise"]
    first_id, second_id = sorted(record["predicted_labels"])
    kept = json.loads(json.dumps(record))
    kept["images"][first_id]["label"] = (record["images"][first_id]["label"] + 1) % 1000
    (out / "run.json").write_text(json.dumps(kept))
    (out / f"{second_id}.png").unlink()
    again = run_attack(*again_args)
    assert again.returncode == 0 and "1 written, 1 already done" in again.stderr, again.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["predicted_labels"] == {
        first_id: kept["images"][first_id]["label"], second_id: record["predicted_labels"][second_id]}
    # ... and a finished folder is only read: its record is left as it is.
    finished = (out / "run.json").read_bytes()
    again = run_attack(*again_args)
    assert again.returncode == 0 and "0 written, 2 already done" in again.stderr, again.stderr[-3000:]
    assert (out / "run.json").read_bytes() == finished
    # Without a record, images already there are not trusted: the run stops before any work.
    (out / "run.json").unlink()
    again = run_attack(*again_args)
    assert again.returncode == 2 and "no run record says how they were made" in error_line(again)


def test_component_flags_compose_and_are_recorded_as_spec_strings(tmp_path):
    images, rows = make_input(tmp_path, 2)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", "--models=efficientnet_lite0",
                        "--attack=bsr", "--num_iter=2", "--transforms=bsr:copies=2,di:0.5", "--estimator=pgn:2",
                        "--filters=ti:5", "--norm=l2", "--max_epsilon=600")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "run.json").read_text())["attack_config"]
    assert config["name"] == "bsr" and config["norm"] == "l2" and abs(config["eps"] - 600 / 255) < 1e-9
    assert config["transforms"].startswith("bsr:blocks=2,max_angle=24.0,copies=2,di:prob=0.5,")
    assert config["estimators"] == "pgn:samples=2,zeta=3.0,delta=0.5" and config["filters"] == "ti:kernel=5,nsig=3.0"
    for row in rows:  # every saved PNG is inside the L2 ball (pixel units)
        delta = pixels(out / f"{row['ImageId']}.png") - pixels(images / f"{row['ImageId']}.png")
        assert 0 < np.sqrt(np.sum(delta.astype(np.float64) ** 2)) <= 600 + 1e-6


def test_admix_on_small_batches_is_warned_in_one_line():
    import tfattack
    from tfattack import pipeline

    admix, mi = tfattack.attacks.build("admix_ti_dim"), tfattack.attacks.build("mi_fgsm")
    assert pipeline.admix_batch_warning(admix.config, 10, 1000) is None
    assert pipeline.admix_batch_warning(mi.config, 2, 1000) is None  # no Admix, no warning
    line = pipeline.admix_batch_warning(admix.config, 2, 1000)
    assert "at most 2 image(s) (batch size 2, 1000 image(s))" in line and "with at most 1 other(s)" in line
    assert "at most 3 image(s)" in pipeline.admix_batch_warning(admix.config, 10, 3)  # a small folder
    line = pipeline.admix_batch_warning(admix.config, 10, 1000, replicas=2)  # each replica attacks 5
    assert "at most 5 image(s) (batch size 10, 1000 image(s), 2 replicas)" in line and line.endswith("per replica")
    assert pipeline.admix_batch_warning(admix.config, 16, 1000, replicas=2) is None
    assert pipeline.admix_batch_warning(admix.config, 2, 0) is None  # nothing to attack


def test_attack_script_warns_of_admix_on_a_small_folder(tmp_path):
    images, rows = make_input(tmp_path, 2)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", "--models=efficientnet_lite0",
                        "--attack=admix", "--num_iter=1", "--batch_size=10", "--max_epsilon=8")
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("attack.py: warning:")]
    assert "at most 2 image(s) (batch size 10, 2 image(s))" in line and "2 written" in result.stderr


def test_interrupted_run_resumes_without_half_written_files(tmp_path):
    images, rows = make_input(tmp_path, 4)
    out = tmp_path / "out"
    args = [sys.executable, str(SCRIPT), f"--input_dir={images}", f"--output_dir={out}",
            "--models=efficientnet_lite0", "--attack=i_fgsm", "--num_iter=3", "--batch_size=1"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=REPO)
    deadline = time.time() + 600
    def finished():  # completed outputs; temporaries are dot files renamed into place when complete
        return sorted(p.name for p in out.iterdir() if p.suffix == ".png" and not p.name.startswith("."))

    while time.time() < deadline and not (out.exists() and finished()):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = finished()
    assert 1 <= len(done_before) < 4
    for name in done_before:  # every file present is a complete, readable PNG
        assert pixels(out / name).shape == (299, 299, 3)
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", "--models=efficientnet_lite0",
                        "--attack=i_fgsm", "--num_iter=3", "--batch_size=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{4 - len(done_before)} written, {len(done_before)} already done" in result.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        [f"{r['ImageId']}.png" for r in rows] + ["run.json"])


def test_odd_images_are_converted_and_corrupt_ones_skipped(tmp_path):
    images, rows = make_input(tmp_path, 3)
    grey_id, rgba_id, broken_id = (r["ImageId"] for r in rows)
    Image.open(images / f"{grey_id}.png").convert("L").resize((200, 160)).save(images / f"{grey_id}.png")
    Image.open(images / f"{rgba_id}.png").convert("RGBA").save(images / f"{rgba_id}.png")
    truncated = (images / f"{broken_id}.png").read_bytes()[:3000]  # header intact, pixel data cut
    (images / f"{broken_id}.png").write_bytes(truncated)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", *COMMON, f"--csv={images / 'dev_dataset.csv'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert pixels(out / f"{grey_id}.png").shape == (160, 200, 3)
    assert np.abs(pixels(out / f"{rgba_id}.png") - pixels(images / f"{rgba_id}.png")).max() <= 8
    record = json.loads((out / "run.json").read_text())
    assert [broken_id in f["image"] for f in record["failed_images"]] == [True]
    assert not (out / f"{broken_id}.png").exists() and "2 written" in result.stderr


@pytest.mark.parametrize("case", ["missing_input", "empty_input", "output_inside_input", "unknown_model",
                                  "unknown_attack", "epsilon_range", "missing_columns", "label_range",
                                  "missing_checkpoint", "targeted_without_targets", "unknown_component",
                                  "unknown_component_key", "slot_set_twice", "bad_l2_epsilon",
                                  "ray_flag_without_ray", "logical_cpus_without_mirrored"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    images, rows = make_input(tmp_path, 1)
    out = tmp_path / "out"
    args = [f"--input_dir={images}", f"--output_dir={out}", *COMMON]
    expect = {
        "missing_input": "no such folder", "empty_input": "no images", "output_inside_input": "inside input_dir",
        "unknown_model": "unknown model 'inceptoin_v3'; did you mean 'inception_v3'?; known models:", "unknown_attack": "unknown attack 'mi_fgsn'",
        "epsilon_range": "--max_epsilon must be in (0, 255]", "missing_columns": "TrueLabel",
        "label_range": "1..1000", "missing_checkpoint": "tfattack-download --models=inception_v3",
        "targeted_without_targets": "target",
        "unknown_component": "--transforms: unknown transform 'bsrr'; did you mean 'bsr'?; valid ones: ",
        "unknown_component_key": "--estimator: estimator 'pgn': unknown key 'n'; valid keys: samples, zeta, delta",
        "slot_set_twice": "--transforms and --diversity_prob both set the transforms",
        "bad_l2_epsilon": "--max_epsilon must be a finite L2 radius > 0",
        # --worker_cpus has a value by default: given, it is still a flag the local engine would ignore.
        "logical_cpus_without_mirrored": "--logical_cpus=2 only applies with --strategy=mirrored",
        "ray_flag_without_ray": "--worker_gpus and --worker_cpus only apply with --engine=ray",
    }[case]
    if case == "missing_input":
        args[0] = f"--input_dir={tmp_path / 'nope'}"
    elif case == "empty_input":
        (tmp_path / "empty").mkdir()
        args[0] = f"--input_dir={tmp_path / 'empty'}"
    elif case == "output_inside_input":
        args[1] = f"--output_dir={images / 'adv'}"
    elif case == "unknown_model":
        args.append("--models=inceptoin_v3")
    elif case == "unknown_attack":
        args.append("--attack=mi_fgsn")
    elif case == "epsilon_range":
        args.append("--max_epsilon=300")
    elif case == "missing_columns":
        (images / "dev_dataset.csv").write_text("ImageId,URL\n" + f"{rows[0]['ImageId']},x\n")
    elif case == "label_range":
        lines = (images / "dev_dataset.csv").read_text().splitlines()
        header = lines[0].split(",")
        values = lines[1].split(",")
        values[header.index("TrueLabel")] = "1001"
        (images / "dev_dataset.csv").write_text("\n".join([lines[0], ",".join(values)]) + "\n")
    elif case == "missing_checkpoint":
        args += ["--models=inception_v3", f"--checkpoints=inception_v3={tmp_path / 'no.ckpt'}"]
    elif case == "targeted_without_targets":
        (images / "dev_dataset.csv").write_text("ImageId,TrueLabel\n" + f"{rows[0]['ImageId']},{rows[0]['TrueLabel']}\n")
        args.append("--targeted")
    elif case == "unknown_component":
        args.append("--transforms=di:0.5,bsrr")
    elif case == "unknown_component_key":
        args.append("--estimator=pgn:n=20")
    elif case == "slot_set_twice":
        args += ["--transforms=di:0.5", "--diversity_prob=0.7"]
    elif case == "bad_l2_epsilon":
        args += ["--norm=l2", "--max_epsilon=-3"]
    elif case == "logical_cpus_without_mirrored":
        args.append("--logical_cpus=2")
    elif case == "ray_flag_without_ray":
        args += ["--worker_cpus=1", "--worker_gpus=0.5"]
    before = sorted(os.listdir(images)) if images.exists() else []
    result = run_attack(*args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert expect in error_line(result)
    assert "Traceback" not in result.stderr
    if images.exists():
        assert sorted(os.listdir(images)) == before


def test_shards_cover_every_image_once_and_merge(tmp_path):
    images, rows = make_input(tmp_path, 3)
    out = tmp_path / "out"
    for index in range(2):
        result = run_attack(f"--input_dir={images}", f"--output_dir={out}", *COMMON, "--num_shards=2",
                            f"--shard_index={index}")
        assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((out / f"run.shard-{i}-of-2.json").read_text()) for i in range(2)]
    ids = [i for r in records for i in r["shard"]["image_ids"]]
    assert sorted(ids) == sorted(r["ImageId"] for r in rows) and len(ids) == len(set(ids)) == 3
    merged = subprocess.run([sys.executable, str(REPO / "scripts" / "merge_runs.py"), f"--output_dir={out}"],
                            capture_output=True, text=True, env=ENV, cwd=REPO)
    assert merged.returncode == 0, merged.stderr[-2000:]
    record = json.loads((out / "run.json").read_text())
    assert record["images_written"] == 3 and sorted(record["shard"]["image_ids"]) == sorted(ids)


def test_mirrored_strategy_on_logical_cpus_matches_single_device(tmp_path):
    images, rows = make_input(tmp_path, 3)
    outputs = {}
    for strategy in ("none", "mirrored"):
        out = tmp_path / strategy
        result = run_attack(f"--input_dir={images}", f"--output_dir={out}", "--models=efficientnet_lite0",
                            "--attack=i_fgsm", "--num_iter=2", "--batch_size=3", "--max_epsilon=8",
                            f"--strategy={strategy}", *(["--logical_cpus=2"] if strategy == "mirrored" else []))
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[strategy] = {r["ImageId"]: pixels(out / f"{r['ImageId']}.png") for r in rows}
    assert json.loads((tmp_path / "mirrored" / "run.json").read_text())["settings"]["replicas"] == 2
    for row in rows:
        single, mirrored = outputs["none"][row["ImageId"]], outputs["mirrored"][row["ImageId"]]
        assert np.abs(mirrored - pixels(images / f"{row['ImageId']}.png")).max() <= 8
        # Same deterministic attack, split over two replicas: equal up to rare float sign flips.
        assert np.mean(single == mirrored) > 0.99
