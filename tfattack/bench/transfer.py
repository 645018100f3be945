"""The transfer table: attacks crafted on offline surrogates, scored on held-out real victims and defenses.

Protocol (issue 6): eps 16/255, 10 iterations, step eps/10, mu 1, the papers' defaults otherwise
(DI p 0.5, TI kernel 7, SI 5 copies, VT N 20 beta 1.5, Admix eta 0.2 with 3 copies); ground-truth
labels; success over the images each victim classifies correctly when clean. Every adversarial image
goes through the 8-bit PNG files that `pipeline.attack_dataset` writes, and is scored from them.

The targeted table (`run(..., targeted=True)`, rows TARGETED): each attack at its preset (300 iterations of
2/255 with TI/DI/MI, the setting of Zhao et al. NeurIPS 2021), eps as above; each image is attacked towards
the DEV CSV's TargetClass and a victim's prediction counts only when it is that class (the target hit rate).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

import tfattack
from tfattack import data, evaluate as evaluation_lib, pipeline, runs
from tfattack.record import RecordError

MAX_EPSILON = 16  # pixels (of 255): the protocol's eps; --max_epsilon runs the table at another one
COMMON = dict(steps=10, step_size=0.0)  # step_size 0: eps / steps
_TI7, _DI = dict(ti_kernel=7), dict(diversity_prob=0.5)


def keeps_own_schedule(config) -> bool:
    """Whether a preset's paper fixes its own schedule: steps other than 1 or the protocol's, or a step size."""
    return config.steps not in (1, COMMON["steps"]) or bool(config.step_size)


# name -> (preset, overrides); overrides pin the protocol where a preset's paper differs.
ATTACKS = {
    "FGSM": ("fgsm", {}),
    "I-FGSM": ("i_fgsm", {}),
    "MI-FGSM": ("mi_fgsm", {}),
    "NI-FGSM": ("ni_fgsm", {}),
    "DI-MI": ("di_mi_fgsm", {}),
    "TI-MI": ("ti_mi_fgsm", _TI7),
    "TI-DI-MI": ("ti_di_mi_fgsm", _TI7),
    "SI-NI-TI-DIM": ("si_ni_ti_dim", _TI7),
    "VMI-TI-DIM": ("vmi_fgsm", {**_TI7, **_DI}),
    # Admix mixes in x' from the other images of the batch, so it crafts at the full batch (at the many-copy
    # attacks' batch of 2, x' was always the one other image: eps 4 success 48 vs 71 % on Lite2) and bounds
    # its memory by pushing 3 of its 15 copies through the model at a time instead.
    "Admix-TI-DIM": ("admix_ti_dim", {**_TI7, "copies_per_pass": 3}),
    # The origin write-up's augmentations on top of TI-DI-MI: two random views per step, each with
    # one of flip / translate / noise / brighten / darken / rotate / JPEG-ish / scale (expectation over
    # transformations, so the gradient does not over-fit one view of the surrogate).
    "TI-DI-MI+Aug": ("ti_di_mi_fgsm", {**_TI7, "augmentations": ("flip", "translate", "noise", "brighten", "darken",
                                                                  "scale"),
                                       "augment_mode": "one", "num_copies": 2}),
    # The compute_dtype option's price in transfer: TI-DI-MI again with the surrogates' networks in bfloat16
    # (members without bfloat16 support, the TF.js ones, stay float32).
    "TI-DI-MI bf16": ("ti_di_mi_fgsm", {**_TI7, "compute_dtype": "bfloat16"}),
}
# The engine-v2 methods, each at its preset (the paper's settings; eps scaled to the table's). They are asked for
# by name (--attack_names): at 10-900 gradient evaluations per iteration they are the table's expensive rows.
MODERN = {"BSR": "bsr", "BSR-TI-DIM": "bsr_ti_dim", "SIA": "sia", "SSA": "ssa", "SSA-TI-DIM": "ssa_ti_dim",
          "MaskBlock": "maskblock", "DeCoWA": "decowa", "PGN": "pgn", "PGN-DI": "pgn_di", "GRA": "gra", "EMI": "emi",
          "GI-MI": "gimi", "MIG": "mig", "MEF": "mef", "RAP": "rap", "L2T": "l2t", "OPS": "ops",
          # The surrogate-introspection methods: Lite0's MBConv residuals (SGM, Ghost), ReLU6s (BPA), 'mid' tap (ILA,
          # FIA, NAA, RPA, BFA, ILPD).
          "SGM": "sgm", "BPA": "bpa", "Ghost": "ghost", "ILA": "ila", "FIA": "fia", "NAA": "naa", "RPA": "rpa",
          "BFA": "bfa", "ILPD": "ilpd",
          # The ensemble strategies: crafted on the ensemble source only.
          "SVRE": "svre", "CWA": "cwa", "AdaEA": "adaea", "SMER": "smer"}
ATTACKS.update({name: (preset, {}) for name, preset in MODERN.items()})
# The targeted table's rows (--targeted), each at its preset. They attack the DEV CSV's TargetClass and are
# scored by target hits, so they never share a table with the untargeted rows.
TARGETED = {"Logit": "logit_ti_di_mi_fgsm", "Po+Trip": "po_trip_ti_di_mi_fgsm", "CFM": "cfm", "SU": "su",
            "Logit-Margin": "logit_margin"}
ATTACKS.update({name: (preset, {}) for name, preset in TARGETED.items()})
ATTACKS["OPS"] = ("ops", {"copies_per_pass": 30})  # 901 inputs per image per gradient: 30 at a time bound memory
# Rows whose paper fixes its own schedule (MIG 25 steps, MEF 20 of 1.6/255, RAP 400 of 2/255, the targeted rows'
# 300 of 2/255): the preset's steps are kept and an explicit step size scales with eps (the papers' eps is 16).
PAPER_SCHEDULE = tuple(name for name, preset in {**MODERN, **TARGETED}.items()
                       if keeps_own_schedule(tfattack.attacks.PRESETS[preset]))
# The protocol's table; the other rows (the bf16 variant, the engine-v2 methods) are asked for by name.
TABLE = tuple(n for n in ATTACKS if not n.endswith(" bf16") and n not in MODERN and n not in TARGETED)
EXPENSIVE = ("SI-NI-TI-DIM", "VMI-TI-DIM", "Admix-TI-DIM", "TI-DI-MI+Aug") + tuple(
    name for name, preset in MODERN.items()
    if tfattack.attacks.PRESETS[preset].copies * tfattack.attacks.PRESETS[preset].gradient_evaluations > 1
    or name in PAPER_SCHEDULE)
BATCH_POOLED = ("Admix-TI-DIM",)  # attacks whose copies draw on the other images of the batch
SOURCES = {"single": ("efficientnet_lite0",), "ensemble": ("efficientnet_lite0", "mobilenet_v1_075", "tiny_darknet")}
ENSEMBLE_ONLY = tuple(name for name, preset in MODERN.items()
                      if any(getattr(e, "ensemble_strategy", False) for e in tfattack.attacks.PRESETS[preset].estimators))


def of_the_other_kind(attacks: Sequence[str], targeted: bool) -> List[str]:
    """The names among `attacks` that belong to the other table (targeted rows in an untargeted run, or the
    reverse), in their order."""
    return [name for name in attacks if (name in TARGETED) != targeted]


def table_sets(sources: Sequence[str], attacks: Sequence[str]) -> List[tuple]:
    """(source, attack) pairs the table crafts, source-major: the ensemble strategies on ensemble sources only."""
    return [(source, name) for source in sources for name in attacks
            if name not in ENSEMBLE_ONLY or len(SOURCES[source]) > 1]
VICTIMS = ("efficientnet_lite2", "mobilenet_v2_quant_int8", "mobilenet_v1_075_192_quant_int8")
DEFENDED_VICTIM = "efficientnet_lite2"
DEFENSES = ("jpeg:75", "bits:4", "rp", "median:3")


def schedule(config, max_epsilon: float) -> Dict:
    """The protocol's eps and schedule for a preset's config: 10 steps of eps/10; FGSM a single step of eps; a
    paper's own schedule keeps its steps, with its step size scaled from the papers' eps 16 to this one."""
    if keeps_own_schedule(config):
        return dict(eps=max_epsilon / 255, step_size=config.step_size * max_epsilon / MAX_EPSILON)
    common = dict(COMMON, eps=max_epsilon / 255)
    if config.steps == 1:
        common.pop("steps")
    return common


def build_attack(name: str, seed: int, max_epsilon: float = MAX_EPSILON):
    preset, overrides = ATTACKS[name]
    common = schedule(tfattack.attacks.PRESETS[preset], max_epsilon)
    return tfattack.attacks.build(preset, **common, **overrides, seed=seed)


def recorded_crafting(folder: str) -> Dict:
    """What the runs that crafted a set recorded ({} if none): images, seconds, and the tfattack sources and kernels
    that wrote them (HISTORY; absent for sets crafted before records kept them). An unreadable record is a one-line
    error naming it (the pipeline checks the settings)."""
    return _crafting_record(folder)[0]


def _crafting_record(folder: str) -> Tuple[Dict, int]:
    """`recorded_crafting`, and how many images the set's record holds (0 without a record)."""
    from tfattack.record import RunRecord
    earlier = RunRecord.load(os.path.join(folder, "run.json")) if os.path.isdir(folder) else None
    return (earlier.info.get("crafting", {}), len(earlier.images)) if earlier is not None else ({}, 0)


