"""Transfer evaluation from the saved 8-bit PNGs: every (adversarial set, victim, defense).

    dataset = data.read_dataset("images/")
    adv = [evaluate.read_adv_set("out/mi_fgsm"), evaluate.read_adv_set("out/ti_di", targeted=False)]
    result = evaluate.evaluate(dataset, adv, victims=[vgg, resnet], defenses=["none", "jpeg:75"],
                               label_source="truth", denominator="clean_correct")

Two choices are named parameters because papers differ on them and the numbers move a lot:
  - `label_source`: "truth" (the dataset's TrueLabel) or "clean_prediction" (the surrogate's
    prediction on the clean image, `label_model`).
  - `denominator`: "clean_correct" (success among images the victim classified correctly when clean)
    or "all" (among all images). Both are always computed; `denominator` picks the headline
    `success_rate`. Each victim's clean accuracy is reported next to it.
Success: untargeted, prediction != label; targeted, prediction == target.
Perturbation sizes are in pixel units (0..255) over the 8-bit files: L-inf, L2 (over all H*W*3 values)
and mean absolute value. The eps bound is checked per image.

Competition score (`tianchi_score`): the IJCAI-19 Alibaba Adversarial AI Challenge (Tianchi, 2019) attack
score as participants reimplemented it in their local scoring scripts: per image and victim, 0 if the
prediction is still the label, 2 * (2 - Linf / 32) if misclassified, 5 * (2 - Linf / 32) if it is the
target class (targeted sets only), Linf in pixel units; averaged over images (and, in the report, victims).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfattack import data, defenses as defenses_lib

LABEL_SOURCES = ("truth", "clean_prediction")
DENOMINATORS = ("clean_correct", "all")
DENOMINATOR_TEXT = {"clean_correct": "images the victim classified correctly when clean", "all": "all images"}
RUN_RECORD = "run.json"
# From this many batches on, evaluate() compiles its forward passes by default (see `_predictor`).
COMPILE_FROM_BATCHES = 16
SHARD_RECORDS = "run.shard-*-of-*.json"  # sharded attacks before scripts/merge_runs.py
TIANCHI_FORMULA = ("per image and victim: 0 if still classified as the label, 2*(2 - Linf/32) if misclassified, "
                   "5*(2 - Linf/32) if classified as the target (targeted sets), Linf in pixel units 0..255; "
                   "averaged over images and victims")
TIANCHI_PROVENANCE = ("IJCAI-19 Alibaba Adversarial AI Challenge (Tianchi 2019), attack-track score as "
                      "participants reimplemented it in their local scoring scripts")


@dataclasses.dataclass(frozen=True)
class AdvSet:
    """One folder of adversarial PNGs (`<ImageId>.png`) and what its run record says about it."""

    name: str
    path: str
    targeted: bool
    max_epsilon: Optional[float]
    notes: Tuple[str, ...] = ()
    # The clean top-1 the attack run attacked, per ImageId, when it had no ground truth (run.json
    # `predicted_labels`); None when the record has none.
    predicted_labels: Optional[Dict[str, int]] = None


def read_adv_set(path: str, *, targeted: Optional[bool] = None, max_epsilon: Optional[float] = None,
                 name: Optional[str] = None) -> AdvSet:
    """Reads an adversarial folder and its `run.json` (written by scripts/attack.py; or, before
    scripts/merge_runs.py, the shard records, which must agree), if any.

    `targeted`: the run record's `targeted` wins; the argument is used when the record does not say
    (default untargeted). `max_epsilon` (pixels): the argument wins over the record's `max_epsilon`.
    """
    if not os.path.isdir(path):
        raise data.DataError(f"adv dir {path}: no such folder")
    run = _run_record(path)
    notes = []
    if isinstance(run.get("targeted"), bool):
        is_targeted = run["targeted"]
        where = f"{RUN_RECORD}"
    else:
        is_targeted = bool(targeted)
        where = "--targeted flag" if targeted is not None else f"default: no 'targeted' in a {RUN_RECORD}"
    notes.append(f"{'targeted' if is_targeted else 'untargeted'} ({where})")
    recorded = run.get("max_epsilon")
    if recorded is not None and not isinstance(recorded, (int, float)):
        raise data.DataError(f"{os.path.join(path, RUN_RECORD)}: max_epsilon must be a number of pixels, got {recorded!r}")
    if max_epsilon is not None:
        bound = float(max_epsilon)
        notes.append(f"eps bound {bound:g} (given)" + (f"; {RUN_RECORD} says {recorded:g}" if recorded is not None
                                                          and float(recorded) != bound else ""))
    elif recorded is not None:
        bound = float(recorded)
        notes.append(f"eps bound {bound:g} ({RUN_RECORD})")
    else:
        bound = None
        notes.append("eps bound unknown (no --max_epsilon, no max_epsilon in a run record): not checked")
    label = name or os.path.basename(os.path.normpath(path)) or path
    predicted = run.get("predicted_labels")
    if predicted is not None and not (isinstance(predicted, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1000 for v in predicted.values())):
        raise data.DataError(f"adv dir {path}: the run record's predicted_labels must map ImageId to a class 0..999")
    return AdvSet(name=label, path=str(path), targeted=is_targeted, max_epsilon=bound, notes=tuple(notes),
                  predicted_labels=predicted or None)


def _run_record(path: str) -> dict:
    """The folder's `run.json`, else the `targeted`/`max_epsilon` its shard records agree on, else {}."""
    single = os.path.join(path, RUN_RECORD)
    files = [single] if os.path.isfile(single) else sorted(glob.glob(os.path.join(path, SHARD_RECORDS)))
    records = []
    for record in files:
        try:
            with open(record) as handle:
                payload = json.load(handle)
        except (OSError, ValueError) as err:
            raise data.DataError(f"{record}: not a readable JSON run record ({' '.join(str(err).split())})") from None
        if not isinstance(payload, dict):
            raise data.DataError(f"{record}: expected a JSON object")
        records.append(payload)
    if len(records) <= 1:
        return records[0] if records else {}
    merged = {}
    for key in ("targeted", "max_epsilon"):
        values = {json.dumps(r.get(key)) for r in records}
        if len(values) > 1:
            raise data.DataError(f"{path}: the shard run records disagree on {key} ({', '.join(sorted(values))})")
        merged[key] = records[0].get(key)
    if any(isinstance(r.get("predicted_labels"), dict) for r in records):
        merged["predicted_labels"] = {k: v for r in records for k, v in (r.get("predicted_labels") or {}).items()}
    return merged


