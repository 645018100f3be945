"""Calls one attack repeatedly on the same image in one process and prints, after each call, how many pixels differ
from the first call's output: the measurement behind docs/reproducibility.md's ensemble section.

    python scripts/rerun_agreement.py [--models=a,b,c] [--preset=ti_di_mi_fgsm] [--calls=10] [--inter_op_threads=N]

Members are built with random weights unless --checkpoints (this machine has no official checkpoints).
"""

import sys
import time

from absl import app, flags

flags.DEFINE_list("models", ["ens3_adv_inception_v3", "tv_resnet50", "robust_resnet50_l2_eps3"],
                  "Registry names of the ensemble's members.")
flags.DEFINE_string("preset", "ti_di_mi_fgsm", "Attack preset (eps 8/255, 2 steps).")
flags.DEFINE_integer("calls", 10, "Calls after the first.")
flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: TensorFlow's default).")
flags.DEFINE_bool("checkpoints", False, "Load the members' checkpoints instead of random weights.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    from tfattack import models
    from tfattack.attacks import build

    members = [models.load(name, random_weights=not FLAGS.checkpoints) for name in FLAGS.models]
    model = models.Ensemble(members) if len(members) > 1 else members[0]
    rng = np.random.default_rng(3)
    image = (np.round(rng.uniform(25, 230, (1, 299, 299, 3))) / 255).astype(np.float32)
    attack = build(FLAGS.preset, eps=8 / 255, steps=2)
    first = attack(model, image, np.array([3])).numpy()
    differing = []
    for call in range(FLAGS.calls):
        start = time.perf_counter()
        differing.append(int((attack(model, image, np.array([3])).numpy() != first).sum()))
        print(f"call {call + 2}: {time.perf_counter() - start:.1f} s, pixels differing from call 1: "
              f"{differing[-1]}", flush=True)
    changed = sum(count > 0 for count in differing)
    print(f"{FLAGS.preset} on {', '.join(FLAGS.models)}: {changed} of {FLAGS.calls} reruns differ from the first call")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
