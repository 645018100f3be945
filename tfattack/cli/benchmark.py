"""Benchmarks: model speed, real-model accuracy, attack speed and the transfer table.

  tfattack-benchmark --what=models [--models=inception_v3,vgg_19] [--batch_size=8] [--jit_compile]
  tfattack-benchmark --what=accuracy [--num_images=1000]
  tfattack-benchmark --what=transfer --num_images=50 --num_images_expensive=10
  tfattack-benchmark --what=transfer --targeted --num_images=200 [--attack_names=Logit,CFM] [--sources=single] [--plan]
  tfattack-benchmark --what=leaderboard [--methods=mi_fgsm,pgn] [--sources=single] [--eps_pixels=8] [--plan]
  TF_ENABLE_ONEDNN_OPTS=0 tfattack-benchmark --what=ray [--num_images=40]   # here vs 1 and 2 Ray workers
  tfattack-benchmark --what=attacks [--presets=mi_fgsm,admix] [--num_iter=2] [--xla=both] [--ensemble=...]
  tfattack-benchmark --what=speed [--quick]    # models, attacks, the TF1 peer, options (~20 min)
  tfattack-benchmark --what=memory [--memory_runs=admix_ti_dim:0,admix_ti_dim:5]

Each figure is printed as a markdown table and written as JSON under --output_dir.
"""

import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from absl import flags

from tfattack import cli
from tfattack.cli import engine_flags
from tfattack.runs import UsageError  # a bad flag value: one line, exit code 2

FLAGS = flags.FLAGS
WHATS = ("models", "accuracy", "attacks", "transfer", "leaderboard", "ray", "speed", "memory")
flags.DEFINE_enum("what", "models", WHATS + ("_one_model", "_peer", "_copies_memory"), "Which benchmark to run.")
flags.DEFINE_list("models", [], "Models to measure (default: every registered architecture that builds without files).")
flags.DEFINE_integer("batch_size", 8, "Batch size for speed measurements.")
flags.DEFINE_boolean("jit_compile", False, "Compile with XLA.")
flags.DEFINE_string("model_dir", None, "Where to find model files (os.pathsep separated); default: the model "
                    "search path (TFATTACK_MODEL_DIR, the checkpoint folder).")
flags.DEFINE_string("data_dir", None, "NIPS'17 DEV folder (images/ + dev_dataset.csv); needed by --what=accuracy "
                    "and transfer.")
flags.DEFINE_integer("num_images", 1000, "Images for accuracy/transfer benchmarks.")
flags.DEFINE_string("output_dir", "benchmarks", "Where the JSON/markdown results go.")
flags.DEFINE_list("presets", [], "Attack presets to time (default: all for --what=attacks, mi_fgsm and "
                  "si_ni_ti_dim for --what=speed).")
flags.DEFINE_list("ensemble", [], "Ensemble members for attack timing (default: resnet_v2_50, vgg_19, inception_v3, "
                  "inception_resnet_v2, the origin write-up's four architectures).")
flags.DEFINE_integer("num_iter", 2, "Attack iterations per timed call (after one untimed call that traces).")
flags.DEFINE_enum("xla", "both", ("both", "off", "on"), "Attack timing with XLA (jit_compile) off, on or both.")
flags.DEFINE_integer("peer_iter", 10, "MI-FGSM iterations of the TF1 peer comparison.")
flags.DEFINE_boolean("profile", False, "--what=attacks: also profile one call per preset and list its time by op type.")
flags.DEFINE_integer("num_images_expensive", 200, "--what=transfer and leaderboard: images for the attacks with "
                     "many gradient evaluations per step (SI, VT, Admix, augmentations); for the leaderboard, those "
                     "above 2 passes per iteration (its default: 500).")
flags.DEFINE_list("attack_names", [], "--what=transfer: the attacks (rows) to run; default: the protocol's table "
                  "(every attack but the 'TI-DI-MI bf16' variant and the engine-v2 methods), with --targeted every "
                  "targeted row.")
flags.DEFINE_boolean("targeted", False, "--what=transfer: the targeted table instead: rows Logit, Po+Trip, CFM, SU, "
                     "Logit-Margin (each at its preset: 300 iterations of 2/255 with TI/DI/MI), each image attacked "
                     "towards the DEV CSV's TargetClass, scored by target hit rate; written as transfer_targeted.* "
                     "with its sets under OUTPUT_DIR/transfer_targeted.")