@dataclasses.dataclass(frozen=True)
class Result:
    """Numbers for one (adversarial set, victim, defense) over `images` evaluated images."""

    attack: str
    model: str
    defense: str
    targeted: bool
    images: int
    label_source: str
    denominator: str
    clean_correct: int
    adv_correct: int
    success_all: int
    success_clean_correct: int
    tianchi_score: float
    # Images of the dataset with no result here (adversarial file missing, unreadable or misshaped, clean
    # image unreadable, no label): every rate above is over the other `images`.
    not_evaluated: int = 0

    @property
    def clean_accuracy(self) -> float:
        return _ratio(self.clean_correct, self.images)

    @property
    def adv_accuracy(self) -> float:
        return _ratio(self.adv_correct, self.images)

    @property
    def success_rate_all(self) -> float:
        return _ratio(self.success_all, self.images)

    @property
    def success_rate_clean_correct(self) -> float:
        return _ratio(self.success_clean_correct, self.clean_correct)

    @property
    def success_rate(self) -> float:
        """The headline rate, over `denominator`."""
        return self.success_rate_all if self.denominator == "all" else self.success_rate_clean_correct

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for key in ("clean_accuracy", "adv_accuracy", "success_rate_all", "success_rate_clean_correct", "success_rate"):
            out[key] = getattr(self, key)
        return out


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """Per-set perturbation sizes (pixel units 0..255) and the eps check."""

    attack: str
    images: int
    missing: Tuple[str, ...]
    skipped: Tuple[data.Skipped, ...]
    linf_mean: float
    linf_max: float
    l2_mean: float
    mean_abs_mean: float
    max_epsilon: Optional[float]
    violations: Tuple[str, ...]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["skipped"] = [dataclasses.asdict(s) for s in self.skipped]
        return out


