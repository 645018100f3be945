"""Reports of an `evaluate.Evaluation`: markdown tables, the same numbers as CSV and JSON, PNG plots.

    paths = report.write_report(evaluation, "outputs/report.md")
    # outputs/report.md, report.csv, report.json, report_success.png, report_examples.png

The success-rate table is laid out like the papers' tables: one row per attack (adversarial folder),
one column per victim x defense, each cell "success % (clean accuracy %)". Plots use matplotlib's Agg
canvas directly (no display, no pyplot state).
"""

from __future__ import annotations

import csv
import io
import math
import os
import textwrap
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfattack import data, evaluate as evaluate_lib, files

CSV_COLUMNS = ("attack", "targeted", "model", "defense", "images", "not_evaluated", "label_source", "denominator", "clean_correct",
               "clean_accuracy", "adv_correct", "adv_accuracy", "success_clean_correct", "success_rate_clean_correct",
               "success_all", "success_rate_all", "success_rate", "tianchi_score", "linf_mean", "linf_max", "l2_mean",
               "mean_abs_mean", "max_epsilon", "eps_violations")


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100.0 * value:.1f}"


def _num(value, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def column_name(model: str, defense: str) -> str:
    return model if defense == "none" else f"{model}+{defense}"


def _coverage(result) -> str:
    """' [3 of 4 images]' next to a rate computed on part of the set; '' when every image counted."""
    total = result.images + result.not_evaluated
    return f" [{result.images} of {total} images]" if result.not_evaluated else ""


def _markdown_table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _set_label(adv_set) -> str:
    return f"{adv_set.name} ({'targeted' if adv_set.targeted else 'untargeted'})"


def csv_rows(evaluation) -> List[Dict[str, object]]:
    """One row per (attack, model, defense) with every number of the report."""
    by_attack = {p.attack: p for p in evaluation.perturbations}
    rows = []
    for r in evaluation.results:
        p = by_attack[r.attack]
        row = r.to_dict()
        row.update(linf_mean=p.linf_mean, linf_max=p.linf_max, l2_mean=p.l2_mean, mean_abs_mean=p.mean_abs_mean,
                   max_epsilon=p.max_epsilon, eps_violations=len(p.violations))
        rows.append({k: row[k] for k in CSV_COLUMNS})
    return rows


def markdown(evaluation, plot_names: Dict[str, str]) -> str:
    ev = evaluation
    columns = [(m, d) for m in ev.victims for d in ev.defenses]
    headline = evaluate_lib.DENOMINATOR_TEXT[ev.denominator]
    other = [d for d in evaluate_lib.DENOMINATORS if d != ev.denominator][0]
    lines = ["# Transfer evaluation", ""]
    lines += [f"- Clean images: `{ev.dataset.input_dir}` ({len(ev.dataset)} images)",
              f"- Labels: {'ground truth (TrueLabel)' if ev.label_source == 'truth' else 'the surrogate’s clean prediction'}"
              f" (`label_source={ev.label_source}`)",
              f"- Victims: {', '.join(ev.victims)}; defenses: {', '.join(ev.defenses)}",
              "- Adversarial sets: " + "; ".join(f"`{s.name}` = `{s.path}` ({', '.join(s.notes)})" for s in ev.adv_sets),
              "- Evaluated from the saved 8-bit PNG files.", ""]

    lines += [f"## Attack success rate (%), over {headline}", "",
              f"Cell: success rate over {headline} (the victim's clean accuracy on the same images in brackets). "
              "Untargeted: prediction differs from the label; targeted: prediction equals the target class.", ""]
    rows = []
    for s in ev.adv_sets:
        cells = []
        for m, d in columns:
            r = ev.result(s.name, m, d)
            cells.append(f"{_pct(r.success_rate)} ({_pct(r.clean_accuracy)}){_coverage(r)}")
        rows.append([_set_label(s)] + cells)
    lines += _markdown_table(["attack"] + [column_name(m, d) for m, d in columns], rows) + [""]

    lines += ["## All numbers", "",
              f"`success/clean-correct`: over {evaluate_lib.DENOMINATOR_TEXT['clean_correct']}; "
              f"`success/all`: over {evaluate_lib.DENOMINATOR_TEXT['all']} (the headline above is "
              f"`success/{'all' if ev.denominator == 'all' else 'clean-correct'}`, the other is "
              f"`success/{'all' if other == 'all' else 'clean-correct'}`). Accuracies and rates in %.", ""]
    rows = [[r.attack, r.model, r.defense, str(r.images), str(r.not_evaluated), _pct(r.clean_accuracy), _pct(r.adv_accuracy),
             f"{_pct(r.success_rate_clean_correct)} ({r.success_clean_correct}/{r.clean_correct})",
             f"{_pct(r.success_rate_all)} ({r.success_all}/{r.images})", _num(r.tianchi_score, 3)]
            for r in ev.results]
    lines += _markdown_table(["attack", "victim", "defense", "images", "not evaluated", "clean acc", "adv acc", "success/clean-correct",
                              "success/all", "competition score"], rows) + [""]

    lines += ["## Perturbation size (pixel units, 0..255) and eps check", "",
              "Per image over the 8-bit files: L∞ = max |δ|, L2 = sqrt(Σ δ²) over all H·W·3 values, mean |δ|; "
              "the table gives means over images (and the largest L∞); mean abs(δ) is the mean |δ|.", ""]
    rows = []
    for p in ev.perturbations:
        bound = "not checked" if p.max_epsilon is None else f"{p.max_epsilon:g}"
        broken = "none" if p.max_epsilon is not None and not p.violations else (
            "n/a" if p.max_epsilon is None else f"**{len(p.violations)}**: " + ", ".join(p.violations[:10])
            + (" ..." if len(p.violations) > 10 else ""))
        rows.append([p.attack, str(p.images), str(len(p.missing)), str(len(p.skipped)), _num(p.linf_mean), _num(p.linf_max, 0),
                     _num(p.l2_mean), _num(p.mean_abs_mean, 3), bound, broken])
    lines += _markdown_table(["attack", "images", "missing", "unreadable", "L∞ mean", "L∞ max", "L2 mean", "mean abs(δ)", "eps bound",
                              "images over the bound"], rows) + [""]

    lines += ["## Competition score", "",
              f"{evaluate_lib.TIANCHI_PROVENANCE}: {evaluate_lib.TIANCHI_FORMULA}. Higher is better for the attacker "
              "(at most 10 for a targeted hit with no perturbation, 4 for a misclassification).", ""]
    rows = [[_set_label(s)] + [_num(ev.tianchi_mean(s.name, d), 3) for d in ev.defenses] for s in ev.adv_sets]
    lines += _markdown_table(["attack"] + [f"defense {d}" for d in ev.defenses], rows) + [""]

    if plot_names:
        lines += ["## Plots", ""] + [f"![{title}]({name})" for title, name in plot_names.items()] + [""]
    if ev.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in ev.notes] + [""]
    return "\n".join(lines)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_success(evaluation, path: str) -> None:
    """Grouped bars: one group per victim x defense, one bar per attack, height = headline success rate."""
    ev = evaluation
    columns = [(m, d) for m in ev.victims for d in ev.defenses]
    figure = _figure(max(6.0, 1.2 * len(columns) + 2), 4.5)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(ev.adv_sets)
    for k, s in enumerate(ev.adv_sets):
        values = [100.0 * np.nan_to_num(ev.result(s.name, m, d).success_rate) for m, d in columns]
        axes.bar(np.arange(len(columns)) + (k - (len(ev.adv_sets) - 1) / 2) * width, values, width, label=_set_label(s))
    axes.set_xticks(np.arange(len(columns)))
    axes.set_xticklabels([column_name(m, d) for m, d in columns], rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 100)
    axes.set_ylabel("success rate (%)")
    axes.set_title(f"Attack success over {evaluate_lib.DENOMINATOR_TEXT[ev.denominator]}", fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    files.atomic_write(path, lambda stream: figure.savefig(stream, format="png"))


CLASS_NAME_WIDTH = 24  # characters of a class name in a panel caption, "…" included


def short_class_name(name: str, width: int = CLASS_NAME_WIDTH) -> str:
    """A class name for a caption: its first synonym, shortened at a word boundary with "…" if too long.

    ImageNet names list synonyms after commas ("black-footed ferret, ferret, Mustela nigripes"); the first one
    names the class. Words are never cut: a first word longer than `width` is kept whole, followed by "…"
    when more words follow.
    """
    first = " ".join(name.split(",")[0].split())
    if len(first) <= width:
        return first
    # break_on_hyphens=False: "black-footed" is one word and stays whole.
    short = textwrap.shorten(first, width, placeholder="…", break_on_hyphens=False)
    if short == "…":  # shorten gives only the placeholder when the first word alone is too long
        head, _, rest = first.partition(" ")
        short = head + ("…" if rest else "")
    return short


def class_label(index: int, names: Sequence[str], width: int = CLASS_NAME_WIDTH) -> str:
    """'<short name> (<index>)', or 'n/a' for an image not evaluated (index < 0)."""
    return "n/a" if index < 0 else f"{short_class_name(names[index], width)} ({index})"


def adversarial_caption(attack: str, prediction: int, names: Sequence[str], targeted: bool = False,
                        target: Optional[int] = None) -> str:
    """Caption of an adversarial tile: the victim's top-1 and, on targeted sets, a second line with the target
    class and whether the top-1 hit it ("target: n/a" when a targeted set has no target for the image)."""
    caption = f"{attack}: {class_label(prediction, names)}"
    if not targeted:
        return caption
    if target is None or target < 0:
        return caption + "\ntarget: n/a"
    hit = "hit" if prediction == target else "missed"
    return caption + f"\ntarget: {class_label(target, names)}, {hit}"


def plot_examples(evaluation, path: str, count: int = 4) -> bool:
    """Rows of example images: clean, then per attack the adversarial image and its amplified perturbation.

    Titles give the top-1 class of the first victim (first defense); tiles of targeted sets also name the
    image's target class and whether the top-1 hit it. Returns False if nothing to show.
    """
    from tfattack.models import class_names

    ev = evaluation
    names = class_names()
    victim, defense = ev.victims[0], ev.defenses[0]
    first = ev.adv_sets[0].name
    chosen = [i for i in range(len(ev.dataset)) if ev.adv_predictions[(first, victim, defense)][i] >= 0][:count]
    if not chosen:
        return False
    columns = 1 + 2 * len(ev.adv_sets)
    figure = _figure(2.4 * columns, 2.6 * len(chosen))

    for row, i in enumerate(chosen):
        clean = data.read_image_uint8(ev.dataset.paths[i])
        panels = [(clean, f"clean: {class_label(ev.clean_predictions[(victim, defense)][i], names)}")]
        for s in ev.adv_sets:
            adv_file = data.output_path(s.path, ev.dataset.ids[i])
            prediction = int(ev.adv_predictions[(s.name, victim, defense)][i])
            if prediction < 0 or not os.path.isfile(adv_file):
                panels += [(None, f"{s.name}: missing"), (None, "")]
                continue
            adv = data.read_image_uint8(adv_file)
            delta = adv.astype(np.float64) - clean.astype(np.float64)
            linf = float(np.abs(delta).max())
            peak = max(1.0, linf)  # stretch the perturbation to the full display range
            target = int(ev.targets[i]) if s.targeted and ev.targets is not None else None
            panels += [(adv, adversarial_caption(s.name, prediction, names, s.targeted, target)),
                       (0.5 + delta / (2 * peak), f"perturbation x{127.5 / peak:.0f} (L∞ {linf:.0f})")]
        for col, (image, text) in enumerate(panels):
            axes = figure.add_subplot(len(chosen), columns, row * columns + col + 1)
            axes.axis("off")
            if image is not None:
                axes.imshow(image if image.dtype == np.uint8 else np.clip(image, 0, 1))
            axes.set_title(text, fontsize=7)
    figure.suptitle(f"Top-1 of {column_name(victim, defense)}", fontsize=9)
    figure.tight_layout()
    files.atomic_write(path, lambda stream: figure.savefig(stream, format="png"))
    return True


def write_report(evaluation, report_path: str, examples: int = 4) -> Dict[str, str]:
    """Writes the markdown report and, next to it with the same stem, .csv, .json and the two PNG plots.

    Returns {"markdown", "csv", "json", "success_plot", "examples_plot"} -> paths written.
    """
    from tfattack.runs import write_json_atomic

    folder = os.path.dirname(os.path.abspath(report_path))
    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(report_path)[0]
    paths = {"markdown": report_path, "csv": stem + ".csv", "json": stem + ".json",
             "success_plot": stem + "_success.png", "examples_plot": stem + "_examples.png"}
    plot_success(evaluation, paths["success_plot"])
    plots = {"success rates": os.path.basename(paths["success_plot"])}
    if examples > 0 and plot_examples(evaluation, paths["examples_plot"], examples):
        plots["examples"] = os.path.basename(paths["examples_plot"])
    else:
        del paths["examples_plot"]

    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(evaluation))
    files.atomic_write_text(paths["csv"], table.getvalue())
    write_json_atomic(paths["json"], to_json(evaluation))
    files.atomic_write_text(paths["markdown"], markdown(evaluation, plots))
    return paths