# The run record's advice names attack.py's --overwrite, which benchmark.py does not take.
_OVERWRITE_ADVICE = re.compile(r"[:;] (?:move it away or )?pass --overwrite\b.*$")


def _bench_advice(err: Exception) -> str:
    """A run-record error with the advice that fits the bench: its sets are crafted again in another
    --output_dir, or after their folder is deleted."""
    return _OVERWRITE_ADVICE.sub("; use another --output_dir, or delete that set's folder to craft it again",
                                 str(err))


UNRECORDED = "unrecorded"  # images crafted before run records kept what made them
# What each run that writes into a set leaves in its crafting history: the package's sources and the kernels.
HISTORY = {"sources": runs.source_digest, "kernels": runs.kernels}


def this_run(crafter=None) -> Dict[str, str]:
    """HISTORY's values for a crafting run: this process's sources, and the kernels of whatever computes the images
    (a Ray crafter's workers, or this process)."""
    values = {field: of_this_process() for field, of_this_process in HISTORY.items()}
    if crafter is not None:
        values["kernels"] = crafter.kernels()
    return values


def _add_crafting_time(earlier: Dict, images: int, seconds: float, kept: int = 0,
                       run: Optional[Dict[str, str]] = None) -> Dict:
    """Crafting time summed over every run that wrote images into a set (sets are crafted resumably), and the
    sources and kernels of those runs (HISTORY): a set crafted across a code change, or partly on other kernels, says
    so. `kept`: the images this run found done; more than the earlier runs counted, with nothing recorded, means runs
    that recorded nothing (killed before tfattack kept the history from the start) made some: UNRECORDED says so.
    `run`: this run's HISTORY values (`this_run`; default: this process's)."""
    earlier = dict(earlier) or {"images": 0, "seconds": 0.0}
    out = {"images": earlier["images"] + images, "seconds": earlier["seconds"] + (seconds if images else 0.0)}
    run = run if run is not None else this_run()
    for field in HISTORY:
        values = set(crafted_by(earlier, field)) | ({run[field]} if images else set())
        if kept > earlier["images"] and not earlier.get(field):
            values.add(UNRECORDED)
        if values:
            out[field] = sorted(values)
    return out


