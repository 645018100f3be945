"""scripts/compare.py: baselines and the chosen attack on the same images, one report with both."""

import csv
import json
import subprocess
import sys

from test_attack_script import ENV, REPO, make_input


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
