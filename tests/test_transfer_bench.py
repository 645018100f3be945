"""scripts/benchmark.py --what=transfer on a few real images: the table's files, and exact reproducibility."""

import dataclasses
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from pathlib import Path
from PIL import Image

from shared_data import requires_shared
from test_attack_script import ENV, REPO


# Byte-identical reruns are promised with TensorFlow's oneDNN rewrites off (README, "Transfer"): with them on, the
# graph oneDNN runs is not the same in every process and about 1 process in 160 crafts other ensemble DI-MI bits.
REPRODUCIBLE_ENV = dict(ENV, TF_ENABLE_ONEDNN_OPTS="0")


def run_transfer(output_dir, *extra):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--what=transfer", "--num_images=2",
                           "--num_images_expensive=2", "--attack_names=FGSM,DI-MI", f"--output_dir={output_dir}",
                           *extra],
                          capture_output=True, text=True, env=REPRODUCIBLE_ENV, cwd=REPO, timeout=1800)


def digests(folder: Path):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.png"))}


@requires_shared
def test_transfer_table_is_written_and_reproduced_exactly(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    # --plan lists the sets, their passes and what the folder holds, and crafts and writes nothing.
    result = run_transfer(first, "--plan")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        f"single/FGSM: 1 passes/image x 2 images; crafted 0/2 in {first / 'transfer' / 'single' / 'FGSM'}",
        f"single/DI-MI: 10 passes/image x 2 images; crafted 0/2 in {first / 'transfer' / 'single' / 'DI-MI'}",
        f"ensemble/FGSM: 3 passes/image (1 per member) x 2 images; crafted 0/2 in "
        f"{first / 'transfer' / 'ensemble' / 'FGSM'}",
        f"ensemble/DI-MI: 30 passes/image (10 per member) x 2 images; crafted 0/2 in "
        f"{first / 'transfer' / 'ensemble' / 'DI-MI'}",
        "4 sets to craft, 88 single-network image passes (88 still to craft, 0 sets complete)"]
    assert not first.exists()
    result = run_transfer(first)
    assert result.returncode == 0, result.stderr[-3000:]
    # The second folder is crafted and scored in two runs (--craft_only, then a scoring run that reuses the files).
    result = run_transfer(second, "--craft_only")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (second / "transfer.json").exists() and len(digests(second / "transfer")) == 8
    record = json.loads((second / "transfer" / "ensemble" / "DI-MI" / "run.json").read_text())
    assert record["environment"]["TF_ENABLE_ONEDNN_OPTS"] == "0" and record["surrogates"][0] == "efficientnet_lite0"
    result = run_transfer(second)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 crafted" in result.stderr and "(2 already there)" in result.stderr
    result = run_transfer(second, "--plan")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[1] == (f"single/DI-MI: 10 passes/image x 2 images; crafted 2/2 in "
                                             f"{second / 'transfer' / 'single' / 'DI-MI'}")
    assert result.stdout.splitlines()[-1].startswith(
        "4 sets to craft, 88 single-network image passes (0 still to craft, 4 sets complete)")
    payload = json.loads((first / "transfer.json").read_text())
    assert {(r["source"], r["attack"]) for r in payload["rows"]} == {
        (s, a) for s in ("single", "ensemble") for a in ("FGSM", "DI-MI")}
    assert {(r["victim"], r["defense"]) for r in payload["rows"]} == {
        ("efficientnet_lite2", "none"), ("mobilenet_v2_quant_int8", "none"),
        ("mobilenet_v1_075_192_quant_int8", "none"), ("efficientnet_lite2", "jpeg:75"), ("efficientnet_lite2", "bits:4"),
        ("efficientnet_lite2", "rp"), ("efficientnet_lite2", "median:3")}
    assert all(r["linf_max"] <= 16 and r["violations"] == 0 for r in payload["rows"])
    for name in ("transfer.md", "transfer.csv", "transfer.png"):
        assert (first / name).stat().st_size > 0
    from tfattack import runs
    assert payload["crafted_by"] == {f"{s}/{a}": {"sources": [runs.source_digest()],
                                                  "kernels": ["CPU TF_ENABLE_ONEDNN_OPTS=0"]}
                                     for s in ("single", "ensemble") for a in ("FGSM", "DI-MI")}
    assert (f"Every set was crafted by the tfattack sources {runs.source_digest()} (`runs.source_digest`). Every set "
            "was crafted by the kernels CPU TF_ENABLE_ONEDNN_OPTS=0 (`runs.kernels`).") in (first / "transfer.md").read_text()
    # Same seed, fresh folder: the same adversarial files and the same numbers.
    assert digests(first / "transfer") == digests(second / "transfer") and len(digests(first / "transfer")) == 8
    assert payload["rows"] == json.loads((second / "transfer.json").read_text())["rows"]
    # A rerun of the same command scores nothing again: each image subset's scores are kept under scores/.
    csv_before = (first / "transfer.csv").read_text()
    result = run_transfer(first)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already scored" in result.stderr and "scoring on the victims" not in result.stderr
    assert json.loads((first / "transfer.json").read_text())["rows"] == payload["rows"]
    assert (first / "transfer.csv").read_text() == csv_before  # same columns, same order
    # Images crafted at eps 16 are not reused for another eps: the run stops before writing anything.
    result = run_transfer(first, "--max_epsilon=4", "--craft_only")
    assert result.returncode == 2 and digests(first / "transfer") == digests(second / "transfer")
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("benchmark.py: error:")]
    assert line.startswith(f"benchmark.py: error: output_dir {first / 'transfer' / 'single' / 'FGSM'} was made with "
                           f"other settings (attack.eps 0.06274509803921569 there, 0.01568627450980392 now; ")
    assert line.endswith("); use another --output_dir, or delete that set's folder to craft it again")
    # A set record cut short (a full disk, an edit) is one line naming it, not a traceback; nothing is crafted.
    record = first / "transfer" / "single" / "FGSM" / "run.json"
    record.write_text(record.read_text()[:40])
    result = run_transfer(first, "--craft_only")
    assert result.returncode == 2 and digests(first / "transfer") == digests(second / "transfer")
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("benchmark.py: error:")]
    assert line.startswith(f"benchmark.py: error: {record}: not a readable run record (") and "Traceback" not in result.stderr
    assert line.endswith("; use another --output_dir, or delete that set's folder to craft it again")



