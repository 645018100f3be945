"""Evaluates adversarial folders against victims behind input-transformation defenses; writes a report.

    tfattack-evaluate --input_dir=samples/images --adv_dirs=outputs/adv \\
        --models=efficientnet_lite2,vgg_16 --defenses=none,jpeg:75,bits:4,rp,median:3 --report=outputs/report.md

Each entry of --models is a separate victim (registry names; weights found as `tfattack.models.load`
finds them, or --checkpoints=name=path,...). Writes report.md plus report.csv, report.json and two PNG
plots next to it. Bad input (unknown model or defense, missing folder, bad CSV) exits with code 2 and
one line on stderr. --engine=ray scores each (victim, defense) pair on a Ray worker (tfattack.scale.RayScorer): the
same numbers as a local run.
"""

import contextlib
import os
import sys

from absl import flags

from tfattack import cli
from tfattack.cli import engine_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Folder of the clean images (<ImageId>.png).")
flags.DEFINE_list("adv_dirs", None, "Comma-separated folders of adversarial PNGs (same file names), one per attack.")
flags.DEFINE_list("models", None, "Comma-separated registry names; each is a separate victim.")
flags.DEFINE_list("defenses", ["none"],
                  "Comma-separated defenses: none, jpeg:QUALITY, bits:BITS, rp, median:K, gauss:SIGMA, rs:SIGMA:N "
                  "(randomized smoothing), and stacks A+B+... applied left to right (e.g. jpeg:75+bits:4+rp).")
flags.DEFINE_string("report", "report.md", "Markdown report path; .csv, .json and *_success.png/_examples.png go next to it.")
flags.DEFINE_float("max_epsilon", None, "Eps bound in pixels (0..255) to verify; default: each adv dir's run.json max_epsilon.")
flags.DEFINE_enum("labels", "truth", ["truth", "clean_prediction"],
                  "truth: the metadata CSV's TrueLabel; clean_prediction: the surrogate's clean top-1 (of "
                  "--label_models, or as the attack runs recorded it in run.json when --label_models is not given).")
flags.DEFINE_list("label_models", None, "Surrogate ensemble (name[:weight],...) whose clean prediction is the label "
                  "with --labels=clean_prediction (default: the labels attack.py recorded in each adv dir's run.json).")
flags.DEFINE_enum("denominator", "clean_correct", ["clean_correct", "all"],
                  "Headline success rate over the images each victim got right when clean, or over all images "
                  "(both are in the CSV/JSON).")
flags.DEFINE_string("csv", None, "Metadata CSV (ImageId,...,TrueLabel,TargetClass,...); default: dev_dataset.csv or "
                    "images.csv next to the images or in their parent folder.")
flags.DEFINE_string("target_class_csv", None, "NIPS'17 target_class.csv (filename,class; no header) for targeted sets.")
flags.DEFINE_boolean("targeted", False, "Treat adv dirs whose run.json does not say as targeted.")
flags.DEFINE_list("checkpoints", [], "Comma-separated name=path weights for --models / --label_models.")
flags.DEFINE_string("model_dir", None, "Folder(s) searched for weights (os.pathsep separated), before TFATTACK_MODEL_DIR.")
flags.DEFINE_boolean("random_weights", False, "Random weights instead of checkpoints (tests and timing only).")
flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
flags.DEFINE_integer("seed", 0, "Seed of the random defenses (rp, rs); an image's draws follow its ImageId.")
flags.DEFINE_integer("examples", 4, "Example images in the examples plot (0 = none).")
flags.DEFINE_boolean("allow_partial", False, "Accept adversarial sets with missing or unreadable images: the rates "
                     "are then over the images that were read (the count is next to every rate). Without it, a "
                     "missing file stops the run before any model loads and an unreadable one makes it exit 1.")
engine_flags.define("Where the (victim, defense) pairs are scored (each over every image)", "the victims it has "
                    "scored")
flags.adopt_module_key_flags(engine_flags)