flags.DEFINE_float("max_epsilon", 16, "--what=transfer: eps in pixels (of 255); the protocol's is 16. Another eps "
                   "needs its own --output_dir (crafted images are reused only for the same settings).")
flags.DEFINE_list("sources", [], "--what=transfer and leaderboard: the source settings (single, ensemble) to run; "
                  "default both.")
flags.DEFINE_boolean("craft_only", False, "--what=transfer and leaderboard: craft the adversarial sets (resumable) and stop before "
                     "scoring; a later run without it reuses them and writes the table.")
flags.DEFINE_integer("seed", 0, "--what=transfer and leaderboard: seed of every attack (same seed -> same table).")
flags.DEFINE_list("methods", [], "--what=leaderboard: the presets to rank (default: every untargeted preset but the "
                  "NIPS'17 sample attacks; the ensemble strategies on the ensemble source only).")
flags.DEFINE_list("eps_pixels", ["4", "8"], "--what=leaderboard: the eps settings, in pixels (of 255).")
flags.DEFINE_list("budgets", ["paper", "matched"], "--what=leaderboard: each method at its paper's settings "
                  "(paper) and brought to --matched_passes gradient passes per image (matched).")
flags.DEFINE_integer("matched_passes", 200, "--what=leaderboard: the matched budget, network passes per image over "
                     "the whole attack (200 = 20 per iteration of 10).")
flags.DEFINE_integer("rs_samples", 100, "--what=leaderboard: noisy copies per image of the randomized-smoothing "
                     "victims (rs:0.25:N, rs:0.5:N).")
flags.DEFINE_boolean("plan", False, "--what=transfer and leaderboard: list the sets it would craft (passes, images, "
                     "how many OUTPUT_DIR already holds; the leaderboard's budget) and the total passes and those "
                     "left, then stop.")
flags.DEFINE_list("memory_runs", None, "--what=memory (and speed): PRESET:COPIES_PER_PASS rows of the memory table "
                  "(one process each); default: tfattack.bench.speed.MEMORY_RUNS.")
flags.DEFINE_integer("memory_batch", 12, "--what=memory (and speed): batch of the memory table.")
flags.DEFINE_boolean("keep_other_rows", False, "--what=accuracy with --models: keep the other models' rows of the "
                     "existing OUTPUT_DIR/accuracy.json (same images) instead of dropping them.")
engine_flags.define("--what=transfer and leaderboard: where each set's batches are crafted", "the set's surrogate "
                    "and attack")
flags.adopt_module_key_flags(engine_flags)
flags.DEFINE_boolean("quick", False, "--what=speed: fewer models, presets and batches (a few minutes).")

# The --what values each flag acts on. A flag given with another --what is a one-line error, not silently
# ignored: a user who adds --plan to a transfer run expects a plan, not hours of crafting.
_CRAFTING = ("transfer", "leaderboard")
FLAG_WHATS = {
    "models": ("models", "accuracy", "speed", "_one_model"),
    "batch_size": ("models", "attacks", "speed", "_one_model", "_peer"),
    "jit_compile": ("models", "_one_model"),
    "model_dir": ("models", "accuracy", "transfer", "leaderboard", "ray", "speed", "_one_model"),
    "data_dir": ("accuracy", "transfer", "leaderboard", "ray"),
    "num_images": ("accuracy", "transfer", "leaderboard", "ray"),
    "output_dir": ("models", "accuracy", "attacks", "transfer", "leaderboard", "ray", "speed", "memory"),
    "presets": ("attacks", "speed"), "ensemble": ("attacks", "speed"), "num_iter": ("attacks", "speed"),
    "xla": ("attacks", "speed"), "peer_iter": ("speed", "_peer"), "profile": ("attacks",),
    "num_images_expensive": _CRAFTING, "sources": _CRAFTING, "craft_only": _CRAFTING, "seed": _CRAFTING,
    "plan": _CRAFTING,
    "attack_names": ("transfer",), "targeted": ("transfer",), "max_epsilon": ("transfer",),
    "methods": ("leaderboard",), "eps_pixels": ("leaderboard",), "budgets": ("leaderboard",),
    "matched_passes": ("leaderboard",), "rs_samples": ("leaderboard",),
    "memory_runs": ("memory", "speed", "_copies_memory"), "memory_batch": ("memory", "speed", "_copies_memory"),
    "keep_other_rows": ("accuracy",), "quick": ("speed",),
    **{name: _CRAFTING for name in engine_flags.NAMES},
}