def legacy_set(folder: Path, ids, max_epsilon):
    """A single-source FGSM set as the tfattack 0.1 bench left it: PNGs and its run.json (attack_config,
    max_epsilon, targeted, surrogates, crafting, environment; no format, settings or per-image entries)."""
    from shared_data import NIPS17_DEV
    from tfattack import data
    from tfattack.bench import transfer

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id in ids:
        clean = np.asarray(Image.open(NIPS17_DEV / "images" / f"{image_id}.png").convert("RGB"), np.int32)
        step = rng.choice([-max_epsilon, max_epsilon], clean.shape)
        data.write_png(np.clip(clean + step, 0, 255).astype(np.float32) / 255, str(folder / f"{image_id}.png"))
    record = {"attack_config": transfer.build_attack("FGSM", 0, max_epsilon).config.to_dict(),
              "max_epsilon": max_epsilon, "targeted": False, "surrogates": ["efficientnet_lite0"],
              "crafting": {"images": len(ids), "seconds": 7.5}, "environment": {"tensorflow": tf.__version__}}
    (folder / "run.json").write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*.png"))}


def bench_ids(count=2):
    """The images a bench run with --num_images=count crafts: the first of the DEV set in ImageId order."""
    from shared_data import NIPS17_DEV
    from tfattack import data

    return list(data.read_dataset(str(NIPS17_DEV / "images"), csv=str(NIPS17_DEV / "dev_dataset.csv")).ids[:count])


def craft_fgsm(tmp_path, monkeypatch, said, max_epsilon=16):
    from shared_data import NIPS17_DEV, SHARED
    from tfattack.bench import transfer

    # run() makes TF ops deterministic process-wide; nothing is crafted here, so this process is left as it is.
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: None)
    return transfer.run(str(NIPS17_DEV), str(SHARED / "real_models"), str(tmp_path / "transfer"), num_images=2,
                        num_images_expensive=2, attacks=["FGSM"], sources=["single"], max_epsilon=max_epsilon,
                        craft_only=True, log=said.append)


