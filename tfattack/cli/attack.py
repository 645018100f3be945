"""Craft adversarial examples for a folder of images (NIPS 2017 competition layout).

  tfattack-attack --input_dir=DIR --output_dir=OUT \\
      --models=ens3_adv_inception_v3,inception_v3:0.5 --attack=ti_di_mi_fgsm \\
      --max_epsilon=16 --num_iter=10 --batch_size=10 [--targeted] [--seed=0]

--engine=ray crafts the batches on Ray actors (an embedded Ray, or a cluster with --ray_address; see tfattack.scale):
the same PNGs and run.json as a local run, resumable by either.
The preset's components can be replaced with spec strings (--transforms=di:0.5,bsr --estimator=pgn --update=mi:1.0,
see --helpfull and docs/attacks.md); the 0.1 piece flags (--momentum, --ti_kernel, ...) still work.
Writes one lossless PNG per input image (same name) and `run.json` into --output_dir; a rerun skips
finished images unless --overwrite. Bad input: one line on stderr and exit code 2.
"""

import contextlib
import sys
import time

from absl import flags

from tfattack import cli
from tfattack.cli import attack_flags, engine_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Folder of input images (PNG/JPEG), NIPS'17 layout.")
flags.DEFINE_string("output_dir", None, "Where the adversarial PNGs and run.json go (never the input folder).")
flags.DEFINE_string("csv", None, "Metadata CSV (default: dev_dataset.csv or images.csv in --input_dir, "
                    "else none: the clean ensemble's predictions are the labels).")
flags.DEFINE_string("target_class_csv", None, "NIPS'17 target_class.csv (filename,class) for --targeted runs "
                    "(default: the metadata CSV's TargetClass, else target_class.csv in --input_dir).")
flags.DEFINE_list("models", ["efficientnet_lite0"], "Surrogate ensemble: registry names, each optionally :weight.")
flags.DEFINE_list("checkpoints", [], "Explicit weight locations, name=path (default: the model search path).")
flags.DEFINE_string("model_dir", None, "Extra folders searched for weights (os.pathsep separated); "
                    "also TFATTACK_MODEL_DIR.")
flags.DEFINE_enum("fuse", "logits", ["logits", "probs", "loss"], "How the ensemble members are fused "
                  "(logits: before the softmax, Dong et al. 2018).")
flags.DEFINE_string("attack", "ti_di_mi_fgsm", f"Attack preset: {', '.join(attack_flags.preset_names())} "
                    "(docs/attacks.md describes each).")
flags.DEFINE_float("max_epsilon", 16.0, "L-inf budget in pixel units 0..255, as in NIPS 2017.")
flags.DEFINE_integer("num_iter", None, "Iterations (default: the preset's).")
flags.DEFINE_integer("batch_size", 10, "Images per batch.")
flags.DEFINE_boolean("targeted", False, "Targeted attack toward the CSV's TargetClass / target_class.csv.")
flags.DEFINE_boolean("overwrite", False, "Attack again images already in --output_dir.")
flags.DEFINE_integer("num_shards", 1, "Split the image list into this many deterministic shards ...")
flags.DEFINE_integer("shard_index", 0, "... and attack only this one (0-based).")
flags.DEFINE_enum("strategy", "none", ["none", "mirrored"], "mirrored: data-parallel over all visible GPUs "
                  "(tf.distribute.MirroredStrategy).")
flags.DEFINE_integer("logical_cpus", 0, "With --strategy=mirrored and no GPU: split the CPU into this many logical "
                     "devices (to test the mirrored path).")
engine_flags.define("Where batches are crafted", "the ensemble")
flags.DEFINE_boolean("random_weights", False, "Use random weights instead of checkpoints (tests and speed only).")
attack_flags.define_piece_flags()
flags.adopt_module_key_flags(attack_flags)
flags.adopt_module_key_flags(engine_flags)


