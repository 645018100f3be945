"""The suite runs with TensorFlow's oneDNN rewrites off unless TF_ENABLE_ONEDNN_OPTS is set: the setting the
project's reproducibility promises are made for (docs/reproducibility.md), and the one that makes bit-exact checks
independent of the CPU. With the rewrites on, an AVX-512 AMD EPYC computes other last bits than the goldens
(tests/golden/attack_goldens.npz, 3 of 57 cases), than a float64 transcription at 1e-4 (test_ops), and than Ray workers
started with them off (test_scale). TensorFlow reads the switch once, when first imported: this file is loaded before
any test module imports it."""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