def crafted_by(crafting: Dict, field: str) -> List[str]:
    """The `field` of HISTORY ("sources" digests or "kernels") of the runs that crafted a set (`recorded_crafting`);
    UNRECORDED stands for images crafted before records kept it."""
    return list(crafting.get(field) or ([UNRECORDED] if crafting.get("images") else []))


def history_line(histories: Sequence[Dict]) -> str:
    """Two sentences for a table: which versions of the tfattack sources, and which kernels, crafted its sets (one
    crafting history per set, as `crafted_by` lists them; a set crafted over several runs may have several)."""
    if all(not history.get(field) or history[field] == [UNRECORDED] for history in histories for field in HISTORY):
        return ("The sets' run records do not say which tfattack sources and kernels crafted them (made before they "
                "kept it).")
    return " ".join((_history_sentence(histories, "sources", "tfattack sources", "versions of the tfattack sources",
                                       "`runs.source_digest`"),
                     _history_sentence(histories, "kernels", "kernels", "kernel settings", "`runs.kernels`")))


def _history_sentence(histories: Sequence[Dict], field: str, what: str, several: str, where: str) -> str:
    counts: Dict[str, int] = {}
    for history in histories:
        for value in history.get(field) or [UNRECORDED]:
            counts[value] = counts.get(value, 0) + 1
    if list(counts) == [UNRECORDED]:
        return f"The sets' run records do not say which {what} crafted them (made before they kept it)."
    if len(counts) == 1:
        return f"Every set was crafted by the {what} {next(iter(counts))} ({where})."
    return (f"The sets were crafted by several {several} ({where}; each set's list is in the JSON): " +
            ", ".join(f"{v} ({n} set{'s' * (n != 1)})" for v, n in sorted(counts.items())) +
            (f"; {UNRECORDED}: crafted before run records kept it" if UNRECORDED in counts else "") + ".")


def crafted_count(folder: str, ids: Optional[Sequence[str]], images: int) -> int:
    """How many of a set's images its folder's run record vouches for, read without writing or locking (a run may
    be crafting it). `ids`: the dataset's ImageIds in order (the set takes the first `images`); without them the
    record's count, capped at `images`. An unreadable record is a one-line RecordError naming it."""
    from tfattack.record import RunRecord
    record = RunRecord.load(os.path.join(folder, "run.json"))
    if record is None:
        return 0
    if ids is None:
        return min(len(record.images), images)
    return len(set(record.images) & set(ids[:images]))