def check_flags():
    from tfattack.runs import UsageError

    if not FLAGS.input_dir:
        raise UsageError("--input_dir is required")
    if not FLAGS.output_dir:
        raise UsageError("--output_dir is required")
    if FLAGS.norm == "l2":
        if not 0 < FLAGS.max_epsilon < float("inf"):
            raise UsageError(f"--max_epsilon must be a finite L2 radius > 0 in pixel units, got {FLAGS.max_epsilon:g}")
    elif not 0 < FLAGS.max_epsilon <= 255:
        raise UsageError(f"--max_epsilon must be in (0, 255] pixel units, got {FLAGS.max_epsilon:g}")
    if FLAGS.max_epsilon < 1:
        # Outputs are 8-bit PNGs kept inside the ball: below one level every pixel rounds back to its input.
        raise UsageError(f"--max_epsilon {FLAGS.max_epsilon:g} is below one 8-bit level (1 pixel unit): every "
                         f"output PNG would equal its input; use --max_epsilon >= 1")
    if FLAGS.num_iter is not None and FLAGS.num_iter < 1:
        raise UsageError(f"--num_iter must be >= 1, got {FLAGS.num_iter}")
    if FLAGS.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
    if FLAGS.num_shards < 1 or not 0 <= FLAGS.shard_index < FLAGS.num_shards:
        raise UsageError(f"--shard_index must be in 0..{FLAGS.num_shards - 1} (--num_shards={FLAGS.num_shards})")
    if FLAGS.logical_cpus and FLAGS.strategy != "mirrored":
        raise UsageError(f"--logical_cpus={FLAGS.logical_cpus} only applies with --strategy=mirrored")
    if FLAGS.engine == "ray" and FLAGS.strategy != "none":
        raise UsageError(f"--strategy={FLAGS.strategy} and --engine=ray are alternatives: give one of them (each Ray "
                         f"worker takes --worker_gpus GPUs of its own)")
    engine_flags.check()


def attack_recipe():
    """The preset and overrides the flags ask for (what `build_attack` builds, and each Ray worker too)."""
    import tfattack
    from tfattack import scale
    from tfattack.runs import UsageError

    if FLAGS.attack not in tfattack.attacks.presets():
        from tfattack.names import did_you_mean
        known = tfattack.attacks.presets()
        raise UsageError(f"--attack: unknown attack {FLAGS.attack!r}{did_you_mean(FLAGS.attack, known)}; known: "
                         f"{', '.join(known)}")
    overrides = attack_flags.piece_overrides()
    overrides["eps"] = FLAGS.max_epsilon / 255.0
    if FLAGS.num_iter is not None:
        overrides["steps"] = FLAGS.num_iter
    return scale.AttackRecipe(FLAGS.attack, overrides)


def build_attack(recipe=None):
    from tfattack.runs import UsageError

    recipe = recipe or attack_recipe()
    try:
        return recipe.build()
    except ValueError as err:
        raise UsageError(str(err)) from None


def check_surrogates(attack, ensemble):
    """What the attack needs from the surrogates' networks (a backward policy's ReLUs or residual blocks, feature
    taps), checked before any image is read."""
    from tfattack.attacks.loop import check_surrogate
    from tfattack.runs import UsageError

    try:
        check_surrogate(ensemble, attack.config, FLAGS.targeted)
    except ValueError as err:
        raise UsageError(f"--attack={FLAGS.attack}: {err}") from None


