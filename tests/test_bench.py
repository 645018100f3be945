"""Benchmark machinery: FLOP counting, the TF1 peer's equivalence with tfattack's MI-FGSM, and the
benchmark script's attack table. No timing is asserted."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfattack
from tfattack import runs
from tfattack.bench import attack_speed, tables, timing

from shared_data import NIPS17_DEV, SHARED, requires_shared  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "benchmark.py"


def load_tf1_peer():
    spec = importlib.util.spec_from_file_location("tf1_peer", REPO / "scripts" / "tf1_peer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----- FLOP counting -----

def test_count_flops_equals_hand_count():
    conv_kernel = tf.ones([3, 3, 3, 4])
    strided_kernel = tf.ones([5, 5, 4, 6])
    depthwise_kernel = tf.ones([3, 3, 4, 2])
    dense = tf.ones([6, 10])
    transposed = tf.ones([7, 2])

    @tf.function
    def tiny(x):
        y = tf.nn.conv2d(x, conv_kernel, 1, "SAME")                    # [2, 8, 8, 4]
        z = tf.nn.conv2d(y, strided_kernel, 2, "VALID")                # [2, 2, 2, 6]
        d = tf.nn.depthwise_conv2d(y, depthwise_kernel, [1, 1, 1, 1], "SAME")  # [2, 8, 8, 8]
        pooled = tf.reduce_mean(z, axis=[1, 2])                        # [2, 6], not counted
        logits = tf.matmul(pooled, dense)                              # [2, 10]
        side = tf.matmul(tf.ones([7, 3]), transposed, transpose_a=True)  # [3, 2], inner 7
        tf.nn.conv2d(x, conv_kernel, 2, "SAME")                        # read by nothing: pruned, not counted
        return logits, d, side

    # 2 FLOPs per multiply-add; a convolution does (output elements) x kh x kw x cin of them.
    conv = 2 * (2 * 8 * 8 * 4) * (3 * 3 * 3)
    strided = 2 * (2 * 2 * 2 * 6) * (5 * 5 * 4)
    depthwise = 2 * (2 * 8 * 8 * 8) * (3 * 3)
    matmul = 2 * (2 * 10) * 6
    matmul_transposed = 2 * (3 * 2) * 7
    expected = conv + strided + depthwise + matmul + matmul_transposed
    assert timing.count_flops(tiny, tf.zeros([2, 8, 8, 3])) == expected == 27648 + 9600 + 18432 + 240 + 84


def test_op_time_breakdown_names_the_ops_that_ran():
    @tf.function
    def two_matmuls(a):
        return tf.reduce_sum(tf.nn.relu(tf.matmul(a, a)) @ a)

    a = tf.random.stateless_uniform([256, 256], seed=[5, 5])
    two_matmuls(a)
    rows = timing.op_time_breakdown(two_matmuls, a, top=50)
    matmuls = [r for r in rows if "MatMul" in r["op"]]
    assert matmuls and sum(r["count"] for r in matmuls) == 2
    assert all(r["seconds"] > 0 for r in rows) and abs(sum(r["share"] for r in rows) - 1) < 1e-6


# ----- what a preset costs by design -----

@pytest.mark.parametrize("preset,evaluations,batch,per_pass", [
    ("mi_fgsm", 1, 8, 8),
    ("ti_di_mi_fgsm", 1, 8, 8),     # DI and TI transform a single view: no extra pass
    ("si_ni_fgsm", 5, 1, 5),        # Lin et al.: m = 5 scale copies, stacked in one pass
    ("admix", 15, 1, 15),           # Wang et al.: 3 admixed images x 5 scales
    ("vmi_fgsm", 21, 1, 1),         # Wang & He: the step's gradient + N = 20 neighbours, one by one
    ("bsr", 20, 1, 20),             # Wang et al. 2024: 20 shuffled copies, stacked
    ("pgn", 40, 1, 20),             # Ge et al.: 20 neighbours, each with a look-ahead: two stacks of 20
    ("gra", 21, 1, 21),             # Zhu et al.: the point and 20 neighbours in one stack
    ("emi", 11, 1, 11),             # Wang et al. 2021: 11 points along the previous direction
])
def test_gradient_evaluations_follow_the_papers(preset, evaluations, batch, per_pass):
    config = tfattack.attacks.build(preset).config
    assert attack_speed.gradient_evaluations(config) == evaluations
    assert attack_speed.batch_for(config, 8) == batch
    assert attack_speed.images_per_pass(config, batch) == per_pass


@pytest.mark.parametrize("preset,overrides,passes", [
    ("mi_fgsm", {}, 10),
    ("pgn", {}, 400),
    ("gimi", {}, 15),                              # 5 pre-steps + 10 steps
    ("decowa", {}, 10 * 20 * 2),                   # 20 warped copies, each searched once before its gradient
    ("rap", {"estimators": "rap:0"}, 10 * (1 + 8)),  # from the late start on: 8 bare inner steps per step
])
def test_model_passes_count_every_pass(preset, overrides, passes):
    assert tfattack.attacks.build(preset, steps=10, **overrides).config.model_passes() == passes


@pytest.mark.parametrize("preset,passes,forward_only", [
    ("fia", 10 + 30, 0),    # 30 masked copies weigh the features once per call
    ("rpa", 10 + 60, 0),    # 60 patch-noised copies
    ("bfa", 10 + 31, 0),    # the clean image and 30 fitted ones
    ("ila", 10 + 10, 2),    # the 10-step base attack, then the clean and guide features
    ("cfm", 10, 1),         # one recording pass of the clean batch
    ("ilpd", 10, 10),       # a noisy clean image's reference features at every step
    ("ghost", 10, 0),
])
def test_setup_and_forward_only_passes_are_counted(preset, passes, forward_only):
    config = tfattack.attacks.build(preset, steps=10).config
    assert (config.model_passes(), config.forward_only_passes()) == (passes, forward_only)


# ----- the TF1 peer computes tfattack's MI-FGSM -----

@pytest.fixture(scope="module")
def peer_and_ours(tmp_path_factory):
    tf1_peer = load_tf1_peer()
    prefix = tf1_peer.write_random_checkpoint(str(tmp_path_factory.mktemp("peer") / "inception_v3.ckpt"))
    peer = tf1_peer.SlimMiFgsm(prefix, 1, steps=2)
    model = tfattack.models.load("inception_v3", checkpoint=prefix)
    yield peer, model
    peer.close()


def test_peer_first_gradient_equals_ours(peer_and_ours):
    peer, model = peer_and_ours
    images, labels = attack_speed.random_batch(1, seed=5)
    attack = tfattack.attacks.build("mi_fgsm", steps=2)
    estimate = tfattack.attacks.loop.make_gradient_estimator(model, attack.config)
    ours = estimate(tf.constant(images), tf.constant(labels), None, tf.random.Generator.from_seed(0)).numpy()
    theirs = peer.first_gradient(images, labels)
    # Through ~100 random layers float32 rounding (oneDNN vs folded batch norm) moves the gradient by
    # ~1e-2 in L2; both are that far from a float64 evaluation. A wrong label or loss is off by ~1.
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 0.03
    assert np.mean(np.sign(ours) == np.sign(theirs)) > 0.99


def test_peer_adversarial_images_equal_ours(peer_and_ours):
    peer, model = peer_and_ours
    images, labels = attack_speed.random_batch(1, seed=5)
    ours = tfattack.attacks.build("mi_fgsm", steps=2)(model, images, labels).numpy()
    theirs = peer(images, labels)
    alpha = (16 / 255) / 2
    assert np.abs(theirs - images).max() <= 16 / 255 + 1e-6
    different = np.abs(ours - theirs) > 1e-5
    # Pixels differ only where a near-zero gradient component flipped sign (a step of 2 alpha or less).
    assert different.mean() < 0.1
    assert np.abs(ours - theirs).max() <= 2 * alpha * 2 + 1e-5


# ----- the script -----

def run_script(*args, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), f"--output_dir={tmp_path}", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_script_prints_the_attack_table(tmp_path):
    done = run_script("--what=attacks", "--presets=fgsm", "--num_iter=1", "--batch_size=1", "--ensemble=inception_v3",
                      "--xla=off", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| fgsm | off | 1 | 1 |" in done.stdout
    payload = json.loads((tmp_path / "attacks.json").read_text())
    (row,) = payload["rows"]
    assert row["members"] == ["inception_v3"] and row["overhead_ratio"] > 0 and row["s_per_image_iteration"] > 0
    assert (tmp_path / "attacks.md").read_text().count("| fgsm |") == 1
    # the JSON keeps the run that made its numbers, and the table says it under itself, here and in the docs
    run = payload["run"]
    assert run["command"] == (f"benchmark.py --output_dir={tmp_path} --what=attacks --presets=fgsm --num_iter=1 "
                              "--batch_size=1 --ensemble=inception_v3 --xla=off")
    assert run["kernels"] == runs.kernels(os.environ, "CPU")
    assert run["tfattack_sources"] and run["tensorflow"]
    line = f"Written by `{run['command']}` with TensorFlow {run['tensorflow']} on {run['kernels']}"
    assert (tmp_path / "attacks.md").read_text().strip().splitlines()[-1].startswith(line)
    assert tables.render(tmp_path / "attacks.json").splitlines()[-1].startswith(line)


@pytest.mark.parametrize("flag,message", [("--presets=nope", "--presets: unknown preset(s) nope"),
                                          ("--ensemble=nope", "--ensemble: unknown model(s) nope")])
def test_script_rejects_unknown_names(tmp_path, flag, message):
    done = run_script("--what=attacks", flag, tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"benchmark.py: error: {message}")
    assert "Traceback" not in done.stderr


def test_every_flag_of_the_tool_says_which_benchmarks_read_it():
    code = ("import json; from absl import flags; import tfattack.cli.benchmark as b; "
            "print(json.dumps([sorted(f.name for f in flags.FLAGS.get_key_flags_for_module(b)), b.FLAG_WHATS, "
            "list(b.WHATS)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-2000:]
    names, scope, whats = json.loads(done.stdout)
    assert sorted(scope) == sorted(set(names) - {"what"})  # a new flag must say which --what reads it
    internal = {"_one_model", "_peer", "_copies_memory"}
    assert all(w in whats or w in internal for used in scope.values() for w in used)
    assert scope["plan"] == ["transfer", "leaderboard"] and scope["engine"] == ["transfer", "leaderboard"]


@pytest.mark.parametrize("args,message", [
    (["--what=transfer", "--batch_size=3"],
     "--batch_size does nothing with --what=transfer; it applies to --what=models and --what=attacks and --what=speed"),
    (["--what=attacks", "--plan"], "--plan does nothing with --what=attacks; it applies to --what=transfer and "
                                   "--what=leaderboard"),
    (["--what=leaderboard", "--targeted"], "--targeted does nothing with --what=leaderboard; it applies to "
                                           "--what=transfer"),
    (["--what=models", "--engine=ray"], "--engine does nothing with --what=models; it applies to --what=transfer and "
                                        "--what=leaderboard"),
])
def test_a_flag_the_benchmark_does_not_read_is_a_one_line_error(tmp_path, args, message):
    done = run_script(*args, tmp_path=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"benchmark.py: error: {message}"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flags,message", [
    (["--models=nope"], "unknown model 'nope'; known models: "),
    (["--models=efficientnet_lite0", "--keep_other_rows"], "--keep_other_rows: cannot read "),
])
def test_accuracy_flags_are_checked(tmp_path, flags, message):
    done = run_script("--what=accuracy", "--num_images=2", *flags, tmp_path=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"benchmark.py: error: {message}")


# ----- the memory section -----

def test_copies_memory_row_counts_images_per_pass(monkeypatch):
    from tfattack.bench import speed
    monkeypatch.setattr(speed, "MEMORY_MODELS", ("efficientnet_lite0",))
    row = speed.copies_memory("admix_ti_dim", copies_per_pass=4, batch=1)
    assert (row["copies"], row["images_per_pass"]) == (15, 4)
    assert row["peak_rss_mib"] > 0 and row["s_per_image_iteration"] > 0
    vmi = speed.copies_memory("vmi_fgsm", copies_per_pass=0, batch=2)
    assert (vmi["copies"], vmi["images_per_pass"]) == (1, 2)  # the neighbours are separate passes
    failed = {"preset": "admix", "copies_per_pass": 0, "batch": 1, "error": "MemoryError"}
    table = speed.memory_table([row, vmi, failed])
    assert "| admix_ti_dim | 4 | 1 | 4 |" in table and "| vmi_fgsm | 0 (all 1) | 2 | 2 |" in table
    assert "| admix | 0 | 1 | error: MemoryError | | |" in table


@pytest.mark.parametrize("run", ["admix_ti_dim", "nope:1", "admix_ti_dim:-1"])
def test_memory_runs_flag_is_checked(run, tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--what=memory", f"--memory_runs={run}",
                           f"--output_dir={tmp_path}"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"benchmark.py: error: --memory_runs: {run!r} is not "
                                                    f"PRESET:COPIES_PER_PASS (a preset name and an integer >= 0)")


# ----- the accuracy table -----

@requires_shared
def test_accuracy_rows_merge_with_an_earlier_run():
    """Re-measuring one model keeps the earlier run's other rows (in table order); the integer TFLite
    rebuild scores exactly its interpreter's top-1."""
    from tfattack.bench import accuracy
    args = (str(NIPS17_DEV), str(SHARED / "real_models"), 20)
    first, _ = accuracy.run(["mobilenet_v1_025_128_quant_int8"], *args)
    merged, markdown = accuracy.run(["mobilenet_v1_025_128_quant"], *args, previous=first)
    assert [r["model"] for r in merged["rows"]] == ["mobilenet_v1_025_128_quant", "mobilenet_v1_025_128_quant_int8"]
    assert merged["rows"][0]["top1"] == merged["rows"][1]["top1"] > 0
    assert markdown.count("| mobilenet_v1_025_128_quant") == 2
    with pytest.raises(ValueError, match="on 20 images, not 10: re-measure every model"):
        accuracy.run(["mobilenet_v1_025_128_quant"], *args[:2], 10, previous=first)


def test_json_from_fresh_process_result_or_error_row():
    ok = timing.json_from_fresh_process([sys.executable, "-c", "print('noise'); print('{\"a\": 1}')"], a=0)
    assert ok == {"a": 1}
    failed = timing.json_from_fresh_process([sys.executable, "-c", "import sys; sys.exit('boom: bad flag')"], model="m")
    assert failed == {"model": "m", "error": "boom: bad flag"}


@pytest.mark.parametrize("flag,message", [
    ("--images=0", "--images must be >= 1, got 0"),
    ("--models=nope", "--models: unknown nope; known: mobilenet_v2_quant, "),
    ("--arithmetic=exact", "--arithmetic: unknown exact; known: "),
])
def test_tflite_agreement_flags_are_checked(flag, message):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "tflite_agreement.py"), flag], capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"tflite_agreement.py: error: {message}")
