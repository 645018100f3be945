"""How closely the differentiable TFLite rebuilds follow the int8 interpreter, per arithmetic.

  python scripts/tflite_agreement.py [--images=200] [--arithmetic=integer,grid,float]
      [--models=mobilenet_v2_quant,...] [--data_dir=../shared/nips17_dev] [--model_dir=../shared/real_models]

For each Coral record `NAME` (float rebuild) against `NAME_int8` (TFLite interpreter), on the first
--images NIPS'17 DEV images: exact top-1 agreement, agreement within one quantisation step (the
rebuild's top-1 scores within one step of the interpreter's best, i.e. a tie on the grid is allowed),
the largest and mean |logit difference| in quantisation steps of the logits tensor, and the share of
images whose logits differ at all. Prints a Markdown table.
"""

import os
import time

import numpy as np
import tensorflow as tf
from absl import flags

import tfattack
from tfattack import data
from tfattack.models import tflite, tflite_reader

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 200, "How many DEV images (in the dataset's order).")
flags.DEFINE_list("arithmetic", ["integer", "grid", "float"], f"Rebuild arithmetics to compare: {tflite.ARITHMETICS}.")
flags.DEFINE_list("models", [s[0] for s in tflite.CORAL_FILES], "Float-rebuild records (their _int8 twins are the reference).")
flags.DEFINE_string("data_dir", os.path.join(HERE, "..", "shared", "nips17_dev"), "NIPS'17 DEV folder.")
flags.DEFINE_string("model_dir", os.path.join(HERE, "..", "shared", "real_models"), "Folder holding coral_tflite/.")


def run() -> int:
    from tfattack.runs import UsageError

    if FLAGS.images < 1:
        raise UsageError(f"--images must be >= 1, got {FLAGS.images}")
    known = [s[0] for s in tflite.CORAL_FILES]
    for flag, given, valid in (("models", FLAGS.models, known), ("arithmetic", FLAGS.arithmetic, tflite.ARITHMETICS)):
        unknown = [v for v in given if v not in valid]
        if unknown:
            raise UsageError(f"--{flag}: unknown {', '.join(unknown)}; known: {', '.join(valid)}")
    try:
        measure()
    except (tfattack.models.ModelNotFoundError, tflite_reader.TFLiteFormatError) as err:
        raise UsageError(str(err)) from None
    return 0


def measure():
    dataset = data.read_dataset(os.path.join(FLAGS.data_dir, "images"), csv=os.path.join(FLAGS.data_dir, "dev_dataset.csv"))
    dataset = dataset.select(dataset.ids[:FLAGS.images])
    batches = [batch.images for batch in data.batches(dataset, 25)]
    count = sum(len(b) for b in batches)
    print(f"{count} NIPS'17 DEV images; |dlogit| in quantisation steps of the logits tensor\n")
    print("| model | arithmetic | top-1 agreement % | within one step % | max abs dlogit | mean abs dlogit | "
          "images with any difference % | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name in FLAGS.models:
        rebuilt = tfattack.models.load(name, model_dir=FLAGS.model_dir)
        interpreter = tfattack.models.load(f"{name}_int8", model_dir=FLAGS.model_dir)
        reference = np.concatenate([interpreter(b).numpy() for b in batches])
        step = float(interpreter.network.logits_tensor.quantization.scale[0])
        for arithmetic in FLAGS.arithmetic:
            rebuilt.network.arithmetic = arithmetic
            forward = tf.function(rebuilt)  # one trace per arithmetic
            start = time.perf_counter()
            logits = np.concatenate([forward(tf.constant(b)).numpy() for b in batches])
            seconds = time.perf_counter() - start
            top = np.argmax(logits, 1)
            near = reference[np.arange(count), top] >= reference.max(1) - 1.01 * step
            steps = np.abs(logits - reference) / step
            print(f"| {name} | {arithmetic} | {100 * np.mean(top == np.argmax(reference, 1)):.1f} | "
                  f"{100 * np.mean(near):.1f} | {steps.max():.2f} | {steps.mean():.3f} | "
                  f"{100 * np.mean(steps.max(1) > 0.01):.1f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    from tfattack import cli

    cli.main("tflite_agreement.py", run)
