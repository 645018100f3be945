"""The leaderboard's table (issue 19): one long-format row per (method, source, eps, budget, victim), with a 95 %
Wilson interval for every success rate, a paired exact McNemar test of each method against the reference method on
the same images, and the Pareto front of transfer against compute.

The numbers come from the per-image predictions of an evaluation of the crafted sets (`Predictions`, or a
`tfattack.evaluate.Evaluation` itself), and what each set is from a `SetInfo` per set name. Crafting and scoring stay separate: the rows can be rebuilt from a saved
evaluation without crafting anything.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfattack.bench.stats import paired_test, wilson_interval

# The CSV's columns, in order (issue 19's contract first, then the extra ones).
COLUMNS = ("method", "source", "eps_pixels", "budget", "grad_evals_per_image", "craft_s_per_image", "n_images",
           "victim", "success_pct", "ci_low", "ci_high", "n_images_all", "success_pct_all", "reference",
           "p_vs_reference")
BUDGETS = ("paper", "matched")
REFERENCE_METHOD = "ti_di_mi_fgsm"


@dataclasses.dataclass(frozen=True)
class SetInfo:
    """What one crafted set is: the preset, the surrogate source (`single` or `ensemble`), eps in pixels, the
    budget (`paper` or `matched`), gradient passes per image and crafting seconds per image."""

    method: str
    source: str
    eps_pixels: float
    budget: str
    grad_evals_per_image: float
    craft_s_per_image: float

    def __post_init__(self):
        if self.budget not in BUDGETS:
            raise ValueError(f"set of {self.method}: budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")

    @property
    def setting(self) -> tuple:
        """The comparison group: sets of one source, eps and budget are ranked against each other."""
        return self.source, self.eps_pixels, self.budget


@dataclasses.dataclass(frozen=True)
class ScoredSet:
    name: str
    targeted: bool


@dataclasses.dataclass
class Predictions:
    """The per-image top-1 predictions an evaluation found, all that the rows need, kept so that scoring is paid
    once: `clean_predictions[(victim, defense)]` and `adv_predictions[(set, victim, defense)]` (-1 where an image was
    not evaluated), aligned with `labels` (and `targets`, or None)."""

    adv_sets: List[ScoredSet]
    labels: np.ndarray
    targets: Optional[np.ndarray]
    clean_predictions: Dict[Tuple[str, str], np.ndarray]
    adv_predictions: Dict[Tuple[str, str, str], np.ndarray]

    @classmethod
    def of(cls, *evaluations) -> "Predictions":
        """The predictions of evaluations of the same sets on the same images (e.g. all victims without a defense,
        then one victim behind the defenses), their (victim, defense) pairs in order."""
        first = evaluations[0]
        for other in evaluations[1:]:
            if [s.name for s in other.adv_sets] != [s.name for s in first.adv_sets] or not np.array_equal(
                    other.labels, first.labels):
                raise ValueError("Predictions.of: the evaluations must score the same sets on the same images")
        clean, adv = {}, {}
        for evaluation in evaluations:
            clean.update(evaluation.clean_predictions)
            adv.update(evaluation.adv_predictions)
        return cls([ScoredSet(s.name, bool(s.targeted)) for s in first.adv_sets], np.asarray(first.labels),
                   None if first.targets is None else np.asarray(first.targets), clean, adv)

    def only(self, name: str) -> "Predictions":
        """The predictions of one scored set, with the clean ones (what is kept per set)."""
        scored = [s for s in self.adv_sets if s.name == name]
        if not scored:
            raise KeyError(f"no predictions for the set {name}")
        return Predictions(scored, self.labels, self.targets, self.clean_predictions,
                           {k: v for k, v in self.adv_predictions.items() if k[0] == name})

    @classmethod
    def merged(cls, parts: Sequence["Predictions"]) -> "Predictions":
        """The sets of `parts` together; every part must hold the same labels, targets and clean predictions (each
        scoring run predicts the clean images again: a difference means the victims or the scoring changed under
        kept files)."""
        first = parts[0]
        for part in parts[1:]:
            same = (np.array_equal(part.labels, first.labels) and list(part.clean_predictions) == list(
                first.clean_predictions) and all(np.array_equal(part.clean_predictions[k], v)
                                                 for k, v in first.clean_predictions.items())
                    and (part.targets is None) == (first.targets is None)
                    and (part.targets is None or np.array_equal(part.targets, first.targets)))
            if not same:
                raise ValueError(f"kept predictions disagree on the clean images ({part.adv_sets[0].name} against "
                                 f"{first.adv_sets[0].name}): delete the scores folder and score again")
        adv = {}
        for part in parts:
            adv.update(part.adv_predictions)
        return cls([s for part in parts for s in part.adv_sets], first.labels, first.targets,
                   first.clean_predictions, adv)

    def renamed(self, names: Mapping[str, str]) -> "Predictions":
        """The predictions under new set names: `names[new] = scored name`; one scored set may take several names
        (a compute-matched set that is its paper set is listed under both budgets)."""
        scored = {s.name: s for s in self.adv_sets}
        missing = sorted(set(names.values()) - set(scored))
        if missing:
            raise KeyError(f"no predictions for the set(s) {', '.join(missing)}")
        adv = {(new, victim, defense): self.adv_predictions[(old, victim, defense)]
               for new, old in names.items() for victim, defense in self.clean_predictions}
        return Predictions([ScoredSet(new, scored[old].targeted) for new, old in names.items()], self.labels,
                           self.targets, self.clean_predictions, adv)

    def save(self, path: str) -> None:
        """An .npz of the arrays and a JSON index of their keys, written atomically (a cut run leaves no half file)."""
        import json
        import os

        arrays = {"labels": self.labels}
        if self.targets is not None:
            arrays["targets"] = self.targets
        index = {"sets": [[s.name, s.targeted] for s in self.adv_sets], "clean": [], "adv": []}
        for position, (key, values) in enumerate(self.clean_predictions.items()):
            arrays[f"clean{position}"] = values
            index["clean"].append(list(key))
        for position, (key, values) in enumerate(self.adv_predictions.items()):
            arrays[f"adv{position}"] = values
            index["adv"].append(list(key))
        arrays["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
        partial = path + ".partial.npz"
        np.savez_compressed(partial, **arrays)
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str) -> "Predictions":
        import json

        with np.load(path) as arrays:
            index = json.loads(arrays["index"].tobytes().decode())
            clean = {tuple(key): arrays[f"clean{i}"] for i, key in enumerate(index["clean"])}
            adv = {tuple(key): arrays[f"adv{i}"] for i, key in enumerate(index["adv"])}
            targets = arrays["targets"] if "targets" in arrays.files else None
            return cls([ScoredSet(name, targeted) for name, targeted in index["sets"]], arrays["labels"], targets,
                       clean, adv)


def victim_label(victim: str, defense: str) -> str:
    """`efficientnet_lite2`, or `efficientnet_lite2+rs:0.25:100` behind a defense (its spec)."""
    return victim if defense in ("", "none") else f"{victim}+{defense}"


def success_vectors(evaluation, attack: str, victim: str, defense: str):
    """(success, clean_correct, evaluated): per-image booleans aligned with the dataset."""
    clean = evaluation.clean_predictions[(victim, defense)]
    adv = evaluation.adv_predictions[(attack, victim, defense)]
    labels = evaluation.labels
    evaluated = (clean >= 0) & (adv >= 0) & (labels >= 0)
    targeted = next(s.targeted for s in evaluation.adv_sets if s.name == attack)
    success = (adv == evaluation.targets) if targeted else (adv != labels)
    return success & evaluated, (clean == labels) & evaluated, evaluated


def _pct(count: int, total: int) -> float:
    return 100.0 * count / total if total else math.nan


def rows(evaluation, sets: Mapping[str, SetInfo], reference: str = REFERENCE_METHOD) -> List[Dict]:
    """One row per (set, victim, defense) of `evaluation`: success over the images the victim classified correctly
    when clean (`success_pct`, with its interval) and over all evaluated images (`success_pct_all`), and the paired
    test against the set of `reference` with the same source, eps and budget (on the images both have, clean-correct
    for the victim); `p_vs_reference` is empty for the reference itself and where it has no set."""
    unknown = [s.name for s in evaluation.adv_sets if s.name not in sets]
    if unknown:
        raise ValueError(f"leaderboard: no SetInfo for the evaluated set(s) {', '.join(unknown)}")
    references = {info.setting: name for name, info in sets.items() if info.method == reference}
    out = []
    for adv_set in evaluation.adv_sets:
        info = sets[adv_set.name]
        reference_set = references.get(info.setting)
        for victim, defense in evaluation.clean_predictions:  # the (victim, defense) pairs scored, in their order
            success, correct, evaluated = success_vectors(evaluation, adv_set.name, victim, defense)
            fooled, count = int((success & correct).sum()), int(correct.sum())
            low, high = wilson_interval(fooled, count)
            p_value = ""
            if reference_set is not None and reference_set != adv_set.name:
                other, other_correct, _ = success_vectors(evaluation, reference_set, victim, defense)
                both = correct & other_correct
                p_value = paired_test(success[both], other[both]).p_value
            out.append({
                "method": info.method, "source": info.source, "eps_pixels": info.eps_pixels,
                "budget": info.budget, "grad_evals_per_image": info.grad_evals_per_image,
                "craft_s_per_image": info.craft_s_per_image, "n_images": count,
                "victim": victim_label(victim, defense), "success_pct": _pct(fooled, count),
                "ci_low": 100.0 * low, "ci_high": 100.0 * high, "n_images_all": int(evaluated.sum()),
                "success_pct_all": _pct(int(success.sum()), int(evaluated.sum())),
                "reference": reference_set or "", "p_vs_reference": p_value})
    return out


def write_csv(table: Sequence[Mapping], path: str) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in table:
            writer.writerow({key: row[key] for key in COLUMNS})


def pareto_front(points: Sequence[tuple]) -> List[int]:
    """Indices of the (cost, value) points no other point beats: none has a lower or equal cost with a higher value,
    or a lower cost with an equal value. In order of cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for index in order:
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def mean_over_victims(table: Sequence[Mapping], victims: Sequence[str]) -> Dict[tuple, float]:
    """Mean `success_pct` over `victims` (victim labels) per (method, source, eps, budget); NaN rates count as
    missing, and a key lacking any of the victims is left out."""
    grouped: Dict[tuple, Dict[str, float]] = {}
    for row in table:
        key = (row["method"], row["source"], row["eps_pixels"], row["budget"])
        grouped.setdefault(key, {})[row["victim"]] = row["success_pct"]
    return {key: float(np.nanmean([rates[v] for v in victims]))
            for key, rates in grouped.items() if all(v in rates for v in victims)}


