"""The tests' side of tests/torch_oracle.py: runs it in a process of its own and compares our ports with what it
wrote. The oracles (torch, torchvision, timm) are test-only: requirements-oracles.txt."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ORACLE = os.path.join(os.path.dirname(__file__), "torch_oracle.py")


def needs(*packages):
    """A skip mark for a test module whose oracle needs these packages."""
    absent = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(absent), reason=f"{', '.join(absent)} missing: the oracle here; pip install -r "
                                                   f"requirements-oracles.txt")


def random_inputs(seed, count=2, size=224, classes=1000):
    """Images in [0, 1] and the weights of the logits' weighted sum whose input gradient is compared."""
    images = np.random.default_rng(seed).uniform(0, 1, (count, size, size, 3)).astype(np.float32)
    weights = np.random.default_rng(seed + 1).normal(size=(count, classes)).astype(np.float32)
    return images, weights


def run_oracle(tmp_path, family, architecture, images, weights, *, seed=0, options=()):
    """The reference arrays the oracle wrote for these inputs (its weight file is in tmp_path)."""
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "weights.npy", weights)
    command = [sys.executable, ORACLE, family, architecture, str(seed), str(tmp_path / "images.npy"),
               str(tmp_path / "weights.npy"), str(tmp_path), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(np.load(tmp_path / "reference.npz"))


def reference_shapes(family, architecture):
    """State-dict key -> shape of the reference model (family "shapes" for torchvision, "timm_shapes")."""
    done = subprocess.run([sys.executable, ORACLE, family, architecture, "0", "-", "-", "-"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return {k: tuple(v) for k, v in json.loads(done.stdout).items()}


def ours_logits_and_gradient(classifier, x, weights):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = classifier(x)
        total = tf.reduce_sum(logits * weights)
    return logits.numpy(), tape.gradient(total, x).numpy()


def relative(ours, theirs):
    """max |ours - theirs| / std(theirs): the issue's measure of a port's agreement."""
    return np.abs(ours - theirs).max() / theirs.std()