@dataclasses.dataclass
class Evaluation:
    """Everything `evaluate` found; `report.write_report` turns it into tables and plots.

    Per-image arrays are aligned with `dataset.ids`; -1 / NaN mark images not evaluated.
      labels: the labels used (per `label_source`); targets: the dataset's targets or None.
      clean_predictions[(victim, defense)], adv_predictions[(attack, victim, defense)]: top-1 indices.
      linf, l2, mean_abs [attack]: per-image perturbation sizes, pixel units.
    """

    dataset: data.Dataset
    adv_sets: List[AdvSet]
    victims: List[str]
    defenses: List[str]
    label_source: str
    denominator: str
    results: List[Result]
    perturbations: List[Perturbation]
    labels: np.ndarray
    targets: Optional[np.ndarray]
    clean_predictions: Dict[Tuple[str, str], np.ndarray]
    adv_predictions: Dict[Tuple[str, str, str], np.ndarray]
    linf: Dict[str, np.ndarray]
    l2: Dict[str, np.ndarray]
    mean_abs: Dict[str, np.ndarray]
    skipped: List[data.Skipped]
    notes: List[str]

    def result(self, attack: str, model: str, defense: str) -> Result:
        for r in self.results:
            if (r.attack, r.model, r.defense) == (attack, model, defense):
                return r
        raise KeyError((attack, model, defense))

    def tianchi_mean(self, attack: str, defense: str) -> float:
        """The competition score of one set under one defense, averaged over victims."""
        scores = [r.tianchi_score for r in self.results if r.attack == attack and r.defense == defense]
        return float(np.mean(scores)) if scores else float("nan")


def _ratio(num, den) -> float:
    return float(num) / float(den) if den else float("nan")


def tianchi_scores(adv_pred, labels, linf, targets=None) -> np.ndarray:
    """Per-image competition score (see module doc); `targets` None for untargeted sets."""
    adv_pred, labels, linf = np.asarray(adv_pred), np.asarray(labels), np.asarray(linf, np.float64)
    scale = 2.0 - linf / 32.0
    score = np.where(adv_pred != labels, 2.0 * scale, 0.0)
    if targets is not None:
        score = np.where(adv_pred == np.asarray(targets), 5.0 * scale, score)
    return score


def perturbation_sizes(adv_uint8: np.ndarray, clean_uint8: np.ndarray):
    """Per-image (L-inf, L2, mean |delta|) in pixel units, from uint8 [N, H, W, 3] batches."""
    delta = adv_uint8.astype(np.int32) - clean_uint8.astype(np.int32)
    flat = delta.reshape(delta.shape[0], -1)
    return (np.abs(flat).max(axis=1).astype(np.float64), np.sqrt((flat.astype(np.float64) ** 2).sum(axis=1)),
            np.abs(flat).mean(axis=1))


def _predictor(model, compiled: bool = False):
    """Top-1 of a model on a uint8 batch, one batched forward pass; `predict(pixels, keys)` hands a defended model
    the images' keys (`defenses.id_key`), which pick a random defense's draws.

    Eager by default: a compiled forward pass is traced once per model, defense and image shape, which
    on a CPU costs more than it saves for the few batches of a small evaluation. `compiled=True` pays
    that once for the many batches of a large one (Lite2 at batch 10 on this CPU: 0.70 -> 0.52 s).
    """
    keyed = isinstance(model, defenses_lib.Defended)

    def forward(images, keys):
        return tf.argmax(model(images, keys) if keyed else model(images), axis=-1, output_type=tf.int64)

    if compiled:
        forward = tf.function(forward, reduce_retracing=True)

    def predict(pixels, keys):
        return forward(tf.constant(pixels.astype(np.float32) / np.float32(255.0)), tf.constant(keys, tf.int64)).numpy()

    return predict