def crafting_totals(sets: Sequence[Tuple[int, int, int, Dict]]) -> str:
    """A --plan's totals over the sets to craft, each (single-network image passes per image, images it takes, images
    its folder holds, its `recorded_crafting`): the passes in all and still to craft, and, once some run has counted
    its images, the time left at the rate those runs measured (an estimate: methods differ in what a pass costs
    besides the network, and the runs may have had other kernels or company on the machine)."""
    total = sum(passes * images for passes, images, _, _ in sets)
    left = sum(passes * (images - done) for passes, images, done, _ in sets)
    line = (f"{len(sets)} sets to craft, {total} single-network image passes ({left} still to craft, "
            f"{sum(done == images for _, images, done, _ in sets)} sets complete)")
    counted = [(history["images"] * passes, history["seconds"]) for passes, _, _, history in sets
               if history.get("images")]
    measured = sum(n for n, _ in counted)
    if not left or not measured:
        return line
    rate = sum(seconds for _, seconds in counted) / measured
    return (f"{line}; at the {1000 * rate:.1f} ms per pass that the crafting runs measured over {measured} passes, "
            f"about {left * rate / 3600:.1f} h of crafting left")


def plan(data_dir: Optional[str], output_dir: str, *, num_images: int, num_images_expensive: int,
         attacks: Optional[Sequence[str]] = None, sources: Sequence[str] = tuple(SOURCES), seed: int = 0,
         max_epsilon: float = MAX_EPSILON, targeted: bool = False) -> List[str]:
    """What `run` with the same arguments would craft, as lines: each set's passes per image, images and how many
    `output_dir` already holds, then `crafting_totals`. Reads no model and writes nothing. Without `data_dir` a
    set's count is its record's (capped at its size), not checked against the first images of the DEV set."""
    attacks = tuple(attacks or (TARGETED if targeted else TABLE))
    ids = None
    if data_dir is not None and os.path.isdir(output_dir):
        ids = data.read_dataset(os.path.join(data_dir, "images"), csv=os.path.join(data_dir, "dev_dataset.csv")).ids
    lines, sets = [], []
    for source, name in table_sets(sources, attacks):
        config = build_attack(name, seed, max_epsilon).config
        members = len(SOURCES[source])
        passes = config.model_passes() * members
        images = num_images_expensive if name in EXPENSIVE else num_images
        folder = os.path.join(output_dir, source, name)
        done = crafted_count(folder, ids, images) if os.path.isdir(folder) else 0
        per_member = f" ({config.model_passes()} per member)" if members > 1 else ""
        lines.append(f"{source}/{name}: {passes} passes/image{per_member} x {images} images; crafted {done}/{images} "
                     f"in {folder}")
        sets.append((passes, images, done, recorded_crafting(folder)))
    return lines + [crafting_totals(sets)]


def progress_log(log, what: str, total: int, prefix: str = "transfer"):
    """A progress callback that logs each tenth of the images (crafting or scoring 1000 takes a while)."""
    total = max(total, 1)
    done = [0]

    def update(count):
        before, done[0] = done[0], done[0] + count
        if done[0] * 10 // total > before * 10 // total:
            log(f"{prefix}: {what}: {done[0]}/{total}")

    return update


def ray_recipes(members: Sequence[str], model_dir: Optional[str], attack):
    """The recipes a Ray crafter's workers build a set's surrogate (members fused at the logits, equal weights, as
    the bench builds it) and attack (its full config) from."""
    from tfattack import scale

    return (scale.EnsembleRecipe(tuple((name, 1.0) for name in members), model_dir=model_dir),
            scale.AttackRecipe(None, config=attack.config))


def craft_set(dataset, folder: str, surrogate, attack, *, batch_size: int, label: str, info: Dict, log,
              targeted: bool = False, prefix: str = "transfer", make_crafter=None,
              members: Sequence[str] = (), model_dir: Optional[str] = None) -> Optional[float]:
    """Crafts the images of `dataset` not yet in `folder` (resumable), adding this run's crafting time to the earlier
    runs' in the set's record; returns the crafting seconds per image over all runs (None before any image).

    `make_crafter(ensemble_recipe, attack_recipe, targeted)`: a `tfattack.scale.RayCrafter` for the set, built from
    the surrogate's `members` (and `model_dir`) and the attack's config; None crafts here."""
    # Its workers start only if some image is left to craft.
    crafter = make_crafter(*ray_recipes(members, model_dir, attack), targeted) if make_crafter else None
    with crafter if crafter is not None else contextlib.nullcontext():
        return _craft_set(dataset, folder, surrogate, attack, batch_size, label, info, log, targeted, prefix, crafter)