def check_flag_scope() -> None:
    """A flag given on the command line that the chosen --what does not read is a UsageError naming both."""
    for name, whats in FLAG_WHATS.items():
        if FLAGS[name].present and FLAGS.what not in whats:
            public = [w for w in whats if not w.startswith("_")]
            raise UsageError(f"--{name} does nothing with --what={FLAGS.what}; it applies to "
                             f"{' and '.join('--what=' + w for w in public)}")


# Child processes (one per timed model or memory row, the TF1 peer) run this tool again with this Python.
THIS_TOOL = [sys.executable, "-m", "tfattack.cli.benchmark"]


def default_model_dir():
    return FLAGS.model_dir


def required_data_dir():
    if not FLAGS.data_dir:
        raise UsageError(f"--what={FLAGS.what} needs --data_dir (a NIPS'17 DEV folder: images/ and dev_dataset.csv)")
    return FLAGS.data_dir


def write_result(name, payload, markdown):
    """Writes `name`.json and `name`.md whole (never half a file), the JSON with this run's record: the command,
    kernels and versions that made its numbers (`tables.written_by` says them under the table)."""
    from tfattack import files, runs
    from tfattack.bench import tables
    payload = dict(payload, run=dict(runs.environment(), command=tables.command_line(sys.argv),
                                     kernels=runs.kernels()))
    markdown = f"{markdown}\n\n{tables.written_by(payload)}"
    runs.write_json_atomic(os.path.join(FLAGS.output_dir, f"{name}.json"), payload)
    files.atomic_write_text(os.path.join(FLAGS.output_dir, f"{name}.md"), markdown + "\n")
    print(markdown)


def run_models():
    import tfattack
    from tfattack.bench import model_speed, timing
    names = FLAGS.models or speed_candidates()
    rows = [model_speed.measure_in_subprocess(n, FLAGS.batch_size, FLAGS.jit_compile, THIS_TOOL,
                                              default_model_dir()) for n in names]
    rate = timing.matmul_flops_per_second()
    write_result("models", {"matmul_flops_per_second": rate, "rows": rows, "time": time.time()},
                 model_speed.markdown_table(rows, rate))


def speed_candidates():
    """One model per architecture, the first its family lists: the other weight files of an architecture
    (adversarially trained copies, the robustness library's, timm's TF ports) share its speed; the TFLite
    interpreter is not differentiable."""
    from tfattack.models import docs
    chosen = {}
    for spec in (spec for _, specs in docs.families() for spec in specs):
        if spec.source != "tflite_interpreter" and not spec.name.startswith("test_"):
            chosen.setdefault(spec.architecture, spec.name)
    return list(chosen.values())


def run_one_model():
    from tfattack.bench import model_speed
    result = model_speed.measure(FLAGS.models[0], FLAGS.batch_size, jit_compile=FLAGS.jit_compile,
                                 model_dir=default_model_dir())
    print(json.dumps(result))


def run_accuracy():
    from tfattack.bench import accuracy
    data_dir = required_data_dir()
    previous = None
    if FLAGS.keep_other_rows:
        path = os.path.join(FLAGS.output_dir, "accuracy.json")
        try:
            with open(path) as f:
                previous = json.load(f)
        except (OSError, ValueError) as err:
            raise UsageError(f"--keep_other_rows: cannot read {path} ({err})")
    try:
        payload, markdown = accuracy.run(FLAGS.models or None, data_dir, default_model_dir(), FLAGS.num_images,
                                         previous)
    except ValueError as err:  # unknown --models, or earlier results on other images
        raise UsageError(str(err))
    write_result("accuracy", payload, markdown)


def xla_modes(default="both"):
    choice = FLAGS.xla if FLAGS["xla"].present else default
    return {"both": (False, True), "off": (False,), "on": (True,)}[choice]