def _read_batch(paths: Sequence[str], expected_sizes, skipped: List[data.Skipped]):
    """uint8 stack of the readable images of the expected sizes, and the positions kept."""
    images, kept = [], []
    for position, (path, size) in enumerate(zip(paths, expected_sizes)):
        try:
            pixels = data.read_image_uint8(path)
        except data.ImageReadError as err:
            skipped.append(data.Skipped(path, str(err)))
            continue
        if pixels.shape[:2] != tuple(size):
            skipped.append(data.Skipped(path, f"{path}: size {pixels.shape[1]}x{pixels.shape[0]} differs from the "
                                              f"clean image's {size[1]}x{size[0]}"))
            continue
        images.append(pixels)
        kept.append(position)
    return (np.stack(images) if images else None), kept


@dataclasses.dataclass
class _PerImage:
    """What the batch loop finds, per image in dataset order (-1 / NaN / False where not evaluated)."""

    labels: np.ndarray
    clean_ok: np.ndarray
    adv_ok: Dict[str, np.ndarray]
    clean_pred: Dict[Tuple[str, str], np.ndarray]
    adv_pred: Dict[Tuple[str, str, str], np.ndarray]
    sizes: Dict[str, Dict[str, np.ndarray]]
    clean_skipped: List[data.Skipped]
    adv_skipped: Dict[str, List[data.Skipped]]

    @classmethod
    def empty(cls, count, labels, set_names, predictor_keys):
        def filled(value, dtype):
            return np.full(count, value, dtype)

        return cls(labels=filled(-1, np.int64) if labels is None else labels.copy(), clean_ok=filled(False, bool),
                   adv_ok={n: filled(False, bool) for n in set_names},
                   clean_pred={k: filled(-1, np.int64) for k in predictor_keys},
                   adv_pred={(n,) + k: filled(-1, np.int64) for n in set_names for k in predictor_keys},
                   sizes={n: {k: filled(np.nan, np.float64) for k in ("linf", "l2", "mean_abs")} for n in set_names},
                   clean_skipped=[], adv_skipped={n: [] for n in set_names})


def _run_batches(dataset, adv_paths, predictors, label_predictor, found: _PerImage, batch_size, progress,
                 known_clean: Optional[Mapping[Tuple[str, str], np.ndarray]] = None) -> None:
    """Reads clean and adversarial files batch by batch (one image size per batch) and fills `found`; the clean
    predictions of the pairs in `known_clean` are taken from it instead of predicted."""
    known_clean = known_clean or {}
    image_keys = np.asarray([defenses_lib.id_key(i) for i in dataset.ids], np.int64)
    for planned in data.batches_by_size(range(len(dataset)), dataset.sizes, batch_size):
        clean, kept = _read_batch([dataset.paths[i] for i in planned], [dataset.sizes[i] for i in planned],
                                  found.clean_skipped)
        if clean is None:
            continue
        rows = np.asarray([planned[k] for k in kept])
        found.clean_ok[rows] = True
        if label_predictor is not None:
            found.labels[rows] = label_predictor(clean, image_keys[rows])
        for key, predict in predictors.items():
            found.clean_pred[key][rows] = (known_clean[key][rows] if key in known_clean
                                           else predict(clean, image_keys[rows]))
        for name, paths in adv_paths.items():
            present = [(k, r) for k, r in enumerate(rows) if os.path.isfile(paths[r])]
            adv, adv_kept = _read_batch([paths[r] for _, r in present], [dataset.sizes[r] for _, r in present],
                                        found.adv_skipped[name])
            if adv is None:
                continue
            positions = np.asarray([present[k][0] for k in adv_kept])
            adv_rows = rows[positions]
            found.adv_ok[name][adv_rows] = True
            for key, values in zip(("linf", "l2", "mean_abs"), perturbation_sizes(adv, clean[positions])):
                found.sizes[name][key][adv_rows] = values
            for key, predict in predictors.items():
                found.adv_pred[(name,) + key][adv_rows] = predict(adv, image_keys[adv_rows])
        if progress is not None:
            progress(len(planned))


def predict_pair(dataset: data.Dataset, adv_paths: Dict[str, Sequence[str]], victim, defense, batch_size: int,
                 compiled: bool = False):
    """(clean top-1, {set name: adversarial top-1}) of `victim` behind `defense` over every image (-1 where a file
    is missing or unreadable): what `evaluate` computes for this one pair, batch for batch and draw for draw (a random
    defense's draws follow each image's ImageId), on its own. The unit of work of an evaluation spread over workers."""
    key = ("victim", getattr(defense, "spec", str(defense)))
    found = _PerImage.empty(len(dataset), None, list(adv_paths), [key])
    predictor = _predictor(defenses_lib.wrap(victim, defense), compiled)
    _run_batches(dataset, adv_paths, {key: predictor}, None, found, batch_size, None)
    return found.clean_pred[key], {name: found.adv_pred[(name,) + key] for name in adv_paths}