@dataclasses.dataclass(frozen=True)
class VersusReference:
    """One method against the reference of its setting, victim by victim: where its rate is above, equal or
    below, and where the paired test says so (p < `SIGNIFICANT`). Victims where either rate is NaN are not
    counted."""
    above: int
    equal: int
    below: int
    significantly_above: int
    significantly_below: int

    @property
    def never_below(self) -> bool:
        return self.below == 0

    @property
    def victims(self) -> int:
        return self.above + self.equal + self.below


SIGNIFICANT = 0.05


def versus_reference(table: Sequence[Mapping], reference: str = REFERENCE_METHOD) -> Dict[tuple, VersusReference]:
    """Per (method, source, eps, budget) other than the reference: how it compares with the reference of the same
    (source, eps, budget) on each victim (see VersusReference); keys whose setting has no reference are left out."""
    rates = {(r["method"], r["source"], r["eps_pixels"], r["budget"], r["victim"]): r for r in table}
    counts: Dict[tuple, List[int]] = {}
    for (method, source, eps, budget, victim), row in rates.items():
        other = rates.get((reference, source, eps, budget, victim))
        if method == reference or other is None:
            continue
        mine, theirs = row["success_pct"], other["success_pct"]
        tally = counts.setdefault((method, source, eps, budget), [0] * 5)
        if mine != mine or theirs != theirs:  # NaN: the victim got no image right when clean
            continue
        significant = row["p_vs_reference"] != "" and row["p_vs_reference"] < SIGNIFICANT
        tally[0 if mine > theirs else 1 if mine == theirs else 2] += 1
        tally[3] += significant and mine > theirs
        tally[4] += significant and mine < theirs
    return {key: VersusReference(*tally) for key, tally in counts.items()}