def attack_rows(presets, jit_modes, profile=False):
    """Times presets on the ensemble, printing each row as it comes (the full run takes a while)."""
    import tfattack
    from tfattack.bench import attack_speed
    names = FLAGS.ensemble or list(attack_speed.ORIGIN_ENSEMBLE)
    missing = attack_speed.missing_models(names)
    if missing:
        raise UsageError(f"--ensemble: unknown model(s) {', '.join(missing)}; known: "
                         f"{', '.join(tfattack.models.available())}")
    unknown = [p for p in presets if p not in tfattack.attacks.presets()]
    if unknown:
        raise UsageError(f"--presets: unknown preset(s) {', '.join(unknown)}; known: "
                         f"{', '.join(tfattack.attacks.presets())}")
    rows = []
    for row in attack_speed.measure_presets(presets, names, batch_size=FLAGS.batch_size, num_iter=FLAGS.num_iter,
                                            jit_modes=jit_modes, profile=profile):
        print("attack row:", json.dumps(row), flush=True)
        rows.append(row)
    return names, rows


def run_attacks():
    import tfattack
    from tfattack.bench import attack_speed
    names, rows = attack_rows(FLAGS.presets or tfattack.attacks.presets(), xla_modes(), FLAGS.profile)
    title = f"Attack speed on the ensemble {' + '.join(names)} (random weights), {FLAGS.num_iter} timed iterations."
    markdown = attack_speed.markdown_table(rows, title)
    if FLAGS.profile:
        markdown += "\n\nTime by op type (one profiled call):\n\n" + attack_speed.ops_table(rows)
    write_result("attacks", {"ensemble": names, "rows": rows, "time": time.time()}, markdown)


def run_peer():
    """MI-FGSM: the TF1 peer vs tfattack on one random Inception-v3 checkpoint (own process, prints JSON)."""
    import tempfile

    import tfattack
    tf1_peer = load_tf1_peer()
    from tfattack.bench import speed
    with tempfile.TemporaryDirectory() as folder:
        prefix = tf1_peer.write_random_checkpoint(os.path.join(folder, "inception_v3.ckpt"))
        peer = tf1_peer.SlimMiFgsm(prefix, FLAGS.batch_size, steps=FLAGS.peer_iter)
        model = tfattack.models.load("inception_v3", checkpoint=prefix)
        result = speed.compare_with_peer(peer, model, FLAGS.batch_size, FLAGS.peer_iter)
        peer.close()
    print(json.dumps(result))