def _craft_set(dataset, folder, surrogate, attack, batch_size, label, info, log, targeted, prefix, crafter):
    try:
        earlier, recorded = _crafting_record(folder)
        # The earlier runs' crafting time, and this run's sources and kernels, go into the record from its first
        # write: a run killed in this set leaves them there for the next one to add to. Images of the record that no
        # history covers (a run killed before records kept it) are said to be of unrecorded code from then on too.
        run = this_run(crafter)
        started = _add_crafting_time(earlier, 0, 0.0, kept=recorded, run=run)
        for field in HISTORY:
            started[field] = sorted(set(started.get(field, ())) | {run[field]})
        summary = pipeline.attack_dataset(
            dataset, folder, surrogate, attack, batch_size=batch_size, targeted=targeted,
            info={**info, "environment": runs.environment(), "crafting": started},
            progress=lambda total: progress_log(log, f"crafting {label}", total, prefix), crafter=crafter)
    except RecordError as err:
        raise RecordError(_bench_advice(err)) from None
    for note in summary.notes:
        log(f"{prefix}: {label}: {note}")
    crafting = _add_crafting_time(earlier, len(summary.written), summary.seconds, kept=len(summary.already_done),
                                  run=run)
    if not summary.checked_only:  # a finished set is only read (a crafting run may be beside this one)
        summary.record.info["crafting"] = crafting
        summary.record.save()
    log(f"{prefix}: {label}: {len(summary.written)} crafted in {summary.seconds:.0f} s "
        f"({len(summary.already_done)} already there)")
    return crafting["seconds"] / crafting["images"] if crafting["images"] else None


SCORES_FORMAT = 1  # bump when _score's rows change, so kept scores of the old form are not reused
ROW_FIELDS = ("source", "attack", "images", "victim", "defense", "clean_accuracy", "success_rate", "success_rate_all",
              "linf_max", "violations")


def _read_kept_scores(path: str, num_sets: int, count: int, log) -> Optional[List[Dict]]:
    """The rows kept at `path` in ROW_FIELDS order, or None when there are none. A file that cannot be read
    back (edited by hand, cut short by a full disk) is a miss: it is said in one line and scored again."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:  # kept with sorted keys: back in ROW_FIELDS order, as a fresh scoring gives
            scored = [{k: row[k] for k in ROW_FIELDS} for row in json.load(f)]
    except (OSError, ValueError, KeyError, TypeError) as err:
        log(f"transfer: kept scores {path} are unreadable ({type(err).__name__}: {err}); scoring again")
        return None
    log(f"transfer: {num_sets} sets on {count} images already scored ({path})")
    return scored


def _score(dataset, keys, folders, victims, seed: int, batch_size: int, log, targeted: bool = False) -> List[Dict]:
    """Scores the sets of one image subset together: each clean image goes through each victim and defense once.
    Targeted sets (their run records say so) succeed where the prediction is the image's target."""
    sets = [evaluation_lib.read_adv_set(folder, name=f"{source}/{name}", targeted=targeted)
            for (source, name), folder in zip(keys, folders)]
    count = len(dataset)
    log(f"transfer: scoring {len(sets)} sets on {count} images")
    plain = evaluation_lib.evaluate(dataset, sets, victims, ["none"], batch_size=batch_size, seed=seed, compiled=True,
                                    progress=progress_log(log, "scoring on the victims", count))
    defended = evaluation_lib.evaluate(dataset, sets, [victims[0]], list(DEFENSES), batch_size=batch_size, seed=seed,
                                       compiled=True, progress=progress_log(log, "scoring behind the defenses", count))
    sizes = {p.attack: p for p in plain.perturbations}
    rows = []
    for result in plain.results + defended.results:
        source, name = result.attack.split("/", 1)
        size = sizes[result.attack]
        rows.append(dict(zip(ROW_FIELDS, (source, name, count, result.model, result.defense, result.clean_accuracy,
                                          result.success_rate_clean_correct, result.success_rate_all, size.linf_max,
                                          len(size.violations)))))
    return rows


def victim_fingerprint(victims) -> str:
    """The victims' logits on one fixed synthetic image, rounded: other weights (another --model_dir, an
    updated weight package) give other scores, so they must not reuse kept ones."""
    ramp = np.linspace(0.0, 1.0, 299, dtype=np.float32)
    image = np.stack([np.add.outer(ramp, ramp) / 2, np.outer(ramp, ramp), np.add.outer(ramp, 1 - ramp) / 2], -1)
    batch = tf.constant(image[None])
    return ";".join(f"{model.name}:" + ",".join(f"{v:.2f}" for v in model(batch).numpy()[0]) for model in victims)


SCORING_ROOTS = ("tfattack.evaluate", "tfattack.defenses")  # plus every module of tfattack.models (loaded by name)


