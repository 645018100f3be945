"""The NIPS 2017 baselines (FGSM, I-FGSM, MI-FGSM) next to your attack, on the same images and models.

  tfattack-compare --input_dir=DIR --output_dir=OUT --models=efficientnet_lite0,mobilenet_v1_075 \\
      --attack=ti_di_mi_fgsm --victims=efficientnet_lite2 --defenses=none,jpeg:75 --max_epsilon=16 --num_iter=10

Runs tfattack-attack once per attack (outputs in OUT/<attack>/, each with its run.json; finished images
are reused on a rerun) and then tfattack-evaluate on all of them (OUT/report.md, .csv, .json, plots),
so the table has the baselines and your attack as rows, side by side.
"""

import os
import subprocess
import sys

from absl import flags

from tfattack import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Folder of clean images (NIPS'17 layout).")
flags.DEFINE_string("output_dir", None, "Where each attack's folder and the report go.")
flags.DEFINE_list("models", ["efficientnet_lite0"], "Surrogate ensemble for every attack (name[:weight],...).")
flags.DEFINE_string("attack", "ti_di_mi_fgsm", "Your attack preset, compared with the baselines.")
flags.DEFINE_list("baselines", ["fgsm", "i_fgsm", "mi_fgsm"], "Baseline presets (NIPS 2017: FGSM, I-FGSM, MI-FGSM).")
flags.DEFINE_list("victims", ["efficientnet_lite2"], "Victim models for the evaluation (each separately).")
flags.DEFINE_list("defenses", ["none"], "Defenses in front of each victim (none, jpeg:Q, bits:B, rp, median:K, gauss:S, "
                  "rs:SIGMA:N; A+B stacks).")
flags.DEFINE_string("csv", None, "Metadata CSV (default: dev_dataset.csv or images.csv in --input_dir or its parent).")
flags.DEFINE_string("target_class_csv", None, "NIPS'17 target_class.csv for --targeted runs (default: the metadata "
                    "CSV's TargetClass, else target_class.csv in --input_dir).")
flags.DEFINE_enum("labels", "truth", ["truth", "clean_prediction"], "What the attacks and the evaluation count as the "
                  "label: the metadata's TrueLabel, or the surrogate ensemble's clean top-1 (for folders without one).")
flags.DEFINE_enum("fuse", "logits", ["logits", "probs", "loss"], "How the surrogates are fused (as attack.py).")
flags.DEFINE_float("max_epsilon", 16.0, "L-inf budget in pixels (0..255).")
flags.DEFINE_integer("num_iter", 10, "Iterations of the iterative attacks.")
flags.DEFINE_integer("batch_size", 10, "Images per batch.")
flags.DEFINE_boolean("targeted", False, "Targeted attacks (targets from the metadata CSV / target_class.csv).")
flags.DEFINE_integer("seed", 0, "Seed of every attack.")
flags.DEFINE_list("checkpoints", [], "name=path weights for --models and --victims.")
flags.DEFINE_string("model_dir", None, "Folders searched for weights (os.pathsep separated).")
flags.DEFINE_boolean("random_weights", False, "Random weights (tests and timing only).")

def call(tool, arguments):
    """Runs tfattack.cli.`tool` in a child process (its own flags, its own TensorFlow) with this Python."""
    command = [sys.executable, "-m", f"tfattack.cli.{tool}"] + arguments + (["--verbose"] if FLAGS.verbose else [])
    return subprocess.run(command).returncode


def check_inputs():
    """Everything that can be wrong with the flags and the data, before the first attack crafts anything."""
    from tfattack import data, defenses, runs
    from tfattack.attacks import PRESETS

    if not FLAGS.input_dir or not FLAGS.output_dir:
        raise runs.UsageError("--input_dir and --output_dir are required")
    for attack in FLAGS.baselines + [FLAGS.attack]:
        if attack and attack not in PRESETS:
            from tfattack.names import did_you_mean
            raise runs.UsageError(f"unknown attack {attack!r}{did_you_mean(attack, PRESETS)}; known: "
                                  f"{', '.join(PRESETS)}")
    runs.parse_models(FLAGS.models, surrogates=True)
    runs.parse_models(FLAGS.victims, "--victims")
    defenses.parse_list(FLAGS.defenses)
    data.check_output_dir(FLAGS.input_dir, FLAGS.output_dir)
    runs.check_output_folder(FLAGS.output_dir, "--output_dir")
    dataset = data.read_dataset(FLAGS.input_dir, csv=FLAGS.csv, target_class_csv=FLAGS.target_class_csv)
    if FLAGS.labels == "truth" and dataset.labels is None:
        raise runs.UsageError(f"--input_dir {FLAGS.input_dir} has no ground-truth labels (no dev_dataset.csv or "
                              f"images.csv): pass --csv=FILE or --labels=clean_prediction")
    if FLAGS.labels == "clean_prediction" and dataset.labels is not None:
        raise runs.UsageError(f"--labels=clean_prediction: {dataset.label_file} gives ground-truth labels, which "
                              f"the attacks use; drop the flag, or point --csv at a file without TrueLabel")
    if FLAGS.targeted:
        dataset.require_targets()


def run() -> int:
    check_inputs()
    shared = [f"--batch_size={FLAGS.batch_size}", f"--random_weights={FLAGS.random_weights}"] + (
        [f"--model_dir={FLAGS.model_dir}"] if FLAGS.model_dir else [])
    data_flags = ([f"--csv={FLAGS.csv}"] if FLAGS.csv else []) + (
        [f"--target_class_csv={FLAGS.target_class_csv}"] if FLAGS.target_class_csv else [])
    from tfattack.attacks import PRESETS

    def checkpoints_for(names):  # each script accepts only checkpoints of the models it loads
        wanted = {n.partition(":")[0] for n in names}
        return [f"--checkpoints={','.join(c for c in FLAGS.checkpoints if c.partition('=')[0] in wanted)}"]

    attacks = list(dict.fromkeys(a for a in FLAGS.baselines + [FLAGS.attack] if a))
    folders = []
    for attack in attacks:
        folder = os.path.join(FLAGS.output_dir, attack)
        single_step = PRESETS[attack].steps == 1  # FGSM stays one step
        code = call("attack", [f"--input_dir={FLAGS.input_dir}", f"--output_dir={folder}",
                                  f"--models={','.join(FLAGS.models)}", f"--fuse={FLAGS.fuse}", f"--attack={attack}",
                                  f"--max_epsilon={FLAGS.max_epsilon}", f"--targeted={FLAGS.targeted}",
                                  f"--seed={FLAGS.seed}"] + ([] if single_step else [f"--num_iter={FLAGS.num_iter}"])
                    + shared + data_flags + checkpoints_for(FLAGS.models))
        if code != 0:
            return code  # attack.py already said why, in one line
        folders.append(folder)
    return call("evaluate", [f"--input_dir={FLAGS.input_dir}", f"--adv_dirs={','.join(folders)}",
                                f"--models={','.join(FLAGS.victims)}", f"--defenses={','.join(FLAGS.defenses)}",
                                f"--labels={FLAGS.labels}", f"--targeted={FLAGS.targeted}",
                                f"--report={os.path.join(FLAGS.output_dir, 'report.md')}"] + shared + data_flags
                + checkpoints_for(FLAGS.victims))


def main() -> None:
    cli.main("compare.py", run)


if __name__ == "__main__":
    main()