def _plain(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def to_json(evaluation) -> dict:
    """The report's numbers plus per-image labels, predictions and perturbation sizes."""
    ev = evaluation
    per_image = []
    for i, image_id in enumerate(ev.dataset.ids):
        entry = {"id": image_id, "label": int(ev.labels[i]),
                 "target": None if ev.targets is None else int(ev.targets[i]),
                 "clean_top1": {column_name(m, d): int(p[i]) for (m, d), p in ev.clean_predictions.items()},
                 "adversarial": {}}
        for s in ev.adv_sets:
            entry["adversarial"][s.name] = {
                "linf": _plain(float(ev.linf[s.name][i])), "l2": _plain(float(ev.l2[s.name][i])),
                "mean_abs": _plain(float(ev.mean_abs[s.name][i])),
                "top1": {column_name(m, d): int(ev.adv_predictions[(s.name, m, d)][i])
                         for m in ev.victims for d in ev.defenses}}
        per_image.append(entry)
    return {
        "input_dir": ev.dataset.input_dir, "label_source": ev.label_source, "denominator": ev.denominator,
        "denominator_meaning": evaluate_lib.DENOMINATOR_TEXT[ev.denominator],
        "victims": ev.victims, "defenses": ev.defenses,
        "adv_sets": [{"name": s.name, "path": s.path, "targeted": s.targeted, "max_epsilon": s.max_epsilon,
                      "notes": list(s.notes)} for s in ev.adv_sets],
        "competition_score": {"formula": evaluate_lib.TIANCHI_FORMULA, "provenance": evaluate_lib.TIANCHI_PROVENANCE,
                              "mean_over_victims": {s.name: {d: _plain(ev.tianchi_mean(s.name, d)) for d in ev.defenses}
                                                    for s in ev.adv_sets}},
        "results": [{k: _plain(v) for k, v in row.items()} for row in csv_rows(ev)],
        "perturbations": [p.to_dict() for p in ev.perturbations],
        "notes": ev.notes, "images": per_image,
    }