def _module_file(package: str, module: str) -> Optional[str]:
    relative = os.path.join(*module.split(".")[1:]) if "." in module else ""
    for candidate in (os.path.join(package, relative, "__init__.py"), os.path.join(package, relative + ".py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _imported(path: str, module: str) -> List[str]:
    """The tfattack modules `path` (module `module`) imports anywhere in its body, functions included."""
    import ast

    with open(path) as f:
        tree = ast.parse(f.read())
    here = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = ".".join(here.split(".")[:len(here.split(".")) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]  # a name may be a submodule
    return [name for name in found if name == "tfattack" or name.startswith("tfattack.")]


def scoring_sources() -> List[str]:
    """The package's source files that scoring depends on, in a fixed order: the modules evaluation, the defenses and
    the models import, transitively (an import inside a function counts), with every package on the way. The attack
    code shows in the adversarial files and this module's part is in the score key's fields, so a change to
    `attacks/`, `bench/`, the crafting pipeline or a script does not throw kept scores away."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    models = os.path.join(package, "models")
    todo = list(SCORING_ROOTS) + [f"tfattack.models.{name[:-3]}" for name in sorted(os.listdir(models))
                                  if name.endswith(".py") and name != "__init__.py"]
    files = {}
    while todo:
        module = todo.pop()
        path = _module_file(package, module) if module not in files else None
        if path is None:
            continue
        files[module] = path
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))] + _imported(path, module)
    return sorted(set(files.values()))


@functools.lru_cache(maxsize=65536)
def _bytes_digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def content_digest(path: str) -> str:
    """SHA-256 of a file's bytes (read once per process while its size and mtime stay). Scores follow what the
    files hold: a dataset unpacked again, a set copied from another machine or restored from a backup has new
    times and the same scores."""
    stat = os.stat(path)
    return _bytes_digest(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def score_key(dataset, keys, folders, seed: int, batch_size: int, victims: str = "", targeted: bool = False,
               defenses: Sequence[str] = DEFENSES) -> str:
    """What a group's scores depend on: the exact files scored, the victims, the scoring code and the kernels it runs
    on, the settings (targeted-ness and the targets among them: a targeted set is scored by target hits).

    Scoring is the long part of a table; with this key a rerun, or a run that adds rows of another image subset,
    rescores only the groups whose inputs changed. (`keys` may name one set: the
    leaderboard keeps each set's predictions on their own, which rp's and rs's per-ImageId draws allow.)
    """
    digest = hashlib.sha256()
    for path in scoring_sources():
        with open(path, "rb") as f:
            digest.update(os.path.basename(path).encode() + f.read())
    digest.update(json.dumps({"rows": SCORES_FORMAT, "seed": seed, "batch_size": batch_size, "victims": victims,
                              "defenses": list(defenses), "sets": keys, "targeted": targeted,
                              "kernels": runs.kernels()}).encode())
    labels = dataset.require_labels()
    targets = dataset.require_targets() if targeted else [None] * len(dataset)
    for image_id, path, label, target in zip(dataset.ids, dataset.paths, labels, targets):
        digest.update(f"{image_id} {label} {target} {content_digest(path)}".encode())
        for folder in folders:  # by content, not path or time: relative and absolute dirs, copies and restores agree
            adv = data.output_path(folder, image_id)
            digest.update(f"{content_digest(adv) if os.path.exists(adv) else None}".encode())
    return digest.hexdigest()[:20]


def run(data_dir: str, model_dir: str, output_dir: str, *, num_images: int, num_images_expensive: int,
        attacks: Optional[Sequence[str]] = None, sources: Sequence[str] = tuple(SOURCES), batch_size: int = 10,
        seed: int = 0, max_epsilon: float = MAX_EPSILON, craft_only: bool = False, targeted: bool = False,
        log=print, make_crafter=None) -> Dict | None:
    """Crafts every (source, attack) set under `output_dir`, then scores them all; returns the table data.

    `attacks`: the rows; default TABLE, or with `targeted` every row of TARGETED. `targeted`: the targeted
    table, whose rows attack each image towards its TargetClass and are scored by target hits (rows of the
    other table are a ValueError). With `craft_only` it stops after crafting (returns None): the sets can be
    crafted in several runs, or on another machine, and scored once at the end (crafted images already on disk
    are never redone). `make_crafter`: crafts each set on Ray (see `craft_set`); the same files as here.
    """
    attacks = tuple(attacks or (TARGETED if targeted else TABLE))
    mixed = of_the_other_kind(attacks, targeted)
    if mixed:
        raise ValueError(f"{', '.join(mixed)}: not rows of the {'targeted' if targeted else 'untargeted'} table")
    tf.config.experimental.enable_op_determinism()  # a rerun with the same seed reproduces the table
    full = data.read_dataset(os.path.join(data_dir, "images"), csv=os.path.join(data_dir, "dev_dataset.csv"))
    if num_images > len(full):
        raise data.DataError(f"--num_images {num_images}: {data_dir} has {len(full)} images")
    subsets = {n: full.select(full.ids[:n]) for n in {num_images, num_images_expensive}}
    # Every model loads before any work starts: a missing weight file fails in seconds, not hours in.
    surrogates = {source: tfattack.models.Ensemble([tfattack.models.load(n, model_dir=model_dir)
                                                    for n in SOURCES[source]]) for source in sources}
    victims = None if craft_only else [tfattack.models.load(n, model_dir=model_dir) for n in VICTIMS]
    timings = {}
    for source, name in table_sets(sources, attacks):
        surrogate = surrogates[source]
        dataset = subsets[num_images_expensive if name in EXPENSIVE else num_images]
        folder = os.path.join(output_dir, source, name)
        attack = build_attack(name, seed, max_epsilon)
        # The many-copy attacks stack 15-210 gradient evaluations per image into one graph: smaller batches
        # keep their activations within memory (an ensemble Admix at batch 10 needed > 11 GB).
        size = max(1, batch_size // 5) if name in EXPENSIVE and name not in BATCH_POOLED else batch_size
        per_image = craft_set(dataset, folder, surrogate, attack, batch_size=size, targeted=targeted,
                              label=f"{source} {name}", info={"surrogates": list(SOURCES[source])}, log=log,
                              make_crafter=make_crafter, members=SOURCES[source], model_dir=model_dir)
        if per_image is not None:
            timings[f"{source}/{name}"] = per_image
    if craft_only:
        return None
    # One evaluation per image subset scores all its sets together: each clean image goes through each
    # victim and defense once, not once per set. (rp's random draws follow that order, so the table is
    # reproduced exactly by the same command; scoring a different selection of sets redraws them.)
    order = table_sets(sources, attacks)
    groups: Dict[int, list] = {}
    for source, name in order:
        groups.setdefault(num_images_expensive if name in EXPENSIVE else num_images, []).append((source, name))
    found = {}
    fingerprint = victim_fingerprint(victims)
    for count, keys in groups.items():
        folders = [os.path.join(output_dir, source, name) for source, name in keys]
        key = score_key(subsets[count], keys, folders, seed, batch_size, fingerprint, targeted)
        cache = os.path.join(output_dir, "scores", key + ".json")
        scored = _read_kept_scores(cache, len(keys), count, log)
        if scored is None:
            scored = _score(subsets[count], keys, folders, victims, seed, batch_size, log, targeted)
            runs.write_json_atomic(cache, scored)
        for row in scored:
            found.setdefault((row["source"], row["attack"]), []).append(row)
    rows = [row for key in order for row in found[key]]
    if targeted:
        protocol = targeted_protocol(attacks, seed, max_epsilon)
    else:
        protocol = {"eps": f"{max_epsilon:g}/255", "steps": 10, "step": "eps/10", "momentum": 1.0, "di_prob": 0.5,
                    "ti_kernel": 7, "si_copies": 5, "vt": "N 20, beta 1.5", "admix": "eta 0.2, 3 copies x 5 scales"}
    configs = {n: [ATTACKS[n][0], {k: list(v) if isinstance(v, tuple) else v for k, v in ATTACKS[n][1].items()}]
               for n in attacks}
    crafted = {f"{source}/{name}": recorded_crafting(os.path.join(output_dir, source, name)) for source, name in order}
    return {"rows": rows, "targeted": targeted, "crafting_seconds_per_image": timings, "num_images": num_images,
            "crafted_by": {key: {field: crafted_by(history, field) for field in HISTORY}
                           for key, history in crafted.items()},
            "num_images_expensive": num_images_expensive, "seed": seed, "protocol": protocol,
            "sources": {k: list(v) for k, v in SOURCES.items() if k in sources}, "victims": list(VICTIMS),
            "defenses": list(DEFENSES), "attacks": configs}


def targeted_protocol(attacks: Sequence[str], seed: int, max_epsilon: float) -> Dict:
    """The targeted table's protocol as the rows' built attacks have it: a setting the rows share is one
    value, one they do not is given per row."""
    configs = {name: build_attack(name, seed, max_epsilon).config for name in attacks}

    def setting(value_of):
        values = {name: value_of(config) for name, config in configs.items()}
        return next(iter(values.values())) if len(set(values.values())) == 1 else values

    return {"eps": f"{max_epsilon:g}/255", "steps": setting(lambda c: c.steps),
            "step": setting(lambda c: f"{round(c.alpha * 255, 4):g}/255"),
            "labels": "each image is attacked towards the DEV CSV's TargetClass",
            "success": "prediction == TargetClass, over the images the victim classifies correctly when clean "
                       "(success_rate_all: over all images)",
            "components": {name: {slot: spec for slot, spec in config.spec().items() if spec != "none"}
                           for name, config in configs.items()}}


def columns(payload) -> List[tuple]:
    cols = [(v, "none") for v in payload["victims"]] + [(DEFENDED_VICTIM, d) for d in payload["defenses"]]
    return cols


def _per_row(setting) -> str:
    """A protocol setting the rows share, or one per row (a dict)."""
    return ", ".join(f"{v} ({name})" for name, v in setting.items()) if isinstance(setting, dict) else str(setting)


def markdown(payload) -> str:
    cols = columns(payload)
    index = {(r["source"], r["attack"], r["victim"], r["defense"]): r for r in payload["rows"]}
    names = {"mobilenet_v2_quant_int8": "MNv2 int8", "mobilenet_v1_075_192_quant_int8": "MNv1-0.75/192 int8",
             "efficientnet_lite2": "EffNet-Lite2"}
    header = ["source", "attack", "images", "craft s/img"] + [names.get(v, v) + ("" if d == "none" else f" + {d}")
                                                              for v, d in cols]
    expensive = [n for n in EXPENSIVE if n in payload["attacks"]]
    protocol = payload["protocol"]
    if payload.get("targeted"):
        rate, schedule = "Targeted transfer: target hit rate (%) (prediction == the DEV CSV's TargetClass)", (
            f"{_per_row(protocol['steps'])} iterations of {_per_row(protocol['step'])}")
    else:
        rate, schedule = "Untargeted success rate (%)", f"{protocol['steps']} iterations"
    lines = [f"{rate} over the images each victim classifies correctly when clean; "
             f"eps {protocol['eps']}, {schedule}; craft s/img = crafting seconds per image on this "
             f"machine's CPU (tracing included); first {payload['num_images']} NIPS'17 DEV images"
             + (f" ({payload['num_images_expensive']} for {', '.join(expensive)})" if expensive else "")
             + ". Sources: " + "; ".join(
                 f"{source}{' (logits fused)' if len(members) > 1 else ''} = {', '.join(members)}"
                 for source, members in payload["sources"].items()) + "."
             + (" " + history_line(list(payload["crafted_by"].values())) if payload.get("crafted_by") else ""), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    clean = {}  # on the full-size subset (the many-copy attacks' smaller subset has its own)
    for (source, attack, victim, defense), r in index.items():
        if r["images"] == payload["num_images"]:
            clean[(victim, defense)] = r["clean_accuracy"]
    cells = [f"{100 * clean.get(c, float('nan')):.1f}" for c in cols]
    lines.append("| clean accuracy | | | | " + " | ".join(cells) + " |")
    seen = []
    for r in payload["rows"]:
        key = (r["source"], r["attack"])
        if key in seen:
            continue
        seen.append(key)
        cells = [f"{100 * index[key + c]['success_rate']:.1f}" if key + c in index else "" for c in cols]
        per_image = payload.get("crafting_seconds_per_image", {}).get(f"{r['source']}/{r['attack']}")
        seconds = "" if per_image is None else f"{per_image:.2f}"
        lines.append(f"| {r['source']} | {r['attack']} | {r['images']} | {seconds} | " + " | ".join(cells) + " |")
    if payload.get("targeted"):  # the ordering against TransferAttack's targeted table
        from tfattack.bench import published
        lines += ["", published.targeted_markdown(payload)]
    return "\n".join(lines)


def write_csv(payload, path: str) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(payload["rows"][0].keys()))
        writer.writeheader()
        writer.writerows(payload["rows"])


def heatmap(payload, path: str) -> None:
    from tfattack.bench import plots

    cols = columns(payload)
    keys = []
    for r in payload["rows"]:
        if (r["source"], r["attack"]) not in keys:
            keys.append((r["source"], r["attack"]))
    index = {(r["source"], r["attack"], r["victim"], r["defense"]): r["success_rate"] for r in payload["rows"]}
    grid = np.array([[100 * index.get(k + c, np.nan) for c in cols] for k in keys])
    protocol, targeted = payload["protocol"], payload.get("targeted")
    title = (f"Targeted transfer: target hit rate (%) (eps {protocol['eps']}, {_per_row(protocol['steps'])} "
             f"iterations)" if targeted else f"Transfer success rate (untargeted, eps {protocol['eps']})")
    plots.heatmap(grid, [f"{s}: {a}" for s, a in keys], [f"{v}\n{d}" for v, d in cols], title,
                  "target hit rate (%)" if targeted else "success rate (%)", path)