def load_tf1_peer():
    """The TF1 peer (scripts/tf1_peer.py) needs tf_slim and the tests' slim shim: it runs from a source checkout."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "tf1_peer.py"
    if not path.is_file():
        raise UsageError("the TF1 peer comparison of --what=speed runs from a source checkout of tfattack "
                         f"(scripts/tf1_peer.py); not found at {path}")
    spec = importlib.util.spec_from_file_location("tf1_peer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peer_in_subprocess():
    from tfattack.bench import timing
    return timing.json_from_fresh_process(THIS_TOOL + ["--what=_peer",
                                           f"--batch_size={FLAGS.batch_size}", f"--peer_iter={FLAGS.peer_iter}"])


def run_copies_memory():
    from tfattack.bench import speed
    preset, copies_per_pass = FLAGS.memory_runs[0].split(":")
    print(json.dumps(speed.copies_memory(preset, int(copies_per_pass), FLAGS.memory_batch)))


def memory_rows():
    import tfattack
    from tfattack.bench import speed
    runs = FLAGS.memory_runs or [f"{preset}:{n}" for preset, n in speed.MEMORY_RUNS]
    for run in runs:
        preset, _, count = run.partition(":")
        if preset not in tfattack.attacks.presets() or not count.isdigit():
            raise UsageError(f"--memory_runs: {run!r} is not PRESET:COPIES_PER_PASS "
                             f"(a preset name and an integer >= 0)")
    return [copies_memory_in_subprocess(run, FLAGS.memory_batch) for run in runs]


def run_memory():
    """Section 5 of --what=speed on its own."""
    from tfattack.bench import speed
    rows = memory_rows()
    write_result("memory", {"rows": rows, "time": time.time()}, speed.memory_table(rows))


def copies_memory_in_subprocess(run: str, batch: int) -> dict:
    """`run` is "PRESET:COPIES_PER_PASS"."""
    from tfattack.bench import timing
    preset, copies_per_pass = run.split(":")
    command = THIS_TOOL + ["--what=_copies_memory", f"--memory_batch={batch}", f"--memory_runs={run}"]
    return timing.json_from_fresh_process(command, preset=preset, copies_per_pass=int(copies_per_pass), batch=batch)


def run_speed():
    import tfattack
    from tfattack.bench import attack_speed, model_speed, speed
    quick = FLAGS.quick
    started = time.time()
    names = FLAGS.models or (list(attack_speed.ORIGIN_ENSEMBLE) if quick else
                             speed_candidates())
    model_rows = []
    for name in names:
        model_rows.append(model_speed.measure_in_subprocess(name, FLAGS.batch_size, False, THIS_TOOL,
                                                            default_model_dir()))
        print("model row:", json.dumps(model_rows[-1]), flush=True)
    presets = FLAGS.presets or (["mi_fgsm"] if quick else ["mi_fgsm", "si_ni_ti_dim"])
    ensemble, preset_rows = attack_rows(presets, xla_modes("off" if quick else "both"))
    peer = peer_in_subprocess()
    print("peer:", json.dumps(peer), flush=True)
    batches = (1, FLAGS.batch_size) if quick else (1, FLAGS.batch_size, 32)
    option_rows = speed.option_rows(batches, FLAGS.num_iter)
    model = attack_speed.load_member(speed.OPTION_MODEL)
    agreement = speed.gradient_sign_agreement(model, model.with_compute_dtype("bfloat16"))
    notes = speed.default_notes(option_rows, agreement)
    memory = memory_rows()
    print("memory:", json.dumps(memory), flush=True)
    minutes = (time.time() - started) / 60
    markdown = "\n\n".join([
        f"# Speed (batch {FLAGS.batch_size}, this machine's CPU; {minutes:.0f} min for the whole run)",
        "## 1. Models (random weights; forward FLOPs counted from the traced graph)", speed.models_table(model_rows),
        f"## 2. Attacks on {' + '.join(ensemble)}", attack_speed.markdown_table(preset_rows),
        "## 3. MI-FGSM vs the TF1 research-code form (one random Inception-v3 checkpoint loaded by both)",
        speed.peer_table(peer) if "error" not in peer else f"peer failed: {peer['error']}",
        "## 4. Options", speed.options_table(option_rows),
        "## 5. Memory of a many-copy attack: copies_per_pass", speed.memory_table(memory),
        "## Defaults chosen", "\n".join(f"- {n}" for n in notes)])
    write_result("speed", {"models": model_rows, "attacks": preset_rows, "peer": peer, "options": option_rows,
                           "bfloat16_gradient_sign_agreement": agreement, "memory": memory, "notes": notes,
                           "minutes": minutes, "time": time.time()}, markdown)


def say_crafted_only(folder):
    print(f"benchmark.py: crafted sets are in {folder}; run again without --craft_only to score them", file=sys.stderr)


@contextlib.contextmanager
def crafting_engine():
    """None (crafting here), or with --engine=ray a maker of each set's Ray crafter, all on one Ray connection."""
    engine_flags.check()
    if FLAGS.engine == "local":
        yield None
        return
    from tfattack import scale

    def say(text):
        print(f"benchmark.py: {text}", file=sys.stderr)

    def make_crafter(ensemble, attack, targeted):
        return scale.RayCrafter(ensemble, attack, targeted, **engine_flags.pool_options(say))

    with scale.session(FLAGS.ray_address, FLAGS.num_workers, FLAGS.worker_cpus):
        yield make_crafter


