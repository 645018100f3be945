"""Crafting and scoring the leaderboard (issue 19): every untargeted preset, at its paper's settings and at a common
budget of gradient passes per image, from the single surrogate and the logit-fused ensemble, at eps 4 and 8 of 255;
scored on held-out victims and on EfficientNet-Lite2 behind seven defenses. `bench.leaderboard` turns the
predictions into the table.

Protocol: 10 iterations of eps/10 (a preset whose paper fixes its own schedule keeps its steps, its step scaled from
eps 16, as in the transfer table); ground-truth labels of the NIPS'17 DEV set; the first `num_images` images for
methods of at most CHEAP_PASSES_PER_STEP network passes per iteration, the first `num_images_expensive` otherwise.
The matched budget brings each method to MATCHED_PASSES passes per image with `bench.budget.matched`; a method it
cannot change (no sample count or random draw to scale) is listed under both budgets with the same images.

Resumable at every level: a set's images are crafted once (their run records hold the settings, which must agree),
and each set's per-image predictions are kept under `scores/`, keyed by its files, the victims, defenses and scoring
code they depend on (a run that adds methods scores only theirs); crafting and scoring are separable (`craft_only`).

    plan = leaderboard_run.plan(methods=("mi_fgsm", "pgn"), sources=("single",), eps_pixels=(8,))
    payload = leaderboard_run.run(data_dir, model_dir, output_dir, plan, num_images=1000)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

import tfattack
from tfattack import data, defenses as defenses_lib, evaluate as evaluation_lib, runs
from tfattack.attacks.config import AttackConfig
from tfattack.bench import budget as budget_lib, leaderboard, transfer

EPS_PIXELS = (4, 8)
MATCHED_PASSES = 200  # per image over the 10 iterations: 20 per iteration
CHEAP_PASSES_PER_STEP = 2  # methods above it craft on the smaller image subset
RS_SAMPLES = 100  # noisy copies per image of randomized smoothing's majority vote
SOURCES = transfer.SOURCES
VICTIMS = ("efficientnet_lite2", "mobilenet_v2_quant_int8", "mobilenet_v1_075_192_quant_int8",
           "mobilenet_v1_05_160_quant_int8")
DEFENDED_VICTIM = "efficientnet_lite2"
STACKED = "jpeg:75+bits:4+rp"  # the origin write-up's competition: three defenses in a row
_TARGETED = set(transfer.TARGETED.values())
# Every untargeted preset; the NIPS'17 sample attacks are the classic rows again in the competition's own form.
METHODS = tuple(p for p in tfattack.attacks.presets() if p not in _TARGETED and not p.startswith("nips17_"))
ENSEMBLE_ONLY = tuple(p for p in METHODS
                      if any(getattr(e, "ensemble_strategy", False) for e in tfattack.attacks.PRESETS[p].estimators))
# Memory only, not the method: OPS's 901 inputs per image per gradient go through the surrogate 30 at a time, L2T's
# 87 one trajectory (29) at a time, and Admix 3 of its copies at a time (it crafts at the full batch: its x' are
# the batch's other images).
COPIES_PER_PASS = {"ops": 30, "l2t": 29, "admix": 3, "admix_ti_dim": 3}
BATCH_POOLED = ("admix", "admix_ti_dim")
SCORES_FORMAT = 1  # bump when the kept predictions change form
# Sets scored per evaluation: the clean images are predicted once per chunk, and each chunk is kept when done.
SETS_PER_SCORING = 4


def defenses(rs_samples: int = RS_SAMPLES) -> tuple:
    """The defenses in front of DEFENDED_VICTIM: input transformations, their stack, randomized smoothing."""
    return ("jpeg:75", "bits:4", "rp", "median:3", STACKED, f"rs:0.25:{rs_samples}", f"rs:0.5:{rs_samples}")


@dataclasses.dataclass(frozen=True)
class PlannedSet:
    """One (method, source, eps, budget) entry: its attack config, how the budget was reached, its gradient passes
    per image, its image count, and the set whose folder holds its images (itself, or the paper set it equals)."""

    method: str
    source: str
    eps_pixels: int
    budget: str
    config: AttackConfig
    how: str
    passes: int
    images: int
    crafted_as: str
    budget_passes: Optional[int] = None  # the matched budget's target passes per image (None: the paper budget)

    @property
    def name(self) -> str:
        return set_name(self.source, self.eps_pixels, self.budget, self.method)

    @property
    def group(self) -> tuple:
        """Sets scored together (one evaluation): one source and eps, both budgets."""
        return self.source, self.eps_pixels


def set_name(source: str, eps_pixels: int, budget: str, method: str) -> str:
    return f"{source}/eps{eps_pixels:g}/{budget}/{method}"


def protocol_config(method: str, eps_pixels: float, seed: int) -> AttackConfig:
    """`method`'s preset at the protocol's eps and schedule, with its memory setting."""
    preset = tfattack.attacks.PRESETS[method]
    overrides = dict(transfer.schedule(preset, eps_pixels), seed=seed)
    if method in COPIES_PER_PASS:
        overrides["copies_per_pass"] = COPIES_PER_PASS[method]
    return tfattack.attacks.with_overrides(preset, overrides)


def _images(config: AttackConfig, num_images: int, num_images_expensive: int) -> int:
    cheap = config.model_passes() <= CHEAP_PASSES_PER_STEP * config.steps
    return num_images if cheap else min(num_images_expensive, num_images)


def plan(methods: Sequence[str] = METHODS, sources: Sequence[str] = tuple(SOURCES),
         eps_pixels: Sequence[int] = EPS_PIXELS, budgets: Sequence[str] = leaderboard.BUDGETS, *,
         num_images: int = 1000, num_images_expensive: int = 500, matched_passes: int = MATCHED_PASSES,
         seed: int = 0) -> List[PlannedSet]:
    """The sets of the table, source, eps, method, budget in that nesting; the ensemble strategies on the ensemble
    source only. Unknown names are a ValueError naming the known ones."""
    for what, given, known in (("methods", methods, METHODS), ("sources", sources, tuple(SOURCES)),
                               ("budgets", budgets, leaderboard.BUDGETS)):
        unknown = [n for n in given if n not in known]
        if unknown:
            raise ValueError(f"{what}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    out = []
    for source in sources:
        for eps in eps_pixels:
            for method in methods:
                if method in ENSEMBLE_ONLY and len(SOURCES[source]) == 1:
                    continue
                config = protocol_config(method, eps, seed)
                paper_name = set_name(source, eps, "paper", method)
                if "paper" in budgets:
                    out.append(PlannedSet(method, source, eps, "paper", config, "the paper's settings",
                                          config.model_passes(), _images(config, num_images, num_images_expensive),
                                          paper_name))
                if "matched" in budgets:
                    matched = budget_lib.matched(config, matched_passes)
                    same = matched.knob is None or matched.value == matched.paper_value
                    crafted_as = paper_name if same else set_name(source, eps, "matched", method)
                    out.append(PlannedSet(method, source, eps, "matched", matched.config, matched.how,
                                          matched.passes, _images(matched.config, num_images, num_images_expensive),
                                          crafted_as, budget_passes=matched_passes))
    return out


def applicable(planned: Sequence[PlannedSet], surrogates: Dict) -> tuple:
    """(the entries whose method can act on their source's surrogate, {left-out entry name: why}): a method that
    edits a network (LinBP's slim ResNet units) needs the structure it edits."""
    from tfattack.attacks import loop

    kept, left_out, verdicts = [], {}, {}
    for entry in planned:
        key = (entry.method, entry.source)
        if key not in verdicts:
            try:
                loop.check_surrogate(surrogates[entry.source], entry.config)
                verdicts[key] = None
            except ValueError as err:
                verdicts[key] = str(err)
        if verdicts[key] is None:
            kept.append(entry)
        else:
            left_out[entry.name] = verdicts[key]
    return kept, left_out


def load_surrogates(sources, model_dir: Optional[str]) -> Dict:
    """The sources' surrogates, members fused at the logits with equal weights."""
    return {s: tfattack.models.Ensemble([tfattack.models.load(n, model_dir=model_dir) for n in SOURCES[s]])
            for s in sources}


def crafted_sets(planned: Sequence[PlannedSet]) -> List[PlannedSet]:
    """The sets that own a folder (a matched set equal to its paper set shares the paper set's), in plan order."""
    seen, out = set(), []
    for entry in planned:
        if entry.crafted_as not in seen:
            seen.add(entry.crafted_as)
            out.append(dataclasses.replace(entry, budget="paper") if entry.crafted_as != entry.name else entry)
    return out


def folder_of(output_dir: str, crafted_as: str) -> str:
    return os.path.join(output_dir, "sets", *crafted_as.split("/"))


def craft(planned: Sequence[PlannedSet], surrogates: Dict, subsets: Dict, output_dir: str, batch_size: int,
          log, make_crafter=None, model_dir: Optional[str] = None) -> Dict[str, float]:
    """Crafts every folder of `planned` (resumably; on Ray with `make_crafter`, see `transfer.craft_set`); returns
    crafting seconds per image by crafted set name."""
    timings = {}
    for entry in crafted_sets(planned):
        many = entry.passes > CHEAP_PASSES_PER_STEP * entry.config.steps
        # Many passes per step stack that many images into one graph: smaller batches bound the activations.
        size = max(1, batch_size // 5) if many and entry.method not in BATCH_POOLED else batch_size
        info = {"surrogates": list(SOURCES[entry.source]), "leaderboard": {
            "method": entry.method, "eps_pixels": entry.eps_pixels, "how": entry.how,
            "grad_evals_per_image": entry.passes}}
        per_image = transfer.craft_set(subsets[entry.images], folder_of(output_dir, entry.crafted_as),
                                       surrogates[entry.source], tfattack.attacks.Attack(entry.config),
                                       batch_size=size, label=entry.crafted_as, info=info, log=log,
                                       prefix="leaderboard", make_crafter=make_crafter,
                                       members=SOURCES[entry.source], model_dir=model_dir)
        if per_image is not None:
            timings[entry.crafted_as] = per_image
    return timings


def crafted_count(output_dir: str, entry: PlannedSet, ids: Optional[Sequence[str]] = None) -> int:
    """How many of the set's images its folder's run record vouches for (`transfer.crafted_count`)."""
    return transfer.crafted_count(folder_of(output_dir, entry.crafted_as), ids, entry.images)


def plan_totals(planned: Sequence[PlannedSet], done: Dict[str, int], histories: Dict[str, Dict]) -> str:
    """--plan's last line: the table's entries, then `transfer.crafting_totals` over its sets (`done`: images each
    crafted set's folder holds; `histories`: each set's `transfer.recorded_crafting`)."""
    sets = [(e.passes * len(SOURCES[e.source]), e.images, done[e.crafted_as], histories.get(e.crafted_as, {}))
            for e in crafted_sets(planned)]
    return f"{len(planned)} table entries, {transfer.crafting_totals(sets)}"


def _read_kept(path: str, log) -> Optional[leaderboard.Predictions]:
    if not os.path.isfile(path):
        return None
    try:
        return leaderboard.Predictions.load(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log(f"leaderboard: kept predictions {path} are unreadable ({type(err).__name__}: {err}); scoring again")
        return None


COLUMNS_SO_FAR = ".columns.npz"  # a set's columns scored so far, next to where its kept predictions will go


def score_group(entries: Sequence[PlannedSet], dataset, victims, defense_specs: Sequence[str], output_dir: str,
                fingerprint: str, seed: int, batch_size: int, log) -> leaderboard.Predictions:
    """The per-image predictions of one (source, eps) group's folders: every victim without a defense, then
    DEFENDED_VICTIM behind each defense. Kept per set under scores/ and reused while nothing they depend on changed:
    a random defense's draws follow each image's ImageId, so a set's predictions do not depend on the sets scored
    with it, and a run that adds methods scores only theirs. Sets are scored SETS_PER_SCORING at a time, one
    (victim, defense) column after another, and each column is kept as it is done: a cut run loses at most the
    column it was scoring."""
    names = [e.crafted_as for e in crafted_sets(entries)]
    folders = {name: folder_of(output_dir, name) for name in names}
    paths = {name: os.path.join(output_dir, "scores", transfer.score_key(
        dataset, [name], [folders[name]], seed, batch_size, fingerprint,
        defenses=[f"leaderboard{SCORES_FORMAT}", *defense_specs]) + ".npz") for name in names}
    kept = {name: _read_kept(paths[name], log) for name in names}
    todo = [name for name in names if kept[name] is None]
    label = "/".join(map(str, entries[0].group))
    if not todo:
        log(f"leaderboard: the {len(names)} sets of {label} are already scored")
        return leaderboard.Predictions.merged([kept[name] for name in names])
    log(f"leaderboard: scoring {len(todo)} set(s) of {label} on {len(dataset)} images "
        f"({len(names) - len(todo)} already scored)")
    os.makedirs(os.path.join(output_dir, "scores"), exist_ok=True)
    columns = [(victim, "none") for victim in victims] + [(victims[0], spec) for spec in defense_specs]
    keys = [(victim.name, defenses_lib.parse(spec).spec) for victim, spec in columns]
    for start in range(0, len(todo), SETS_PER_SCORING):
        chunk = todo[start:start + SETS_PER_SCORING]
        what = f"scoring {label} ({', '.join(name.rsplit('/', 1)[-1] for name in chunk)})"
        partial = {name: _read_kept(paths[name] + COLUMNS_SO_FAR, log) for name in chunk}
        resumed = sum(len(p.clean_predictions) for p in partial.values() if p is not None)
        if resumed:
            log(f"leaderboard: {what}: {resumed} (set, column) pair(s) kept by an earlier run")
        for (victim, spec), key in zip(columns, keys):
            needing = [name for name in chunk if partial[name] is None or key not in partial[name].clean_predictions]
            if not needing:
                continue
            sets = [evaluation_lib.read_adv_set(folders[name], name=name) for name in needing]
            clean = _known_clean([*kept.values(), *partial.values()], key)
            column = leaderboard.Predictions.of(evaluation_lib.evaluate(
                dataset, sets, [victim], [spec], batch_size=batch_size, seed=seed, compiled=True,
                clean_predictions=None if clean is None else {key: clean},
                progress=transfer.progress_log(log, f"{what} on {leaderboard.victim_label(*key)}", len(dataset),
                                               "leaderboard")))
            for name in needing:
                partial[name] = _with_column(partial[name], column.only(name))
                partial[name].save(paths[name] + COLUMNS_SO_FAR)
        for name in chunk:
            kept[name] = _in_order(partial[name], keys)
            kept[name].save(paths[name])
            os.remove(paths[name] + COLUMNS_SO_FAR)
    return leaderboard.Predictions.merged([kept[name] for name in names])


def _known_clean(scored: Sequence[Optional[leaderboard.Predictions]], key: tuple) -> Optional[np.ndarray]:
    """The clean predictions of column `key`, from any set of the group already scored in it. Every kept file of a
    group has the same images, victims, seed, batch size, kernels and scoring code (its key says so), so its clean
    column is what scoring the clean images again would give: reused, a column of one new set costs half."""
    for predictions in scored:
        if predictions is not None and key in predictions.clean_predictions:
            return predictions.clean_predictions[key]
    return None


def _with_column(scored: Optional[leaderboard.Predictions], column: leaderboard.Predictions) -> leaderboard.Predictions:
    """One set's predictions so far, with one more (victim, defense) column of the same set."""
    if scored is None:
        return column
    if not np.array_equal(scored.labels, column.labels):
        raise ValueError(f"{scored.adv_sets[0].name}: kept columns were scored on other labels")
    return leaderboard.Predictions(scored.adv_sets, scored.labels, scored.targets,
                                   {**scored.clean_predictions, **column.clean_predictions},
                                   {**scored.adv_predictions, **column.adv_predictions})


def _in_order(scored: leaderboard.Predictions, keys: Sequence[tuple]) -> leaderboard.Predictions:
    """The set's predictions with its columns in the table's order (a resumed run may have added them in another)."""
    (name,) = [s.name for s in scored.adv_sets]
    return leaderboard.Predictions(scored.adv_sets, scored.labels, scored.targets,
                                   {key: scored.clean_predictions[key] for key in keys},
                                   {(name, *key): scored.adv_predictions[(name, *key)] for key in keys})


def table_rows(planned: Sequence[PlannedSet], predictions: Dict[tuple, leaderboard.Predictions],
               timings: Dict[str, float]) -> List[Dict]:
    """The leaderboard's rows, group by group in plan order: each set under its own name (a matched set that is its
    paper set takes the paper set's predictions and crafting time)."""
    out = []
    for group in dict.fromkeys(e.group for e in planned):
        entries = [e for e in planned if e.group == group]
        view = predictions[group].renamed({e.name: e.crafted_as for e in entries})
        infos = {e.name: leaderboard.SetInfo(e.method, e.source, e.eps_pixels, e.budget, e.passes,
                                             timings.get(e.crafted_as, float("nan"))) for e in entries}
        out += leaderboard.rows(view, infos)
    return out


def run(data_dir: str, model_dir: Optional[str], output_dir: str, planned: Sequence[PlannedSet], *,
        num_images: int, seed: int = 0, batch_size: int = 10, rs_samples: int = RS_SAMPLES,
        craft_only: bool = False, log=print, make_crafter=None) -> Optional[Dict]:
    """Crafts the planned sets under `output_dir`/sets, scores them group by group and returns the table's payload
    (None with `craft_only`). Every model loads before long work. `make_crafter`: each set crafted on Ray (see
    `transfer.craft_set`)."""
    import tensorflow as tf

    if not planned:
        raise ValueError("leaderboard: nothing to run (no method applies to the chosen sources)")
    tf.config.experimental.enable_op_determinism()  # the same seed crafts the same files
    full = data.read_dataset(os.path.join(data_dir, "images"), csv=os.path.join(data_dir, "dev_dataset.csv"))
    if num_images > len(full):
        raise data.DataError(f"--num_images {num_images}: {data_dir} has {len(full)} images")
    subsets = {n: full.select(full.ids[:n]) for n in {e.images for e in planned} | {num_images}}
    sources = dict.fromkeys(e.source for e in planned)
    surrogates = load_surrogates(sources, model_dir)
    planned, left_out = applicable(planned, surrogates)
    for name, why in left_out.items():
        log(f"leaderboard: {name} left out: {why}")
    if not planned:
        raise runs.UsageError("--methods: none of the chosen methods can act on the chosen sources' surrogates (the "
                              "log above says why)")
    victims = None if craft_only else [tfattack.models.load(n, model_dir=model_dir) for n in VICTIMS]
    defense_specs = defenses(rs_samples)
    timings = craft(planned, surrogates, subsets, output_dir, batch_size, log, make_crafter, model_dir)
    if craft_only:
        return None
    fingerprint = transfer.victim_fingerprint(victims)
    predictions = {}
    for group in dict.fromkeys(e.group for e in planned):
        entries = [e for e in planned if e.group == group]
        predictions[group] = score_group(entries, subsets[num_images], victims, defense_specs, output_dir,
                                         fingerprint, seed, batch_size, log)
    table = table_rows(planned, predictions, timings)
    history = {e.crafted_as: transfer.recorded_crafting(folder_of(output_dir, e.crafted_as))
               for e in crafted_sets(planned)}
    payload = {
        "protocol": {
            "steps": transfer.COMMON["steps"], "step": "eps/10 (a paper's own schedule: its steps, its step scaled "
                                                       "from eps 16)",
            "labels": "ground truth", "matched_passes": matched_budget(planned),
            "images": {"cheap": num_images, "expensive": min(e.images for e in planned),
                       "rule": images_rule(num_images, min(e.images for e in planned))},
            "sources": {s: list(SOURCES[s]) for s in sources}, "victims": list(VICTIMS),
            "defended_victim": DEFENDED_VICTIM, "defenses": list(defense_specs), "seed": seed,
            "reference": leaderboard.REFERENCE_METHOD, "environment": runs.environment()},
        "sets": [{"name": e.name, "method": e.method, "source": e.source, "eps_pixels": e.eps_pixels,
                  "budget": e.budget, "how": e.how, "grad_evals_per_image": e.passes, "images": e.images,
                  "crafted_as": e.crafted_as, "craft_s_per_image": timings.get(e.crafted_as),
                  "tfattack_sources": transfer.crafted_by(history[e.crafted_as], "sources"),
                  "kernels": transfer.crafted_by(history[e.crafted_as], "kernels")} for e in planned],
        "left_out": left_out, "rows": table}
    payload["analysis"] = analysis(payload)
    return payload


SHORT_NAMES = {"efficientnet_lite2": "Lite2", "mobilenet_v2_quant_int8": "MNv2 int8",
               "mobilenet_v1_075_192_quant_int8": "MNv1-0.75/192 int8", "mobilenet_v1_05_160_quant_int8":
               "MNv1-0.5/160 int8"}


def short_label(victim: str) -> str:
    """A column title: the victim's short name, `+defense` kept."""
    name, plus, defense = victim.partition("+")
    return SHORT_NAMES.get(name, name) + plus + defense


def victim_columns(payload) -> List[str]:
    """The victim labels of the table, in scoring order."""
    return list(dict.fromkeys(row["victim"] for row in payload["rows"]))


def matched_budget(planned: Sequence[PlannedSet]) -> Optional[int]:
    """The passes per image the plan's matched entries were brought to (None without matched entries)."""
    targets = {e.budget_passes for e in planned if e.budget == "matched"}
    if len(targets) > 1:
        raise ValueError(f"leaderboard: matched entries planned at several budgets: {sorted(targets)}")
    return targets.pop() if targets else None


def images_rule(cheap: int, expensive: int) -> str:
    """Which images the sets took, for the tables' headers."""
    if cheap == expensive:
        return f"the first {cheap} for every method"
    return (f"the first {cheap} for methods of at most {CHEAP_PASSES_PER_STEP} passes per iteration, the first "
            f"{expensive} for the others")


def markdown(payload) -> str:
    """One ranked table per (source, eps, budget): mean success over the victims, then each victim; a rate
    significantly above (below) the reference method's on the same images (exact McNemar, p < 0.05) is marked
    ▲ (▼)."""
    columns = victim_columns(payload)
    means = leaderboard.mean_over_victims(payload["rows"], columns)
    index = {(r["method"], r["source"], r["eps_pixels"], r["budget"], r["victim"]): r for r in payload["rows"]}
    protocol = payload["protocol"]
    lines = [f"Untargeted success rate (%) over the images each victim classifies correctly when clean; "
             f"{protocol['steps']} iterations; seed {protocol['seed']}; images: {protocol['images']['rule']}. "
             f"▲/▼: significantly above/below {protocol['reference']} of the same setting (paired exact McNemar, "
             f"p < 0.05). grad evals = network passes per image (an ensemble pass counts once); s/img = crafting "
             f"seconds per image on this machine's CPU. Sources: " + "; ".join(
                 f"{s} = {' + '.join(m)}" for s, m in protocol["sources"].items()) + ". " + code_line(payload)]
    settings = dict.fromkeys((r["source"], r["eps_pixels"], r["budget"]) for r in payload["rows"])
    versus = leaderboard.versus_reference(payload["rows"], protocol["reference"])
    for source, eps, budget in settings:
        ranked = sorted(((key[0], mean) for key, mean in means.items() if key[1:] == (source, eps, budget)),
                        key=lambda item: -item[1])
        header = ["#", "method", "grad evals", "s/img", "mean"] + [short_label(c) for c in columns]
        lines += ["", f"### {source}, eps {eps:g}/255, {budget} budget", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for rank, (method, mean) in enumerate(ranked, 1):
            first = index[(method, source, eps, budget, columns[0])]
            cells = []
            for victim in columns:
                row = index[(method, source, eps, budget, victim)]
                mark = ""
                if row["p_vs_reference"] != "" and row["p_vs_reference"] < 0.05:
                    other = index[(protocol["reference"], source, eps, budget, victim)]
                    mark = "▲" if row["success_pct"] > other["success_pct"] else "▼"
                rate = row["success_pct"]
                cells.append(("–" if rate != rate else f"{rate:.1f}") + mark)  # NaN: no image right when clean
            seconds = first["craft_s_per_image"]
            lines.append(f"| {rank} | {method} | {first['grad_evals_per_image']:g} | "
                         f"{'' if seconds != seconds else f'{seconds:.2f}'} | {mean:.1f} | " + " | ".join(cells) + " |")
        lines += ["", versus_reference_line([method for method, _ in ranked], versus, protocol["reference"],
                                            (source, eps, budget))]
    from tfattack.bench import published

    lines += ["", published.markdown(payload.get("analysis") or analysis(payload), published.load())]
    return "\n".join(lines)


SUMMARY_ROWS = 10


def summary(payload, top: int = SUMMARY_ROWS) -> str:
    """The short form of `markdown` (the README's): per (source, eps, budget), the `top` methods by mean success over
    the victims, and the reference where it ranks lower, each with its standing against the reference victim by
    victim; then the line naming every method that is never below the reference and every one that is."""
    columns = victim_columns(payload)
    means = leaderboard.mean_over_victims(payload["rows"], columns)
    grad_evals = {(r["method"], r["source"], r["eps_pixels"], r["budget"]): r["grad_evals_per_image"]
                  for r in payload["rows"]}
    reference = payload["protocol"]["reference"]
    versus = leaderboard.versus_reference(payload["rows"], reference)
    lines = [f"Mean untargeted success (%) over {len(columns)} victims and defenses; images: "
             f"{payload['protocol']['images']['rule']}; the full table, with every method and victim, is in "
             f"docs/benchmarks.md. vs {reference}: victims where the method's rate is above / "
             f"below {reference}'s, and how many of those differences are significant (▲/▼, paired exact McNemar, "
             f"p < 0.05)."]
    settings = dict.fromkeys((r["source"], r["eps_pixels"], r["budget"]) for r in payload["rows"])
    for setting in settings:
        ranked = sorted(((key[0], mean) for key, mean in means.items() if key[1:] == setting), key=lambda m: -m[1])
        shown = [(rank, method, mean) for rank, (method, mean) in enumerate(ranked, 1)
                 if rank <= top or method == reference]
        source, eps, budget = setting
        count = f"{len(ranked)} methods" + (f", the first {top} shown" if len(ranked) > top else "")
        lines += ["", f"{source}, eps {eps:g}/255, {budget} budget ({count})", "",
                  f"| # | method | grad evals | mean | vs {reference} |", "|---|---|---|---|---|"]
        for rank, method, mean in shown:
            v = versus.get((method, *setting))
            standing = ("reference" if method == reference else "" if v is None else
                        f"{v.above} above / {v.below} below ({v.significantly_above}▲ {v.significantly_below}▼)")
            lines.append(f"| {rank} | {method} | {grad_evals[(method, *setting)]:g} | {mean:.1f} | {standing} |")
        lines += ["", versus_reference_line([method for method, _ in ranked], versus, reference, setting)]
    return "\n".join(lines)


def code_line(payload) -> str:
    """Which versions of the tfattack sources, and which kernels, crafted the table's sets (a set crafted over several
    runs may have several of each)."""
    sets = {s["crafted_as"]: s for s in payload["sets"]}.values()
    return transfer.history_line([{"sources": s.get("tfattack_sources"), "kernels": s.get("kernels")} for s in sets])


def versus_reference_line(ranked: Sequence[str], versus: Dict[tuple, "leaderboard.VersusReference"], reference: str,
                          setting: tuple) -> str:
    """Which methods of one setting are never below the reference on any victim and which are, in rank order, with
    their counts of victims above/below and of significant differences (▲/▼)."""
    def described(method):
        v = versus[(method, *setting)]
        return f"{method} ({v.above} above, {v.below} below; {v.significantly_above}▲ {v.significantly_below}▼)"

    compared = [m for m in ranked if (m, *setting) in versus]
    if not compared:
        return f"No method to compare with {reference} here."
    never = [described(m) for m in compared if versus[(m, *setting)].never_below]
    below = [described(m) for m in compared if not versus[(m, *setting)].never_below]
    count = versus[(compared[0], *setting)].victims
    return (f"Against {reference}, victim by victim ({count} victims with a rate for both): never below it: "
            f"{', '.join(never) or 'none'}. Below it on at least one victim: {', '.join(below) or 'none'}.")


def analysis(payload) -> List[dict]:
    """Per (source, eps, budget): the ordering's agreement with TransferAttack's published one, DI-MI-FGSM's
    standing (TransferAttackEval's claim) and the Pareto front of the (source, eps) panel
    (`tfattack.bench.published`)."""
    from tfattack.bench import published

    means = leaderboard.mean_over_victims(payload["rows"], victim_columns(payload))
    fronts = {title: [p["label"] for p in sorted(points, key=lambda p: p["x"]) if p["front"]]
              for title, points in pareto_points(payload).items()}
    return published.analysis(means, fronts, published.load())


def pareto_points(payload) -> Dict[str, List[dict]]:
    """Per (source, eps): one point per (method, budget) at (grad evals, mean success), the Pareto front marked; a
    matched entry that is its paper set is drawn once, as the paper point."""
    columns = victim_columns(payload)
    means = leaderboard.mean_over_victims(payload["rows"], columns)
    passes = {(r["method"], r["source"], r["eps_pixels"], r["budget"]): r["grad_evals_per_image"]
              for r in payload["rows"]}
    shared = {s["name"] for s in payload["sets"] if s["crafted_as"] != s["name"]}
    panels: Dict[str, List[dict]] = {}
    for (method, source, eps, budget), mean in means.items():
        if set_name(source, eps, budget, method) in shared:
            continue
        panels.setdefault(f"{source}, eps {eps:g}/255", []).append(
            {"x": passes[(method, source, eps, budget)], "y": mean, "marker": "o" if budget == "paper" else "s",
             "label": method if budget == "paper" else f"{method} (matched)", "front": False})
    for points in panels.values():
        for position in leaderboard.pareto_front([(p["x"], p["y"]) for p in points]):
            points[position]["front"] = True
    return panels


def write_figures(payload, output_dir: str, stem: str = "leaderboard") -> None:
    from tfattack.bench import plots

    plots.pareto(pareto_points(payload), os.path.join(output_dir, f"{stem}.png"),
                 "gradient evaluations per image (log scale)", "mean success over the victims (%)")
    columns = victim_columns(payload)
    keys = list(dict.fromkeys((r["source"], r["eps_pixels"], r["budget"], r["method"]) for r in payload["rows"]))
    rates = {(r["source"], r["eps_pixels"], r["budget"], r["method"], r["victim"]): r["success_pct"]
             for r in payload["rows"]}
    grid = np.array([[rates.get(k + (v,), np.nan) for v in columns] for k in keys])
    plots.heatmap(grid, [f"{s} eps{e:g} {b}: {m}" for s, e, b, m in keys], [short_label(c) for c in columns],
                  "Leaderboard: untargeted success rate (%)", "success rate (%)",
                  os.path.join(output_dir, f"{stem}_heatmap.png"))
