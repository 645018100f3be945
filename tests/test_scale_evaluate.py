"""Evaluation on Ray (tfattack.scale.RayScorer): each (victim, defense) pair on a worker gives the local evaluation's
per-image predictions and rates, random and stacked defenses included; and evaluate.py --engine=ray end to end.

Its own embedded Ray (2 CPUs, test_scale's fixture) and pair of scoring workers; real sample images, EfficientNet-Lite0/Lite1.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

ray = pytest.importorskip("ray")

from tfattack import data, evaluate, pipeline, scale  # noqa: E402
from test_attack_script import REPO, make_input  # noqa: E402
from test_scale import cluster  # noqa: E402,F401 (the module's own embedded Ray: a fixture per module)

VICTIMS = ("efficientnet_lite0", "efficientnet_lite1")
DEFENSES = ("none", "rp", "rs:0.25:3", "jpeg:75+bits:4+rp")
IMAGES = 5


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """The clean dataset and two adversarial folders (MI-FGSM at two eps), one image missing from the second."""
    root = tmp_path_factory.mktemp("scoring")
    images, _ = make_input(root, IMAGES)
    dataset = data.read_dataset(str(images))
    model = scale.EnsembleRecipe([("efficientnet_lite0", 1.0)]).build()
    folders = []
    for eps in (4, 16):
        attack = scale.AttackRecipe("mi_fgsm", {"eps": eps / 255, "steps": 2}).build()
        folder = root / f"eps{eps}"
        pipeline.attack_dataset(dataset, str(folder), model, attack, batch_size=2, targeted=False)
        folders.append(folder)
    os.remove(folders[1] / f"{dataset.ids[0]}.png")
    return images, dataset, [evaluate.read_adv_set(str(f)) for f in folders]


@pytest.fixture(scope="module")
def victims():
    return [scale.VictimRecipe(name).build() for name in VICTIMS]


def test_ray_scoring_equals_the_local_evaluation(cluster, sets, victims):
    _, dataset, adv_sets = sets
    local = evaluate.evaluate(dataset, adv_sets, victims, DEFENSES, batch_size=2, seed=5)
    shares = []
    with scale.RayScorer({n: scale.VictimRecipe(n) for n in VICTIMS}, num_workers=2) as scorer:
        spread = evaluate.evaluate(dataset, adv_sets, victims, DEFENSES, batch_size=2, seed=5, scorer=scorer,
                                   progress=shares.append)
        assert len(set(scorer.worker_pids())) == 2 and os.getpid() not in scorer.worker_pids()
    assert sum(shares) == IMAGES and len(shares) == len(VICTIMS) * len(DEFENSES)
    assert list(spread.clean_predictions) == list(local.clean_predictions)
    for key, values in local.clean_predictions.items():
        assert np.array_equal(spread.clean_predictions[key], values), key
    for key, values in local.adv_predictions.items():
        assert np.array_equal(spread.adv_predictions[key], values), key
    assert spread.results == local.results and spread.perturbations == local.perturbations
    assert (local.adv_predictions[(adv_sets[1].name, VICTIMS[0], "none")][0] == -1)  # the missing file


def test_a_victim_without_a_recipe_is_a_value_error(cluster, sets, victims):
    _, dataset, adv_sets = sets
    with scale.RayScorer({VICTIMS[0]: scale.VictimRecipe(VICTIMS[0])}, num_workers=1) as scorer:
        with pytest.raises(ValueError, match="RayScorer has no VictimRecipe for efficientnet_lite1"):
            evaluate.evaluate(dataset, adv_sets, victims, ["none"], scorer=scorer)


def test_evaluate_script_on_ray_writes_the_local_report(sets, tmp_path):
    """Its own embedded Ray, started and shut down by the tool."""
    images, _, adv_sets = sets
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + sys.path))
    reports = {}
    for engine in ("local", "ray"):
        report = tmp_path / engine / "report.md"
        result = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "evaluate.py"), f"--input_dir={images}",
             f"--adv_dirs={adv_sets[0].path}", "--models=efficientnet_lite0", "--defenses=none,rp", "--seed=2",
             "--batch_size=2", f"--report={report}", "--examples=0", f"--engine={engine}",
             *(["--num_workers=2"] if engine == "ray" else [])],
            env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        reports[engine] = json.loads(report.with_suffix(".json").read_text())
    assert "2 Ray worker(s) ready on an embedded Ray" in result.stderr
    assert reports["ray"]["results"] == reports["local"]["results"]
