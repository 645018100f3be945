"""Benchmarks: model speed, real-model accuracy, attack speed and the transfer table.

  python scripts/benchmark.py --what=models [--models=inception_v3,vgg_19] [--batch_size=8] [--jit_compile]
  python scripts/benchmark.py --what=accuracy [--num_images=1000]

Each figure is printed as a markdown table and written as JSON under --output_dir.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
WHATS = ("models", "accuracy", "attacks", "transfer", "speed")
flags.DEFINE_enum("what", "models", WHATS + ("_one_model",), "Which benchmark to run.")
flags.DEFINE_list("models", [], "Models to measure (default: every registered architecture that builds without files).")
flags.DEFINE_integer("batch_size", 8, "Batch size for speed measurements.")
flags.DEFINE_boolean("jit_compile", False, "Compile with XLA.")
flags.DEFINE_string("model_dir", None, "Where to find model files (os.pathsep separated); default ../shared/real_models.")
flags.DEFINE_string("data_dir", None, "NIPS'17 DEV folder (images/ + dev_dataset.csv); default ../shared/nips17_dev.")
flags.DEFINE_integer("num_images", 1000, "Images for accuracy/transfer benchmarks.")
flags.DEFINE_string("output_dir", "benchmarks", "Where the JSON/markdown results go.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")


def default_model_dir():
    return FLAGS.model_dir or os.path.join(SHARED, "real_models")


def write_result(name, payload, markdown):
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=1)
    with open(os.path.join(FLAGS.output_dir, f"{name}.md"), "w") as f:
        f.write(markdown + "\n")
    print(markdown)


def run_models():
    import tfattack
    from tfattack.bench import model_speed, timing
    names = FLAGS.models or [s.name for s in tfattack.models.specs() if is_speed_candidate(s)]
    rows = [model_speed.measure_in_subprocess(n, FLAGS.batch_size, FLAGS.jit_compile, os.path.abspath(__file__),
                                              default_model_dir()) for n in names]
    rate = timing.matmul_flops_per_second()
    write_result("models", {"matmul_flops_per_second": rate, "rows": rows, "time": time.time()},
                 model_speed.markdown_table(rows, rate))


def is_speed_candidate(spec):
    # One row per architecture: the adversarially trained copies share their architecture's speed.
    return not spec.name.startswith(("adv_", "ens", "test_")) and spec.source != "tflite_interpreter"


def run_one_model():
    from tfattack.bench import model_speed
    result = model_speed.measure(FLAGS.models[0], FLAGS.batch_size, jit_compile=FLAGS.jit_compile,
                                 model_dir=default_model_dir())
    print(json.dumps(result))


def run_accuracy():
    from tfattack.bench import accuracy
    data_dir = FLAGS.data_dir or os.path.join(SHARED, "nips17_dev")
    payload, markdown = accuracy.run(FLAGS.models or None, data_dir, default_model_dir(), FLAGS.num_images)
    write_result("accuracy", payload, markdown)


def main(argv):
    del argv
    runners = {"models": run_models, "_one_model": run_one_model, "accuracy": run_accuracy}
    if FLAGS.what not in runners:
        print(f"benchmark.py: --what={FLAGS.what} is not available yet", file=sys.stderr)
        return 2
    runners[FLAGS.what]()
    return 0


if __name__ == "__main__":
    app.run(main)