@requires_shared
def test_a_set_crafted_by_the_0_1_bench_is_reused_with_its_crafting_time(tmp_path, monkeypatch):
    ids = bench_ids()
    folder = tmp_path / "transfer" / "single" / "FGSM"
    before = legacy_set(folder, ids, 16)
    said = []
    assert craft_fgsm(tmp_path, monkeypatch, said) is None
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*.png"))}
    assert after == before  # not one file written again
    assert any(l.startswith("transfer: single FGSM: 0 crafted in ") and l.endswith(" s (2 already there)")
               for l in said), said
    assert any(l.startswith("transfer: single FGSM: ") and "written by tfattack 0.1" in l for l in said), said
    record = json.loads((folder / "run.json").read_text())
    # its time is kept, and its code is the one 0.1 never recorded (this run wrote nothing)
    assert record["format"] == 2 and record["crafting"] == {"images": 2, "seconds": 7.5, "sources": ["unrecorded"],
                                                       "kernels": ["unrecorded"]}
    assert sorted(record["images"]) == ids and all(e["adopted"] == "tfattack 0.1 record" for e in record["images"].values())
    assert record["settings"]["max_epsilon"] == 16 and record["settings"]["models"][0]["name"] == "efficientnet_lite0"


@requires_shared
def test_a_0_1_set_crafted_at_another_eps_is_refused_in_one_line(tmp_path, monkeypatch):
    from tfattack.record import RecordError

    folder = tmp_path / "transfer" / "single" / "FGSM"
    before = legacy_set(folder, bench_ids(), 16)
    record = (folder / "run.json").read_text()
    with pytest.raises(RecordError) as err:
        craft_fgsm(tmp_path, monkeypatch, [], max_epsilon=4)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"output_dir {folder} was made with other settings (")
    assert "max_epsilon 16.0 there, 4.0 now" in line
    # benchmark.py has no --overwrite: the advice is the bench's own.
    assert line.endswith("); use another --output_dir, or delete that set's folder to craft it again")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*.png"))} == before
    assert (folder / "run.json").read_text() == record