def run_transfer():
    from tfattack.bench import transfer
    data_dir = required_data_dir()
    # Targeted sets, kept scores and table files have a tree and names of their own: never mixed with untargeted ones.
    table = "transfer_targeted" if FLAGS.targeted else "transfer"
    folder = os.path.join(FLAGS.output_dir, table)
    for name in ("num_images", "num_images_expensive"):
        if FLAGS[name].value < 1:
            raise UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}")
    if not 0 < FLAGS.max_epsilon <= 255:
        raise UsageError(f"--max_epsilon must be in (0, 255] pixels, got {FLAGS.max_epsilon:g}")
    unknown_sources = sorted(set(FLAGS.sources) - set(transfer.SOURCES))
    if unknown_sources:
        raise UsageError(f"--sources: unknown {', '.join(unknown_sources)}; known: {', '.join(transfer.SOURCES)}")
    unknown = sorted(set(FLAGS.attack_names) - set(transfer.ATTACKS))
    if unknown:
        raise UsageError(f"--attack_names: unknown {', '.join(unknown)}; "
                         f"known: {', '.join(transfer.ATTACKS)}")
    mixed = transfer.of_the_other_kind(FLAGS.attack_names, FLAGS.targeted)
    if mixed and FLAGS.targeted:
        raise UsageError(f"--attack_names: {', '.join(mixed)} not in the targeted table; with --targeted choose "
                         f"among {', '.join(transfer.TARGETED)}")
    if mixed:
        raise UsageError(f"--attack_names: {', '.join(mixed)} in the targeted table only; add --targeted")
    sources = FLAGS.sources or tuple(transfer.SOURCES)
    stranded = [n for n in FLAGS.attack_names if not transfer.table_sets(sources, [n])]
    if stranded:
        raise UsageError(f"--attack_names: {', '.join(stranded)} attack ensembles only; add --sources=ensemble")
    if FLAGS.plan:
        for line in transfer.plan(data_dir, folder, num_images=FLAGS.num_images,
                                  num_images_expensive=min(FLAGS.num_images_expensive, FLAGS.num_images),
                                  attacks=FLAGS.attack_names or None, sources=sources, seed=FLAGS.seed,
                                  max_epsilon=FLAGS.max_epsilon, targeted=FLAGS.targeted):
            print(line)
        return
    with crafting_engine() as make_crafter:
        payload = transfer.run(data_dir, default_model_dir(), folder, num_images=FLAGS.num_images,
                               num_images_expensive=min(FLAGS.num_images_expensive, FLAGS.num_images),
                               attacks=FLAGS.attack_names or None, batch_size=10, seed=FLAGS.seed,
                               max_epsilon=FLAGS.max_epsilon, sources=sources, craft_only=FLAGS.craft_only,
                               targeted=FLAGS.targeted, log=lambda line: print(line, file=sys.stderr),
                               make_crafter=make_crafter)
    if payload is None:
        say_crafted_only(folder)
        return
    transfer.write_csv(payload, os.path.join(FLAGS.output_dir, f"{table}.csv"))
    transfer.heatmap(payload, os.path.join(FLAGS.output_dir, f"{table}.png"))
    write_result(table, payload, transfer.markdown(payload))


def leaderboard_plan():
    """The planned sets from the flags; bad values are one line naming the flag."""
    from tfattack.bench import leaderboard_run
    eps = []
    for value in FLAGS.eps_pixels:
        try:
            eps.append(float(value))
        except ValueError:
            raise UsageError(f"--eps_pixels: {value!r} is not a number of pixels") from None
        if not 0 < eps[-1] <= 255:
            raise UsageError(f"--eps_pixels: {value} is not in (0, 255] pixels")
    eps = [int(e) if e.is_integer() else e for e in eps]
    # The protocol: 500 images for the methods above 2 passes per iteration (transfer's default is 200).
    expensive = FLAGS.num_images_expensive if FLAGS["num_images_expensive"].present else 500
    for name in ("num_images", "num_images_expensive", "matched_passes", "rs_samples"):
        if FLAGS[name].value < 1:
            raise UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}")
    try:
        planned = leaderboard_run.plan(FLAGS.methods or leaderboard_run.METHODS,
                                       FLAGS.sources or tuple(leaderboard_run.SOURCES), eps, FLAGS.budgets,
                                       num_images=FLAGS.num_images, num_images_expensive=expensive,
                                       matched_passes=FLAGS.matched_passes, seed=FLAGS.seed)
    except ValueError as err:  # "methods: unknown ...": the flag of the same name
        raise UsageError(f"--{err}") from None
    if not planned:
        raise UsageError("--methods: only ensemble strategies chosen, and --sources has no ensemble; add "
                         "--sources=ensemble")
    return planned