def _progress_shares(total: int, parts: int) -> List[int]:
    """`total` split into `parts` whole shares that add up to it (progress per finished pair)."""
    return [(i + 1) * total // parts - i * total // parts for i in range(parts)]


def _summarise_perturbation(adv_set: AdvSet, ids, mask, sizes, missing, skipped) -> Perturbation:
    evaluated = int(mask.sum())

    def stat(values, reduce):
        return float(reduce(values[mask])) if evaluated else float("nan")

    linf = sizes["linf"]
    over = tuple(ids[i] for i in np.flatnonzero(mask) if adv_set.max_epsilon is not None and linf[i] > adv_set.max_epsilon)
    return Perturbation(attack=adv_set.name, images=evaluated, missing=tuple(missing), skipped=tuple(skipped),
                        linf_mean=stat(linf, np.mean), linf_max=stat(linf, np.max), l2_mean=stat(sizes["l2"], np.mean),
                        mean_abs_mean=stat(sizes["mean_abs"], np.mean), max_epsilon=adv_set.max_epsilon,
                        violations=over)


def absent_images(dataset: data.Dataset, adv_set: AdvSet) -> List[str]:
    """ImageIds of `dataset` with no `<ImageId>.png` in the set's folder."""
    return [i for i in dataset.ids if not os.path.isfile(data.output_path(adv_set.path, i))]


def _listed(items: Sequence[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def recorded_labels(dataset: data.Dataset, adv_sets: Sequence[AdvSet]) -> np.ndarray:
    """Per image (dataset order), the clean top-1 the attack runs recorded; -1 where none did.

    Sets whose runs attacked different surrogates' predictions disagree, and then no single label
    is right: that is an error that asks for the surrogate.
    """
    bare = [s.name for s in adv_sets if not s.predicted_labels]
    if bare:
        raise data.DataError(f"labels from the attack runs' clean predictions: adv set(s) {', '.join(bare)} record "
                             f"none ({RUN_RECORD} predicted_labels; written when the attacked images had no "
                             f"ground truth): give the surrogate (--label_models) instead")
    labels = np.full(len(dataset), -1, np.int64)
    first = {}
    for s in adv_sets:
        for position, image_id in enumerate(dataset.ids):
            label = s.predicted_labels.get(image_id)
            if label is None:
                continue
            if labels[position] >= 0 and labels[position] != label:
                raise data.DataError(f"labels from the attack runs' clean predictions: {first[image_id]} and "
                                     f"{s.name} record different labels for {image_id} ({labels[position]} vs "
                                     f"{label}; different surrogates?): give the surrogate (--label_models) instead")
            labels[position] = label
            first.setdefault(image_id, s.name)
    return labels


def evaluate(dataset: data.Dataset, adv_sets: Sequence[AdvSet], victims: Sequence, defenses: Sequence = ("none",), *,
             label_source: str = "truth", label_model=None, denominator: str = "clean_correct",
             batch_size: int = 8, seed: int = 0, compiled: Optional[bool] = None, progress=None,
             scorer=None, clean_predictions: Optional[Mapping[Tuple[str, str], np.ndarray]] = None) -> Evaluation:
    """Evaluates every adversarial set against every victim behind every defense.

    Args:
      dataset: the clean images (`data.read_dataset`); adversarial files are matched by ImageId.
      adv_sets: from `read_adv_set`; targeted sets need `dataset.targets`.
      victims: model-like callables (float32 [N, H, W, 3] in [0, 1] -> [N, 1000] logits) with a `name`.
      defenses: Defense objects or spec strings ("none", "jpeg:75", ...); random ones seeded by `seed` (specs); each
        image's draws follow its ImageId, so they are the same for every victim, for its clean and every adversarial
        version, in any batch and whatever other sets are scored.
      label_source: "truth" (dataset labels) or "clean_prediction" (`label_model`'s clean top-1).
      label_model: the surrogate whose clean predictions are the labels (label_source="clean_prediction");
        None: the labels the attack runs recorded (each set's run.json `predicted_labels`, which must agree
        where sets share an image; an image no record labels is not evaluated, with a note).
      denominator: "clean_correct" or "all": which success rate is the headline `Result.success_rate`.
      batch_size: images per forward pass (batches hold images of one size).
      compiled: run each (victim, defense) forward pass as a `tf.function` (its tracing pays off over many
        batches); None: compiled when the dataset spans at least COMPILE_FROM_BATCHES batches.
      progress: optional callable(count) called after each batch (with a `scorer`: after each pair, its share of
        the images).
      scorer: where the (victim, defense) pairs are predicted: None, here (each batch read once for all pairs), or
        a `tfattack.scale.RayScorer` holding a recipe for each victim's name (each pair on a Ray worker; the same
        predictions). This process still reads every file once, for the perturbation sizes and unreadable files.
      clean_predictions: {(victim name, defense spec): clean top-1 per image in dataset order} already known for some
        pairs, from an earlier evaluation of the same images with the same victims, seed, batch size and kernels
        (`tfattack.bench.leaderboard_run` keeps them with each scored set): those pairs' clean forward passes are
        skipped, which for one set is half the work. Not with a `scorer`.
    """
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source must be one of {', '.join(LABEL_SOURCES)}, got {label_source!r}")
    if denominator not in DENOMINATORS:
        raise ValueError(f"denominator must be one of {', '.join(DENOMINATORS)}, got {denominator!r}")
    if not adv_sets or not victims:
        raise ValueError("evaluate needs at least one adversarial set and one victim")
    if clean_predictions and scorer is not None:
        raise ValueError("evaluate: clean_predictions are reused here, not on a scorer's workers")
    names = [s.name for s in adv_sets]
    if len(set(names)) != len(names):
        raise ValueError(f"adversarial sets need distinct names, got {names}")
    defense_list = [d if isinstance(d, defenses_lib.Defense) else defenses_lib.parse(d, seed) for d in defenses]
    victim_names = [getattr(v, "name", None) or f"model{i}" for i, v in enumerate(victims)]
    if len(set(victim_names)) != len(victim_names):
        raise ValueError(f"victims need distinct names, got {victim_names}")
    if label_source == "truth":
        given_labels = dataset.require_labels()
    elif label_model is None:
        given_labels = recorded_labels(dataset, adv_sets)
    else:
        given_labels = None
    targets = dataset.require_targets() if any(s.targeted for s in adv_sets) else dataset.targets

    adv_paths = {s.name: [data.output_path(s.path, i) for i in dataset.ids] for s in adv_sets}
    missing = {n: [i for i, p in zip(dataset.ids, paths) if not os.path.isfile(p)] for n, paths in adv_paths.items()}
    for s in adv_sets:
        if len(missing[s.name]) == len(dataset):
            raise data.DataError(f"adv dir {s.path}: none of the {len(dataset)} images of {dataset.input_dir} is "
                                 f"there as <ImageId>.png")

    if compiled is None:
        compiled = len(dataset) >= COMPILE_FROM_BATCHES * batch_size
    label_predictor = _predictor(label_model) if given_labels is None else None
    pairs = [(vn, d) for vn in victim_names for d in defense_list]
    found = _PerImage.empty(len(dataset), given_labels, names, [(vn, d.spec) for vn, d in pairs])
    if scorer is None:
        predictors = {(vn, d.spec): _predictor(defenses_lib.wrap(v, d), compiled)
                      for v, vn in zip(victims, victim_names) for d in defense_list}
        for key, known in (clean_predictions or {}).items():
            if key not in predictors or np.shape(known) != (len(dataset),):
                raise ValueError(f"evaluate: clean_predictions for {key} do not fit: the pairs are "
                                 f"{', '.join(map(str, predictors))}, the images {len(dataset)}")
        _run_batches(dataset, adv_paths, predictors, label_predictor, found, batch_size, progress, clean_predictions)
    else:
        _run_batches(dataset, adv_paths, {}, label_predictor, found, batch_size, None)
        shares = iter(_progress_shares(len(dataset), len(pairs)))
        for (vn, d), (clean, adv) in scorer.predict_pairs(dataset, adv_paths, pairs, batch_size, compiled):
            found.clean_pred[(vn, d.spec)][:] = clean
            for name in names:
                found.adv_pred[(name, vn, d.spec)][:] = adv[name]
            if progress is not None:
                progress(next(shares))

    notes = [n for n in dataset.notes if label_source == "truth" or not n.startswith("labels:")]
    if label_source == "clean_prediction" and label_model is not None:
        members = getattr(label_model, "name_list", None)  # an Ensemble names its members
        surrogate = "+".join(members) if members else getattr(label_model, "name", repr(label_model))
        notes.insert(0, f"labels: the clean top-1 of the surrogate {surrogate} (not ground truth)")
    elif label_source == "clean_prediction":
        notes.insert(0, f"labels: the surrogate's clean top-1 as the attack runs recorded it ({RUN_RECORD} "
                        f"predicted_labels; not ground truth)")
        unlabelled = [i for i, y in zip(dataset.ids, found.labels) if y < 0]
        if unlabelled:
            notes.append(f"{len(unlabelled)} image(s) have no recorded label (not evaluated): " + _listed(unlabelled))
    results, perturbations = [], []
    for s in adv_sets:
        mask = found.clean_ok & found.adv_ok[s.name] & (found.labels >= 0)
        linf = found.sizes[s.name]["linf"]
        for vn in victim_names:
            for d in defense_list:
                results.append(score(s, vn, d.spec, mask, found.labels, targets, found.clean_pred[(vn, d.spec)],
                                     found.adv_pred[(s.name, vn, d.spec)], linf, label_source, denominator))
        summary = _summarise_perturbation(s, dataset.ids, mask, found.sizes[s.name], missing[s.name],
                                          found.adv_skipped[s.name])
        perturbations.append(summary)
        notes.append(f"{s.name} ({s.path}): " + "; ".join(s.notes))
        if summary.missing:
            notes.append(f"{s.name}: {len(summary.missing)} image(s) have no adversarial file (not evaluated): "
                         + _listed(summary.missing))
        if summary.violations:
            notes.append(f"{s.name}: {len(summary.violations)} image(s) exceed the eps bound {s.max_epsilon:g}: "
                         + _listed(summary.violations))
    skipped = found.clean_skipped + [x for n in names for x in found.adv_skipped[n]]
    notes += [f"skipped: {item.reason}" for item in skipped]
    return Evaluation(
        dataset=dataset, adv_sets=list(adv_sets), victims=victim_names, defenses=[d.spec for d in defense_list],
        label_source=label_source, denominator=denominator, results=results, perturbations=perturbations,
        labels=found.labels, targets=targets, clean_predictions=found.clean_pred, adv_predictions=found.adv_pred,
        linf={n: found.sizes[n]["linf"] for n in names}, l2={n: found.sizes[n]["l2"] for n in names},
        mean_abs={n: found.sizes[n]["mean_abs"] for n in names}, skipped=skipped, notes=notes)


def score(adv_set: AdvSet, model: str, defense: str, mask, labels, targets, clean_pred, adv_pred, linf,
          label_source: str, denominator: str) -> Result:
    """Counts for one (set, victim, defense) over the images in `mask` (per-image arrays, dataset order)."""
    y, clean, adv = labels[mask], clean_pred[mask], adv_pred[mask]
    target = targets[mask] if adv_set.targeted else None
    clean_correct = clean == y
    success = (adv == target) if adv_set.targeted else (adv != y)
    images = int(mask.sum())
    return Result(not_evaluated=int(mask.size) - images,
        attack=adv_set.name, model=model, defense=defense, targeted=adv_set.targeted, images=images,
        label_source=label_source, denominator=denominator, clean_correct=int(clean_correct.sum()),
        adv_correct=int((adv == y).sum()), success_all=int(success.sum()),
        success_clean_correct=int((success & clean_correct).sum()),
        tianchi_score=float(tianchi_scores(adv, y, linf[mask], target).mean()) if images else math.nan)