@requires_shared
def test_kept_scores_are_keyed_by_the_files_the_settings_and_the_set_order(tmp_path):
    import os
    import shutil

    from shared_data import NIPS17_DEV
    from tfattack import data
    from tfattack.bench import transfer

    full = data.read_dataset(str(NIPS17_DEV / "images"), csv=str(NIPS17_DEV / "dev_dataset.csv"))
    dataset = full.select(full.ids[:2])
    keys = [("single", "FGSM"), ("single", "DI-MI")]
    folders = [str(tmp_path / s / a) for s, a in keys]
    for folder in folders:
        os.makedirs(folder)
        for image_id in dataset.ids:
            with open(data.output_path(folder, image_id), "wb") as f:
                f.write(b"png")
    key = transfer.score_key(dataset, keys, folders, seed=0, batch_size=10)
    assert transfer.score_key(dataset, keys, folders, seed=0, batch_size=10) == key
    assert transfer.score_key(dataset, keys, folders, seed=1, batch_size=10) != key
    assert transfer.score_key(dataset, keys[::-1], folders[::-1], seed=0, batch_size=10) != key
    assert transfer.score_key(full.select(full.ids[:3]), keys, folders, seed=0, batch_size=10) != key
    assert transfer.score_key(dataset, keys, folders, seed=0, batch_size=10, victims="other weights") != key
    with pytest.MonkeyPatch.context() as patch:  # other kernels: predictions that may differ in borderline images
        patch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
        assert transfer.score_key(dataset, keys, folders, seed=0, batch_size=10) != key
    # Targeted sets are scored by target hits: their scores never stand for untargeted ones, nor for other targets.
    targeted = transfer.score_key(dataset, keys, folders, seed=0, batch_size=10, targeted=True)
    assert targeted != key
    retargeted = dataclasses.replace(dataset, targets=dataset.targets[::-1].copy())
    assert transfer.score_key(retargeted, keys, folders, seed=0, batch_size=10, targeted=True) != targeted
    assert transfer.score_key(retargeted, keys, folders, seed=0, batch_size=10) == key
    # The files' bytes count, not their times or places: a dataset unpacked again (new mtimes) or sets copied to
    # another folder keep their scores; one changed byte of any image does not.
    clean_copy = tmp_path / "clean"
    clean_copy.mkdir()
    for path in dataset.paths:
        shutil.copyfile(path, clean_copy / os.path.basename(path))
        os.utime(clean_copy / os.path.basename(path), ns=(1, 1))
    unpacked = data.read_dataset(str(clean_copy), csv=str(NIPS17_DEV / "dev_dataset.csv"))
    assert unpacked.paths != dataset.paths
    assert transfer.score_key(unpacked, keys, folders, seed=0, batch_size=10) == key
    copies = [shutil.copytree(folder, str(tmp_path / "copy" / str(i))) for i, folder in enumerate(folders)]
    assert transfer.score_key(dataset, keys, copies, seed=0, batch_size=10) == key
    rewritten = data.output_path(folders[1], dataset.ids[1])
    os.utime(rewritten, ns=(1, 1))
    assert transfer.score_key(dataset, keys, folders, seed=0, batch_size=10) == key
    with open(rewritten, "wb") as f:  # a re-crafted image: same size, other bytes
        f.write(b"pnh")
    assert transfer.score_key(dataset, keys, folders, seed=0, batch_size=10) != key
    with open(clean_copy / os.path.basename(dataset.paths[0]), "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    assert transfer.score_key(unpacked, keys, copies, seed=0, batch_size=10) != key
    os.remove(rewritten)
    assert transfer.score_key(dataset, keys, folders, seed=0, batch_size=10) != key


@requires_shared
def test_victim_fingerprint_tells_weights_apart_and_is_stable():
    import tfattack
    from shared_data import SHARED
    from tfattack.bench import transfer

    lite0, mobilenet = (tfattack.models.load(n, model_dir=str(SHARED / "real_models"))
                        for n in ("efficientnet_lite0", "mobilenet_v1_075"))
    first = transfer.victim_fingerprint([lite0, mobilenet])
    assert first == transfer.victim_fingerprint([lite0, mobilenet]) and first.startswith("efficientnet_lite0:")
    kernel = mobilenet.variables[0]  # conv1/kernel: other weights of the same architecture
    kernel.assign_add(0.5 * tf.ones_like(kernel))
    assert transfer.victim_fingerprint([lite0, mobilenet]) != first


def test_unreadable_kept_scores_are_a_miss_said_in_one_line(tmp_path):
    from tfattack.bench import transfer

    said = []
    path = tmp_path / "scores.json"
    assert transfer._read_kept_scores(str(path), 2, 5, said.append) is None and not said  # none kept yet
    row = {k: i for i, k in enumerate(reversed(transfer.ROW_FIELDS))}
    path.write_text(json.dumps([row], sort_keys=True))
    (read,) = transfer._read_kept_scores(str(path), 2, 5, said.append)
    assert list(read) == list(transfer.ROW_FIELDS) and read == row and said[-1].endswith(f"already scored ({path})")
    for broken in ('[{"source": "single"', '[{"source": "single"}]', '[3]', '{"rows": 1}'):
        path.write_text(broken)
        said.clear()
        assert transfer._read_kept_scores(str(path), 2, 5, said.append) is None
        (line,) = said
        assert line.startswith(f"transfer: kept scores {path} are unreadable (") and line.endswith("); scoring again")


def test_fgsm_stays_one_step_and_iterative_attacks_take_ten():
    from tfattack.bench import transfer

    assert transfer.build_attack("FGSM", 0).config.steps == 1
    assert transfer.build_attack("I-FGSM", 0).config.steps == 10
    assert transfer.build_attack("VMI-TI-DIM", 0).config.filters[0].kernel == 7
    # Admix draws x' from the batch: it crafts at the full batch and bounds memory by copies per pass instead.
    assert transfer.BATCH_POOLED == ("Admix-TI-DIM",)
    assert transfer.build_attack("Admix-TI-DIM", 0).config.execution.copies_per_pass == 3
    # Engine-v2 rows keep their papers' schedules, with an explicit step size scaled to the table's eps.
    mef = transfer.build_attack("MEF", 0, max_epsilon=4).config
    assert (mef.steps, round(mef.alpha * 255, 6), round(mef.eps * 255, 6)) == (20, 0.4, 4.0)
    assert transfer.build_attack("BSR", 0, max_epsilon=4).config.steps == 10
    assert "BSR" not in transfer.TABLE and "BSR" in transfer.EXPENSIVE
    # Ensemble strategies are crafted on the ensemble source only.
    assert transfer.ENSEMBLE_ONLY == ("SVRE", "CWA", "AdaEA", "SMER")
    assert transfer.table_sets(("single", "ensemble"), ("FGSM", "SVRE")) == [
        ("single", "FGSM"), ("ensemble", "FGSM"), ("ensemble", "SVRE")]
    cwa = transfer.build_attack("CWA", 0, max_epsilon=4).config  # CWA's 3.2/255 at eps 16 is 2 eps / 10
    assert (cwa.steps, round(cwa.alpha * 255, 6)) == (10, 0.8)


def test_default_rows_are_the_issue_protocol_and_the_bf16_variant_is_asked_by_name():
    from tfattack.bench import transfer

    protocol = {"FGSM", "I-FGSM", "MI-FGSM", "NI-FGSM", "DI-MI", "TI-MI", "TI-DI-MI", "SI-NI-TI-DIM", "VMI-TI-DIM",
                "Admix-TI-DIM"}
    assert protocol < set(transfer.TABLE) and "TI-DI-MI bf16" in transfer.ATTACKS
    assert "TI-DI-MI bf16" not in transfer.TABLE and set(transfer.EXPENSIVE) <= set(transfer.TABLE) | set(transfer.MODERN)


def transfer_error(tmp_path, *args):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--what=transfer",
                             f"--output_dir={tmp_path / 'out'}", *args], capture_output=True, text=True, env=ENV,
                            cwd=REPO, timeout=600)
    lines = [l for l in result.stderr.splitlines() if l.startswith("benchmark.py: error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    for table in ("transfer", "transfer_targeted"):
        assert not (tmp_path / "out" / table).exists()  # nothing crafted before the error
    return lines[0]


def test_bad_image_counts_and_missing_data_are_one_line_errors(tmp_path):
    assert transfer_error(tmp_path, "--num_images=0") == "benchmark.py: error: --num_images must be >= 1, got 0"
    assert transfer_error(tmp_path, "--num_images_expensive=-1") == (
        "benchmark.py: error: --num_images_expensive must be >= 1, got -1")
    assert transfer_error(tmp_path, "--sources=single,both") == (
        "benchmark.py: error: --sources: unknown both; known: single, ensemble")
    assert transfer_error(tmp_path, "--max_epsilon=0") == (
        "benchmark.py: error: --max_epsilon must be in (0, 255] pixels, got 0")
    assert transfer_error(tmp_path, "--sources=single", "--attack_names=FGSM,SVRE,CWA") == (
        "benchmark.py: error: --attack_names: SVRE, CWA attack ensembles only; add --sources=ensemble")
    assert transfer_error(tmp_path, f"--data_dir={tmp_path / 'absent'}") == (
        f"benchmark.py: error: input_dir {tmp_path / 'absent' / 'images'}: no such folder")


@requires_shared
def test_too_many_images_and_a_missing_model_fail_before_any_crafting(tmp_path):
    assert transfer_error(tmp_path, "--num_images=5000").endswith("nips17_dev has 1000 images")
    line = transfer_error(tmp_path, "--num_images=2", f"--model_dir={tmp_path / 'no_models'}")
    assert line.startswith("benchmark.py: error: weights for model 'mobilenet_v1_075' not found (looked in ")


def test_targeted_rows_are_a_table_of_their_own_at_their_presets_schedule():
    from tfattack.bench import transfer

    assert transfer.TARGETED == {"Logit": "logit_ti_di_mi_fgsm", "Po+Trip": "po_trip_ti_di_mi_fgsm", "CFM": "cfm",
                                 "SU": "su", "Logit-Margin": "logit_margin"}
    assert not set(transfer.TARGETED) & (set(transfer.TABLE) | set(transfer.EXPENSIVE))
    assert transfer.of_the_other_kind(["FGSM", "Logit", "SU", "BSR"], targeted=True) == ["FGSM", "BSR"]
    assert transfer.of_the_other_kind(["FGSM", "Logit", "SU", "BSR"], targeted=False) == ["Logit", "SU"]
    for name in transfer.TARGETED:  # the preset's 300 steps of 2/255 at eps 16; the step scales with eps
        config = transfer.build_attack(name, 0).config
        assert (config.steps, round(config.alpha * 255, 6), round(config.eps * 255, 6)) == (300, 2.0, 16.0), name
        config = transfer.build_attack(name, 0, max_epsilon=4).config
        assert (config.steps, round(config.alpha * 255, 6), round(config.eps * 255, 6)) == (300, 0.5, 4.0), name
    protocol = transfer.targeted_protocol(tuple(transfer.TARGETED), 0, 16)
    assert (protocol["eps"], protocol["steps"], protocol["step"]) == ("16/255", 300, "2/255")
    assert protocol["components"]["CFM"]["forward"].startswith("cfm:")
    with pytest.raises(ValueError, match="^FGSM: not rows of the targeted table$"):
        transfer.run("no data", "no models", "no output", num_images=2, num_images_expensive=2, attacks=["FGSM"],
                     targeted=True)


def test_rows_of_the_other_table_are_one_line_errors(tmp_path):
    assert transfer_error(tmp_path, "--targeted", "--attack_names=Logit,FGSM,TI-DI-MI") == (
        "benchmark.py: error: --attack_names: FGSM, TI-DI-MI not in the targeted table; with --targeted choose among "
        "Logit, Po+Trip, CFM, SU, Logit-Margin")
    assert transfer_error(tmp_path, "--attack_names=FGSM,SU") == (
        "benchmark.py: error: --attack_names: SU in the targeted table only; add --targeted")


def set_made_by_hand(folder: Path, dataset, pictures, settings):
    """An adversarial set whose run record vouches for `pictures` (ImageId -> the DEV image whose pixels stand in
    for it) as made with `settings`, towards the dataset's targets: a run with those settings crafts nothing."""
    import shutil

    from tfattack import data, record

    folder.mkdir(parents=True)
    images = {}
    for position, image_id in enumerate(dataset.ids):
        output = data.output_path(str(folder), image_id)
        shutil.copyfile(pictures[image_id], output)
        images[image_id] = {"source": record.file_sha256(dataset.paths[position]), "output": record.file_sha256(output),
                            "label": int(dataset.labels[position]), "target": int(dataset.targets[position])}
    record.RunRecord(str(folder / "run.json"), settings, images, {"status": "complete"}).save()


@requires_shared
def test_a_targeted_run_crafts_towards_the_targets_and_scores_target_hits(tmp_path, monkeypatch):
    import tfattack
    from shared_data import NIPS17_DEV, SHARED
    from tfattack import data, pipeline
    from tfattack.bench import transfer

    models = str(SHARED / "real_models")
    full = data.read_dataset(str(NIPS17_DEV / "images"), csv=str(NIPS17_DEV / "dev_dataset.csv"))
    dataset = full.select(full.ids[:2])
    # 300 steps would take minutes, so the set is made by hand: the first image's pixels are those of a DEV image of
    # its target class (a target hit), the second's those of the first image (a miss, yet an untargeted success).
    first, second = dataset.ids
    of_target = full.paths[list(full.labels).index(dataset.targets[0])]
    pictures = {first: of_target, second: dataset.paths[0]}
    surrogate = tfattack.models.Ensemble([tfattack.models.load("efficientnet_lite0", model_dir=models)])
    settings = pipeline.run_settings(surrogate, transfer.build_attack("Logit", 0), targeted=True,
                                     label_source="metadata", batch_size=10)
    folder = tmp_path / "transfer_targeted" / "single" / "Logit"
    set_made_by_hand(folder, dataset, pictures, settings)
    asked = []
    crafting = pipeline.attack_dataset
    monkeypatch.setattr(pipeline, "attack_dataset", lambda *args, **kwargs: asked.append(kwargs["targeted"]) or
                        crafting(*args, **kwargs))
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: None)  # nothing is crafted here
    said = []
    payload = transfer.run(str(NIPS17_DEV), models, str(tmp_path / "transfer_targeted"), num_images=2,
                           num_images_expensive=2, attacks=["Logit"], sources=["single"], targeted=True,
                           log=said.append)
    # Asked untargeted, the set's record (targeted) would have refused the run.
    assert asked == [True] and any(l.endswith(" s (2 already there)") for l in said), said
    assert payload["targeted"] is True and (payload["protocol"]["steps"], payload["protocol"]["step"]) == (300, "2/255")
    plain = {r["victim"]: r for r in payload["rows"] if r["defense"] == "none"}
    assert set(plain) == set(transfer.VICTIMS)
    for victim in transfer.VICTIMS:  # the hits, counted here from the victims' own predictions on the files
        model = tfattack.models.load(victim, model_dir=models)

        def predicted(paths):
            return np.argmax(model(np.stack([data.read_image_uint8(p) for p in paths]) / np.float32(255)), -1)

        clean_correct = predicted(dataset.paths) == dataset.labels
        adversarial = predicted([data.output_path(str(folder), i) for i in dataset.ids])
        hits = (adversarial == dataset.targets) & clean_correct
        assert hits.any() and ((adversarial != dataset.labels) & clean_correct & ~hits).any(), victim
        row = plain[victim]
        assert row["success_rate"] == hits.sum() / clean_correct.sum(), victim
        assert row["success_rate_all"] == ((adversarial == dataset.targets).mean()), victim
    assert transfer.markdown(payload).startswith("Targeted transfer: target hit rate (%) (prediction == the DEV "
                                                 "CSV's TargetClass) over the images each victim classifies "
                                                 "correctly when clean; eps 16/255, 300 iterations of 2/255;")
    assert len(list((tmp_path / "transfer_targeted" / "scores").glob("*.json"))) == 1


def test_score_key_reads_the_scoring_code_and_not_the_attack_or_bench_code():
    from tfattack.bench import transfer

    package = Path(transfer.__file__).parents[1]
    sources = [Path(p).relative_to(package).as_posix() for p in transfer.scoring_sources()]
    assert "evaluate.py" in sources and "models/classifier.py" in sources
    assert {"defenses.py", "data.py", "models/tflite.py", "models/efficientnet_lite.py", "__init__.py"} <= set(sources)
    assert not [p for p in sources if p.startswith(("attacks/", "bench/", "cli/"))]
    # crafting-side modules do not invalidate kept scores
    assert not {"pipeline.py", "record.py", "runs.py", "scale.py"} & set(sources)


def test_scoring_imports_are_read_from_the_whole_module_body(tmp_path):
    from tfattack.bench import transfer

    module = tmp_path / "thing.py"
    module.write_text("import os\nfrom tfattack import data\nfrom . import files\n"
                      "def later():\n    from .models import zoo\n    import tfattack.defenses\n")
    found = set(transfer._imported(str(module), "tfattack.thing"))
    assert {"tfattack.data", "tfattack.files", "tfattack.models.zoo", "tfattack.defenses"} <= found
    assert "os" not in found


def test_a_crafting_run_records_its_sources_and_kernels_from_its_first_write(tmp_path):
    """A set's record names the code and kernels of every run that wrote into it, even of a run killed before its
    end."""
    from test_attack_script import make_input
    from test_run_record import TinyModel, weights_file
    import tfattack
    from tfattack import data, runs
    from tfattack.bench import transfer

    images, _ = make_input(tmp_path, 3)
    dataset = data.read_dataset(str(images))
    model = TinyModel(weights_file(tmp_path / "w.npy"))
    attack = tfattack.attacks.build("mi_fgsm", eps=8 / 255, steps=2)
    folder = tmp_path / "set"
    seen = []

    def log(line):  # called as batches finish: the record on disk then is what a kill would leave
        if "crafting" in line and (folder / "run.json").exists():
            seen.append(json.loads((folder / "run.json").read_text())["crafting"])

    transfer.craft_set(dataset.select(dataset.ids[:2]), str(folder), model, attack, batch_size=1, label="set",
                       info={}, log=log)
    assert seen and all(c["sources"] == [runs.source_digest()] and c["kernels"] == [runs.kernels()] for c in seen)
    record = json.loads((folder / "run.json").read_text())
    assert record["crafting"]["images"] == 2 and record["crafting"]["sources"] == [runs.source_digest()]
    assert record["crafting"]["kernels"] == [runs.kernels()]
    # An older run's images without any crafting record: the next run says some images are of unrecorded code.
    del record["crafting"]
    (folder / "run.json").write_text(json.dumps(record))
    seen.clear()
    transfer.craft_set(dataset, str(folder), model, attack, batch_size=1, label="set", info={}, log=log)
    # From this run's first write on, the record says that some images are of unrecorded code and kernels (a kill
    # here must not leave a record that credits them to this run).
    assert seen and all(c["sources"] == [runs.source_digest(), "unrecorded"] and
                        c["kernels"] == sorted([runs.kernels(), "unrecorded"]) for c in seen)
    record = json.loads((folder / "run.json").read_text())
    assert record["crafting"]["images"] == 1 and record["crafting"]["sources"] == [runs.source_digest(), "unrecorded"]
    assert record["crafting"]["kernels"] == sorted([runs.kernels(), "unrecorded"])