def run() -> int:
    from tfattack import data, pipeline, record, runs

    started = time.time()
    me = cli.program("attack.py")
    check_flags()
    data.check_output_dir(FLAGS.input_dir, FLAGS.output_dir)
    runs.check_output_folder(FLAGS.output_dir, "--output_dir")
    dataset = data.read_dataset(FLAGS.input_dir, csv=FLAGS.csv, target_class_csv=FLAGS.target_class_csv)
    for note in dataset.notes:
        print(f"{me}: {note}", file=sys.stderr)
    if FLAGS.targeted:
        dataset.require_targets()
    dataset = dataset.select(data.shard(dataset.ids, FLAGS.num_shards, FLAGS.shard_index))
    recipe = attack_recipe()
    attack = build_attack(recipe)
    entries = runs.parse_models(FLAGS.models, surrogates=True)
    checkpoints = runs.parse_checkpoints(FLAGS.checkpoints)
    strategy = None
    if FLAGS.strategy == "mirrored":
        from tfattack import distributed
        if FLAGS.logical_cpus:
            distributed.use_logical_cpus(FLAGS.logical_cpus)
        strategy = distributed.make_strategy()
        print(f"{me}: mirrored over {strategy.num_replicas_in_sync} device(s)", file=sys.stderr)
    with strategy.scope() if strategy else contextlib.nullcontext():
        ensemble = runs.build_ensemble(entries, checkpoints, FLAGS.model_dir, FLAGS.fuse, FLAGS.random_weights)
    check_surrogates(attack, ensemble)
    if strategy is not None:
        attack = distributed.MirroredAttack(attack, strategy)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    admix_warning = pipeline.admix_batch_warning(attack.config, FLAGS.batch_size, len(dataset.ids), replicas)
    if admix_warning:
        print(f"{me}: warning: {admix_warning}", file=sys.stderr)
    if dataset.labels is None:
        print(f"{me}: no labels in the metadata: attacking the clean ensemble's predictions", file=sys.stderr)
    info = {
        "flags": {f.name: f.value for f in FLAGS.get_flags_for_module(sys.modules[__name__])
                  + FLAGS.get_flags_for_module(attack_flags)},
        "shard": {"num_shards": FLAGS.num_shards, "shard_index": FLAGS.shard_index, "image_ids": list(dataset.ids)},
        "environment": runs.environment(),
        "command": sys.argv,
    }
    bars = []

    def start_progress(total):
        bars.append(runs.Progress(total))
        return bars[-1].update

    def say(text):
        from tqdm import tqdm
        tqdm.write(f"{me}: {text}", file=sys.stderr)  # above a live progress bar, not through it

    crafter = contextlib.nullcontext()
    if FLAGS.engine == "ray":
        # The driver built the ensemble above for the record and the surrogate checks; each worker builds its own.
        from tfattack import scale
        ensemble_recipe = scale.EnsembleRecipe(entries, checkpoints, FLAGS.model_dir, FLAGS.fuse, FLAGS.random_weights)
        crafter = scale.RayCrafter(ensemble_recipe, recipe, FLAGS.targeted,
                                   **engine_flags.pool_options(say, quiet=not FLAGS.verbose))
    try:
        with crafter:
            summary = pipeline.attack_dataset(
                dataset, FLAGS.output_dir, ensemble, attack, batch_size=FLAGS.batch_size, targeted=FLAGS.targeted,
                overwrite=FLAGS.overwrite, record_name=record.record_name(FLAGS.num_shards, FLAGS.shard_index),
                info=info, progress=start_progress, crafter=crafter if FLAGS.engine == "ray" else None)
    finally:
        for bar in bars:
            bar.close()
    for note in summary.notes:
        print(f"{me}: {note}", file=sys.stderr)
    for failure in summary.failed:
        print(f"{me}: skipped {failure['reason']}", file=sys.stderr)
    print(f"{me}: {len(summary.written)} written, {len(summary.already_done)} already done, "
          f"{len(summary.failed)} failed, {summary.images_per_second:.2f} images/s, "
          f"{time.time() - started:.0f} s in all -> {FLAGS.output_dir}", file=sys.stderr)
    return 0


def main() -> None:
    cli.main("attack.py", run, interrupted_note="the finished images and their run record are kept: run the same "
                                                "command again to resume")


if __name__ == "__main__":
    main()