def run() -> int:
    from tfattack import data, defenses, evaluate, report, runs

    for name in ("input_dir", "adv_dirs", "models"):
        if not FLAGS[name].value:
            raise runs.UsageError(f"--{name} is required")
    if FLAGS.batch_size < 1:
        raise runs.UsageError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
    if FLAGS.label_models and FLAGS.labels != "clean_prediction":
        raise runs.UsageError("--label_models only applies with --labels=clean_prediction (the labels are the CSV's "
                              "TrueLabel now)")
    defense_list = defenses.parse_list(FLAGS.defenses, seed=FLAGS.seed)
    engine_flags.check()
    victims_names = [n for n, _ in runs.parse_models(FLAGS.models)]
    if len(set(victims_names)) != len(victims_names):
        raise runs.UsageError(f"--models: a victim is listed twice: {','.join(FLAGS.models)}")
    dataset = data.read_dataset(FLAGS.input_dir, csv=FLAGS.csv, target_class_csv=FLAGS.target_class_csv)
    if FLAGS.labels == "truth" and dataset.labels is None:
        raise runs.UsageError(f"--input_dir {FLAGS.input_dir} has no ground-truth labels (no dev_dataset.csv/images.csv"
                              f"): pass --csv=FILE or --labels=clean_prediction")
    targeted = FLAGS["targeted"].value if FLAGS["targeted"].present else None
    adv_sets = [evaluate.read_adv_set(path, targeted=targeted, max_epsilon=FLAGS.max_epsilon)
                for path in FLAGS.adv_dirs if path.strip()]
    names = [s.name for s in adv_sets]
    if len(set(names)) != len(names):  # same folder name in different places: use the paths as names
        adv_sets = [evaluate.read_adv_set(s.path, targeted=targeted, max_epsilon=FLAGS.max_epsilon, name=s.path)
                    for s in adv_sets]
    if not FLAGS.allow_partial:
        for adv_set in adv_sets:
            absent = evaluate.absent_images(dataset, adv_set)
            if absent:
                raise runs.UsageError(
                    f"adv dir {adv_set.path}: {len(absent)} of the {len(dataset)} images of {FLAGS.input_dir} have no "
                    f"adversarial file ({', '.join(i + '.png' for i in absent[:3])}{' ...' if len(absent) > 3 else ''}"
                    f"): finish the attack (rerun attack.py), or pass --allow_partial to rate the others")
    if FLAGS.labels == "clean_prediction" and not FLAGS.label_models:
        evaluate.recorded_labels(dataset, adv_sets)  # fails now, before any model loads, if a set records none
    report_dir = os.path.dirname(os.path.abspath(FLAGS.report))
    for path in [FLAGS.input_dir] + [s.path for s in adv_sets]:
        if os.path.abspath(path) == report_dir:
            raise runs.UsageError(f"--report {FLAGS.report} would write into the image folder {path}; choose another folder")

    checkpoints = runs.parse_checkpoints(FLAGS.checkpoints)
    label_entries = runs.parse_models(FLAGS.label_models, "--label_models") if FLAGS.label_models else []
    unused = sorted(set(checkpoints) - set(victims_names) - {n for n, _ in label_entries})
    if unused:
        raise runs.UsageError(f"--checkpoints names model(s) not in --models or --label_models: {', '.join(unused)}")
    victims = runs.load_models(victims_names, {k: v for k, v in checkpoints.items() if k in victims_names},
                               FLAGS.model_dir, FLAGS.random_weights)
    label_model = None
    if label_entries:
        label_model = runs.build_ensemble(label_entries, {k: v for k, v in checkpoints.items()
                                                          if k in {n for n, _ in label_entries}},
                                          FLAGS.model_dir, random_weights=FLAGS.random_weights)

    for note in dataset.notes:
        print(f"note: {note}", file=sys.stderr)
    scorer = contextlib.nullcontext()
    if FLAGS.engine == "ray":
        # The victims loaded above (every weight file checked before any work); each worker loads its own.
        from tfattack import scale
        recipes = {n: scale.VictimRecipe(n, checkpoints.get(n), FLAGS.model_dir, FLAGS.random_weights)
                   for n in victims_names}
        scorer = scale.RayScorer(recipes, **engine_flags.pool_options(
            lambda text: print(f"{cli.program('evaluate.py')}: {text}", file=sys.stderr)))
    with scorer:
        progress = runs.Progress(len(dataset))
        result = evaluate.evaluate(dataset, adv_sets, victims, defense_list, label_source=FLAGS.labels,
                                   label_model=label_model if FLAGS.labels == "clean_prediction" else None,
                                   denominator=FLAGS.denominator, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                   progress=progress.update, scorer=None if FLAGS.engine == "local" else scorer)
        progress.close()
    paths = report.write_report(result, FLAGS.report, examples=FLAGS.examples)
    for p in result.perturbations:
        if p.violations:
            print(f"WARNING: {p.attack}: {len(p.violations)} image(s) exceed the eps bound {p.max_epsilon:g}",
                  file=sys.stderr)
    for r in result.results:
        total = r.images + r.not_evaluated
        coverage = f"{r.images} of {total} images" + (f", {r.not_evaluated} NOT EVALUATED" if r.not_evaluated else "")
        print(f"{r.attack}\t{r.model}\t{r.defense}\tclean acc {100 * r.clean_accuracy:.1f}%\t"
              f"success {100 * r.success_rate:.1f}% over {evaluate.DENOMINATOR_TEXT[r.denominator]} ({coverage})")
    print("wrote " + ", ".join(paths.values()))
    unread = {p.attack: len(p.skipped) for p in result.perturbations if p.skipped}
    if unread and not FLAGS.allow_partial:
        return cli.error(cli.program("evaluate.py"), f"{sum(unread.values())} adversarial image(s) could not be read "
                         f"({', '.join(f'{n}: {c}' for n, c in unread.items())}; the report's notes name them): the "
                         f"rates are over the others; pass --allow_partial to accept that", cli.EXIT_OS)
    return 0


def main() -> None:
    cli.main("evaluate.py", run)


if __name__ == "__main__":
    main()
