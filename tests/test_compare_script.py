"""scripts/compare.py: baselines and the chosen attack on the same images, one report with both; and
scripts/merge_runs.py, which joins the records of a sharded attack.py run."""

import csv
import json
import shutil
import subprocess
import sys

import pytest

from test_attack_script import ENV, REPO, make_input
from tfattack.record import file_sha256


def test_compare_runs_baselines_and_attack_side_by_side(tmp_path):
    images, rows = make_input(tmp_path, 2)
    out = tmp_path / "cmp"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "compare.py"), f"--input_dir={images}",
                             f"--output_dir={out}", "--models=efficientnet_lite0", "--attack=ti_mi_fgsm",
                             "--baselines=fgsm,mi_fgsm", "--victims=efficientnet_lite0", "--num_iter=2",
                             "--max_epsilon=8", "--batch_size=2"], capture_output=True, text=True, env=ENV, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    configs = {a: json.loads((out / a / "run.json").read_text())["attack_config"] for a in ("fgsm", "mi_fgsm", "ti_mi_fgsm")}
    assert configs["fgsm"]["steps"] == 1 and configs["mi_fgsm"]["steps"] == 2 and configs["ti_mi_fgsm"]["filters"].startswith("ti:kernel=15")
    table = list(csv.DictReader(open(out / "report.csv")))
    assert sorted({r["attack"] for r in table}) == ["fgsm", "mi_fgsm", "ti_mi_fgsm"]
    assert (out / "report.md").read_text().count("fgsm") >= 3


def test_compare_stops_at_a_bad_attack_name(tmp_path):
    images, _ = make_input(tmp_path, 1)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "compare.py"), f"--input_dir={images}",
                             f"--output_dir={tmp_path / 'cmp'}", "--attack=nope", "--baselines="],
                            capture_output=True, text=True, env=ENV, cwd=REPO)
    assert result.returncode == 2 and "unknown attack 'nope'" in result.stderr


def run_compare(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "compare.py"), *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=REPO)


CHEAP = ["--baselines=", "--attack=fgsm", "--models=efficientnet_lite0", "--victims=efficientnet_lite0",
         "--num_iter=1", "--max_epsilon=8", "--batch_size=2"]


def test_compare_refuses_a_folder_without_labels_before_crafting(tmp_path):
    images, _ = make_input(tmp_path, 1)
    (images / "dev_dataset.csv").unlink()
    out = tmp_path / "cmp"
    result = run_compare(f"--input_dir={images}", f"--output_dir={out}", *CHEAP)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [l for l in result.stderr.splitlines() if l.startswith(("compare.py:", "attack.py:", "evaluate.py:"))]
    assert lines == [f"compare.py: error: --input_dir {images} has no ground-truth labels (no dev_dataset.csv or "
                     f"images.csv): pass --csv=FILE or --labels=clean_prediction"], result.stderr[-3000:]
    assert not out.exists()  # no attack folder, no report


def test_compare_passes_a_metadata_csv_kept_elsewhere_to_attack_and_evaluate(tmp_path):
    images, rows = make_input(tmp_path, 1)
    meta = tmp_path / "meta"
    meta.mkdir()
    (images / "dev_dataset.csv").rename(meta / "labels.csv")  # neither in the image folder nor in its parent
    out = tmp_path / "cmp"
    result = run_compare(f"--input_dir={images}", f"--output_dir={out}", f"--csv={meta / 'labels.csv'}", *CHEAP)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "fgsm" / "run.json").read_text())
    # attack.py attacked the CSV's labels (TrueLabel 1..1000 -> 0..999), not the surrogate's predictions.
    assert record["settings"]["label_source"] == "metadata"
    assert {i: e["label"] for i, e in record["images"].items()} == {r["ImageId"]: int(r["TrueLabel"]) - 1 for r in rows}
    (row,) = list(csv.DictReader(open(out / "report.csv")))
    assert (row["attack"], row["label_source"], row["images"], row["not_evaluated"]) == ("fgsm", "truth", "1", "0")
    assert f"TrueLabel from {meta / 'labels.csv'}" in (out / "report.md").read_text()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A 2-image attack run split over two shards, each attack.py writing its own record into one folder."""
    root = tmp_path_factory.mktemp("sharded")
    images, rows = make_input(root, 2)
    out = root / "out"
    # The two workers run side by side, as sharded runs do.
    workers = [subprocess.Popen([sys.executable, str(REPO / "scripts" / "attack.py"), f"--input_dir={images}",
                                 f"--output_dir={out}", "--models=efficientnet_lite0", "--attack=fgsm",
                                 "--max_epsilon=8", "--num_shards=2", f"--shard_index={index}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
               for index in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]
    return out, rows


def merge(folder):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "merge_runs.py"), f"--output_dir={folder}"],
                          capture_output=True, text=True, env=ENV, cwd=REPO)


def merge_error(result):
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [l for l in result.stderr.splitlines() if l.startswith("merge_runs.py:")]
    assert len(lines) == 1 and lines[0].startswith("merge_runs.py: error: "), result.stderr[-3000:]
    return lines[0]


def test_merge_runs_joins_two_shards_into_one_record(sharded, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(sharded[0], folder)
    shards = [json.loads((folder / f"run.shard-{i}-of-2.json").read_text()) for i in range(2)]
    result = merge(folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"merge_runs.py: 2 shards, 2 images -> {folder / 'run.json'}" in result.stderr
    merged = json.loads((folder / "run.json").read_text())
    assert merged["format"] == 2 and merged["status"] == "complete"
    assert merged["settings"] == shards[0]["settings"] == shards[1]["settings"]
    # Every image, with the hashes its shard recorded, and the PNG there still matching them.
    assert merged["images"] == {**shards[0]["images"], **shards[1]["images"]}
    assert sorted(merged["images"]) == sorted(r["ImageId"] for r in sharded[1])
    assert all(file_sha256(str(folder / f"{i}.png")) == e["output"] for i, e in merged["images"].items())
    assert merged["images_written"] == 2 and merged["shard"]["merged_from"] == [
        "run.shard-0-of-2.json", "run.shard-1-of-2.json"]
    assert merged["max_epsilon"] == 8 and merged["attack_config"]["name"] == "fgsm"  # the 0.1 keys, derived


def test_merge_runs_refuses_a_missing_shard(sharded, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(sharded[0], folder)
    (folder / "run.shard-1-of-2.json").unlink()
    assert merge_error(merge(folder)) == "merge_runs.py: error: shards missing: [1] of 2 (run them, then merge again)"
    assert not (folder / "run.json").exists()


def test_merge_runs_refuses_an_unfinished_shard(sharded, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(sharded[0], folder)
    # A shard killed mid-run leaves its record with status "running": not all of its images are there.
    last = folder / "run.shard-1-of-2.json"
    record = json.loads(last.read_text())
    record["status"] = "running"
    last.write_text(json.dumps(record))
    line = merge_error(merge(folder))
    assert line == f"merge_runs.py: error: {last} is not complete (status 'running'); rerun that shard, then merge again"
    assert not (folder / "run.json").exists()