def run_leaderboard():
    from tfattack.bench import leaderboard, leaderboard_run, transfer
    planned = leaderboard_plan()
    if FLAGS.plan:
        surrogates = leaderboard_run.load_surrogates(dict.fromkeys(e.source for e in planned), default_model_dir())
        planned, left_out = leaderboard_run.applicable(planned, surrogates)
        for name, why in left_out.items():
            print(f"{name}: left out: {why}")
        crafted = leaderboard_run.crafted_sets(planned)
        folder = os.path.join(FLAGS.output_dir, "leaderboard")
        ids = None
        if FLAGS.data_dir and os.path.isdir(folder):  # which images each set needs: the first N of the DEV set
            from tfattack import data
            ids = data.read_dataset(os.path.join(FLAGS.data_dir, "images"),
                                    csv=os.path.join(FLAGS.data_dir, "dev_dataset.csv")).ids
        done = {e.crafted_as: leaderboard_run.crafted_count(folder, e, ids) for e in crafted}
        for entry in planned:
            shared = "" if entry.crafted_as == entry.name else f" (the images of {entry.crafted_as})"
            print(f"{entry.name}: {entry.passes} passes/image x {entry.images} images; {entry.how}{shared}; "
                  f"crafted {done[entry.crafted_as]}/{entry.images} in {folder}")
        histories = {e.crafted_as: transfer.recorded_crafting(leaderboard_run.folder_of(folder, e.crafted_as))
                     for e in crafted} if os.path.isdir(folder) else {}
        print(leaderboard_run.plan_totals(planned, done, histories))
        return
    folder = os.path.join(FLAGS.output_dir, "leaderboard")
    with crafting_engine() as make_crafter:
        payload = leaderboard_run.run(required_data_dir(), default_model_dir(), folder, planned,
                                      num_images=FLAGS.num_images, seed=FLAGS.seed, rs_samples=FLAGS.rs_samples,
                                      craft_only=FLAGS.craft_only, log=lambda line: print(line, file=sys.stderr),
                                      make_crafter=make_crafter)
    if payload is None:
        say_crafted_only(folder)
        return
    leaderboard.write_csv(payload["rows"], os.path.join(FLAGS.output_dir, "leaderboard.csv"))
    leaderboard_run.write_figures(payload, FLAGS.output_dir)
    write_result("leaderboard", payload, leaderboard_run.markdown(payload))


def run_ray():
    """Crafting here against crafting on 1 and 2 Ray workers: the scaling row."""
    from tfattack import data
    from tfattack.bench import ray_speed
    from tfattack.scale import require_ray
    require_ray("--what=ray")
    count = FLAGS.num_images if FLAGS["num_images"].present else 40
    dataset = data.read_dataset(os.path.join(required_data_dir(), "images"))
    if count > len(dataset):
        raise UsageError(f"--num_images {count}: {FLAGS.data_dir} has {len(dataset)} images")
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        raise UsageError("--what=ray compares the engines' bytes, which needs TensorFlow's oneDNN rewrites off here "
                         "and in the workers: run it with TF_ENABLE_ONEDNN_OPTS=0")
    payload = ray_speed.measure(dataset.select(dataset.ids[:count]), default_model_dir(),
                                log=lambda line: print(line, file=sys.stderr))
    write_result("ray_speed", payload, ray_speed.markdown(payload))


def run() -> int:
    runners = {"transfer": run_transfer, "leaderboard": run_leaderboard, "ray": run_ray, "models": run_models, "_one_model": run_one_model, "accuracy": run_accuracy,
               "attacks": run_attacks, "speed": run_speed, "memory": run_memory, "_peer": run_peer,
               "_copies_memory": run_copies_memory}
    if FLAGS.what not in runners:
        raise UsageError(f"--what={FLAGS.what} is not available; choose one of "
                         f"{', '.join(n for n in runners if not n.startswith('_'))}")
    check_flag_scope()
    from tfattack.models import checkpoint, loading, tfjs, tflite_reader

    # What a user can get wrong in weight files is one line too; anything else keeps its traceback.
    model_errors = (loading.ModelNotFoundError, checkpoint.CheckpointError, tfjs.TfjsModelError,
                    tflite_reader.TFLiteFormatError)
    try:
        runners[FLAGS.what]()
    except model_errors as err:
        raise UsageError(str(err)) from None
    return 0


def main() -> None:
    cli.main("benchmark.py", run)


if __name__ == "__main__":
    main()
