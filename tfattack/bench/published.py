"""Published transfer rates the leaderboard's and the targeted table's orderings are compared with, and the
comparisons.

TransferAttack (Trustworthy-AI-Group), the untargeted table of its README: eps 16/255, 10 iterations, MI-FGSM as
the base of the other methods; a ResNet-50 surrogate, except the ensemble strategies (ResNet-50 + VGG-16 +
MobileNet-v2 + Inception-v3); success rate (%) on 4 CNNs, 4 ViTs and 5 defenses. `data/transferattack_untargeted.json`
keeps its rows with the README's commit, written by `scripts/published_rates.py` from the README itself; a method's
published mean is over the columns that are not its surrogates (12, or 9 for the ensemble strategies).

Its targeted table (`data/transferattack_targeted.json`, from the same README at the same commit): eps 16/255, 300
iterations of 2/255, a ResNet-50 surrogate, a random target per image fixed in its labels.csv; target hit rate (%) on
the same 13 columns. Its Logit, PoTrip, Logit-Margin, CFM and SU rows run, as tfattack's presets for them do, each on
TI (5x5 Gaussian kernel), DI (p 0.7; CFM's p 1 on a 340/299 canvas) and MI (mu 1) for 300 steps of 2/255 (their code
under transferattack/). What differs from the presets: its Logit and PoTrip sum raw gradients in the momentum (the
presets L1-normalise them, as its other three rows do), its PoTrip and SU feed DI's padded canvas to the network
(the presets resize it back), and its CFM spends the first of its 300 iterations recording the clean features (299
steps). Its generation-based rows (TTP, M3D, AIM) attack ten fixed target classes instead; its rows of methods
tfattack does not have keep preset None. A targeted transfer table is compared with it by ordering only: the
settings differ (surrogate, victims, defenses, images, targets).

TransferAttackEval (Zhao et al., "Revisiting transferable adversarial images", 2023) publishes no table to rank
against; its claim that under one fair setting "DI outperforms all the follow-up methods" is checked on the
compute-matched budget: where DI-MI-FGSM ranks, and what ranks above it.
"""

from __future__ import annotations

import html
import json
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

DATA = os.path.join(os.path.dirname(__file__), "data", "transferattack_untargeted.json")
TARGETED_DATA = os.path.join(os.path.dirname(__file__), "data", "transferattack_targeted.json")
README_URL = "https://raw.githubusercontent.com/Trustworthy-AI-Group/TransferAttack/{commit}/README.md"
SURROGATES = {"single": ("ResNet-50",), "ensemble": ("ResNet-50", "VGG-16", "Mobilenet_v2", "Inception_v3")}

# TransferAttack's file (under transferattack/) -> the tfattack preset that is the same method at its paper's
# settings. Left out: TransferAttack's SIM (scale copies on MI, where `si_ni_fgsm` is on NI) and the methods
# tfattack does not have.
PRESETS = {
    "gradient/fgsm": "fgsm", "gradient/ifgsm": "i_fgsm", "gradient/mifgsm": "mi_fgsm", "gradient/nifgsm": "ni_fgsm",
    "gradient/vmifgsm": "vmi_fgsm", "gradient/vnifgsm": "vni_fgsm", "gradient/emifgsm": "emi", "gradient/rap": "rap",
    "gradient/gra": "gra", "gradient/mig": "mig", "gradient/pgn": "pgn", "gradient/mef": "mef",
    "gradient/gifgsm": "gimi", "input_transformation/dim": "di_mi_fgsm", "input_transformation/tim": "ti_mi_fgsm",
    "input_transformation/admix": "admix", "input_transformation/maskblock": "maskblock",
    "input_transformation/ssm": "ssa", "input_transformation/sia": "sia", "input_transformation/decowa": "decowa",
    "input_transformation/l2t": "l2t", "input_transformation/bsr": "bsr", "input_transformation/ops": "ops",
    "advanced_objective/ila": "ila", "advanced_objective/fia": "fia", "advanced_objective/naa": "naa",
    "advanced_objective/rpa": "rpa", "advanced_objective/ilpd": "ilpd", "advanced_objective/bfa": "bfa",
    "model_related/sgm": "sgm", "model_related/linbp": "linbp", "model_related/bpa": "bpa",
    "model_related/ghost": "ghost", "ensemble/svre": "svre", "ensemble/adaea": "adaea", "ensemble/cwa": "cwa",
    "ensemble/smer": "smer"}
ENSEMBLE_FILES = ("ensemble/",)
# The targeted table's row name -> tfattack's preset. By name, not file: the README links its RFCoA row to
# ensemble/sasd_ws.py, SASD_WS's file.
TARGETED_PRESETS = {"PoTrip": "po_trip_ti_di_mi_fgsm", "Logit": "logit_ti_di_mi_fgsm", "Logit-Margin": "logit_margin",
                    "SU": "su", "CFM": "cfm"}
# Of the targeted table's "Ensemble-based" rows only RFCoA attacks several classifiers; SASD_WS attacks one
# self-distilled ResNet-50.
TARGETED_ENSEMBLES = ("RFCoA",)
DI_METHOD = "di_mi_fgsm"


class PublishedTableError(ValueError):
    """A README whose untargeted or targeted table cannot be read (one line saying what is missing)."""


def _html_table(text: str, heading: str, kind: str) -> Tuple[List[str], List[Tuple[str, str, List[float]]]]:
    """The victim columns and the (file, name, rates) method rows of the README's HTML table that follows the line
    `heading`; a row the README lists twice (same file and name) is kept once, the first. `kind` names the table in
    the errors."""
    start = text.find(heading + "\n")
    if start < 0:
        raise PublishedTableError(f"no {heading!r} heading in the README")
    end = text.find("</table>", start)
    table = text[start:end if end >= 0 else len(text)]
    if "<thead>" not in table:
        raise PublishedTableError(f"no table under the {heading!r} heading")
    if end < 0 or "</thead>" not in table:
        raise PublishedTableError(f"the {kind} table is cut short (no {'</table>' if end < 0 else '</thead>'})")
    head = table[table.index("<thead>"):table.index("</thead>")]
    columns = [html.unescape(c).strip() for c in re.findall(r"<th>\s*([^<]+?)\s*</th>", head)]
    if not columns:
        raise PublishedTableError(f"the {kind} table's header names no victim columns")
    rows: List[Tuple[str, str, List[float]]] = []
    pattern = r'<td><a href="\./transferattack/([^"]+)\.py"[^>]*>([^<]+)</a></td>((?:\s*<td[^>]*>[^<]*</td>)+)'
    for file, name, cells in re.findall(pattern, table):
        name = html.unescape(name).strip()
        values = re.findall(r"<td[^>]*>\s*([^<]*?)\s*</td>", cells)[:len(columns)]
        if len(values) < len(columns):
            raise PublishedTableError(f"row {name!r} has {len(values)} rates for {len(columns)} columns")
        try:
            rates = [float(v) for v in values]
        except ValueError:
            raise PublishedTableError(f"row {name!r} has a rate that is not a number: {values}") from None
        if not any(row[:2] == (file, name) for row in rows):
            rows.append((file, name, rates))
    if not rows:
        raise PublishedTableError(f"the {kind} table has no method rows")
    return columns, rows


def parse_transferattack_readme(text: str) -> Dict:
    """{"columns": victim names, "rows": [{"file", "name", "preset", "setting", "rates"}]} from the README's
    untargeted table (the first table after its "### Untargeted Attack" heading)."""
    columns, rows = _html_table(text, "### Untargeted Attack", "untargeted")
    return {"columns": columns, "rows": [
        {"file": file, "name": name, "preset": PRESETS.get(file),
         "setting": "ensemble" if file.startswith(ENSEMBLE_FILES) else "single", "rates": rates}
        for file, name, rates in rows]}


def parse_transferattack_targeted(text: str) -> Dict:
    """The same for the README's targeted table (the first table after its "### Targeted Attack" heading), its rows'
    presets by name (TARGETED_PRESETS)."""
    columns, rows = _html_table(text, "### Targeted Attack", "targeted")
    return {"columns": columns, "rows": [
        {"file": file, "name": name, "preset": TARGETED_PRESETS.get(name),
         "setting": "ensemble" if name in TARGETED_ENSEMBLES else "single", "rates": rates}
        for file, name, rates in rows]}


def load(path: str = DATA) -> Dict:
    with open(path) as handle:
        return json.load(handle)


def published_means(reference: Mapping, setting: str) -> Dict[str, float]:
    """{preset: mean rate over the columns that are not the setting's surrogates} for the rows of `setting`
    (single / ensemble) that have a tfattack preset."""
    columns = reference["columns"]
    keep = [i for i, c in enumerate(columns) if c not in SURROGATES[setting]]
    return {r["preset"]: float(np.mean([r["rates"][i] for i in keep])) for r in reference["rows"]
            if r["preset"] and r["setting"] == setting}


def agreement(ours: Mapping[str, float], published: Mapping[str, float], worst: int = 5) -> Optional[Dict]:
    """How our mean success rates order the methods both have, against the published ones: Spearman's rho (ties at
    their mean rank) and Kendall's tau-b (scipy), and the `worst` method pairs the two order most differently (by
    the product of the two rate differences). None below 3 common methods."""
    from scipy import stats

    common = sorted(set(ours) & set(published))
    if len(common) < 3:
        return None
    mine = np.array([ours[m] for m in common])
    theirs = np.array([published[m] for m in common])
    rho = float(stats.spearmanr(mine, theirs).statistic)
    tau = stats.kendalltau(mine, theirs)
    pairs = []
    for i in range(len(common)):
        for j in range(i + 1, len(common)):
            clash = (mine[i] - mine[j]) * (theirs[i] - theirs[j])
            if clash < 0:
                high, low = (i, j) if mine[i] > mine[j] else (j, i)
                pairs.append((clash, {"ours_higher": common[high], "published_higher": common[low],
                                      "ours": [round(float(mine[high]), 1), round(float(mine[low]), 1)],
                                      "published": [round(float(theirs[high]), 1), round(float(theirs[low]), 1)]}))
    pairs.sort(key=lambda item: item[0])
    return {"methods": common, "n": len(common), "spearman_rho": round(rho, 3),
            "kendall_tau": round(float(tau.statistic), 3), "kendall_p": float(tau.pvalue),
            "discordant_pairs": sum(1 for _ in pairs), "most_discordant": [p for _, p in pairs[:worst]]}


def di_standing(means: Mapping[str, float]) -> Optional[Dict]:
    """Where DI-MI-FGSM ranks among `means` ({method: mean success}), and the methods above it."""
    if DI_METHOD not in means:
        return None
    ranked = sorted(means, key=lambda m: -means[m])
    rank = ranked.index(DI_METHOD) + 1
    return {"rank": rank, "of": len(ranked), "mean": round(float(means[DI_METHOD]), 1),
            "above": [{"method": m, "mean": round(float(means[m]), 1)} for m in ranked[:rank - 1]]}


def analysis(means: Mapping[tuple, float], fronts: Mapping[str, List[str]], reference: Mapping) -> List[Dict]:
    """Per (source, eps, budget) of `means` ({(method, source, eps, budget): mean success}): the agreement with
    TransferAttack's ordering of the same setting (single / ensemble), DI-MI-FGSM's standing, and the Pareto front
    of the (source, eps) panel (`fronts`: panel title -> labels on the front)."""
    out = []
    for source, eps, budget in dict.fromkeys(key[1:] for key in means):
        ours = {key[0]: value for key, value in means.items() if key[1:] == (source, eps, budget)}
        setting = "ensemble" if source == "ensemble" else "single"
        out.append({"source": source, "eps_pixels": eps, "budget": budget,
                    "transferattack": agreement(ours, published_means(reference, setting)),
                    "di_mi_fgsm": di_standing(ours),
                    "pareto_front": fronts.get(f"{source}, eps {eps:g}/255", [])})
    return out


def markdown(results: Sequence[Mapping], reference: Mapping) -> str:
    lines = ["### Orderings against the published ones", "",
             f"TransferAttack: the untargeted table of its README at commit {reference['commit'][:10]} (eps 16/255, "
             "ResNet-50 surrogate; the ensemble strategies on four CNNs), mean over the columns that are not "
             "surrogates; rho = Spearman, tau = Kendall tau-b over the methods both have. DI-MI: TransferAttackEval's "
             "claim that under fair settings DI beats its follow-ups, read off the matched budget.", "",
             "| setting | methods | rho | tau (p) | most discordant (ours higher vs published higher) | DI-MI rank "
             "| Pareto front |", "|---|---|---|---|---|---|---|"]
    for r in results:
        di = r["di_mi_fgsm"]
        standing = f"{di['rank']} of {di['of']}" if di else ""
        lines.append(f"| {r['source']}, eps {r['eps_pixels']:g}, {r['budget']} | " +
                     " | ".join(_agreement_cells(r["transferattack"])) + f" | {standing} | "
                     f"{', '.join(r['pareto_front'])} |")
    return "\n".join(lines)


def _agreement_cells(ta: Optional[Mapping], label: Optional[Mapping[str, str]] = None) -> List[str]:
    """An `agreement`'s table cells: methods, rho, tau (p), the three most discordant pairs (methods named by
    `label`, else by preset)."""
    label = label or {}
    if not ta:
        return ["< 3", "", "", ""]
    clashes = "; ".join(f"{label.get(p['ours_higher'], p['ours_higher'])} > "
                        f"{label.get(p['published_higher'], p['published_higher'])} ({p['ours'][0]:.1f} vs "
                        f"{p['ours'][1]:.1f}; published {p['published'][0]:.1f} vs {p['published'][1]:.1f})"
                        for p in ta["most_discordant"][:3])
    return [str(ta["n"]), f"{ta['spearman_rho']:.2f}", f"{ta['kendall_tau']:.2f} ({ta['kendall_p']:.2g})",
            clashes or "none"]


def targeted_means(payload: Mapping) -> Dict[str, Dict[str, float]]:
    """{source: {preset: mean target hit rate (%)}} of a targeted transfer table (`transfer.run(...,
    targeted=True)`): each row's success_rate averaged over the table's victims and defenses, the row named by the
    preset its attack is (the payload's "attacks")."""
    presets = {name: config[0] for name, config in payload["attacks"].items()}
    rates: Dict[str, Dict[str, List[float]]] = {}
    for r in payload["rows"]:
        rates.setdefault(r["source"], {}).setdefault(presets[r["attack"]], []).append(100 * r["success_rate"])
    return {source: {preset: float(np.mean(values)) for preset, values in by_preset.items()}
            for source, by_preset in rates.items()}


def targeted_comparison(payload: Mapping, reference: Mapping) -> List[Dict]:
    """Per source of a targeted transfer table: our mean target hit rates (`targeted_means`), TransferAttack's
    published means of the same presets (its single-surrogate rows, over the columns that are not ResNet-50), and
    the agreement of the two orderings. Both sources are set against the single-surrogate ordering: the published
    table has none of the presets on an ensemble."""
    published = published_means(reference, "single")
    return [{"source": source, "ours": ours, "published": {p: published[p] for p in ours if p in published},
             "transferattack": agreement(ours, published)} for source, ours in targeted_means(payload).items()]


def targeted_markdown(payload: Mapping, reference: Optional[Mapping] = None) -> str:
    """`targeted_comparison` as a section under the targeted table: the means per method, then the orderings'
    agreement per source. `reference`: default the committed targeted table (TARGETED_DATA)."""
    reference = reference if reference is not None else load(TARGETED_DATA)
    results = targeted_comparison(payload, reference)
    label = {config[0]: name for name, config in payload["attacks"].items()}
    readme = {r["preset"]: r["name"] for r in reference["rows"] if r["preset"] and r["setting"] == "single"}
    published = published_means(reference, "single")
    surrogate = SURROGATES["single"]
    kept = [c for c in reference["columns"] if c not in surrogate]
    columns = {(r["victim"], r["defense"]) for r in payload["rows"]}
    eps = payload["protocol"]["eps"]
    differ = "surrogates, victims, defenses, images, targets" + ("" if eps == "16/255" else ", eps")
    lines = ["### Ordering against the published one", "",
             f"TransferAttack: the targeted table of its README at commit {reference['commit'][:10]} (eps 16/255, 300 "
             f"iterations of 2/255, a {', '.join(surrogate)} surrogate, a random target per image; these methods on "
             f"TI-DI-MI as here), mean over its {len(kept)} columns that are not the surrogate ({', '.join(kept)}); "
             f"ours: each row's mean over the {len(columns)} victims and defenses above (eps {eps}, the sources "
             f"above). The settings differ ({differ}), so only the orderings are compared: rho = Spearman, tau = "
             "Kendall tau-b over the methods both have.", "",
             "| attack | TransferAttack's row | published | " + " | ".join(f"ours, {r['source']}" for r in results)
             + " |",
             "|---|---|---|" + "---|" * len(results)]
    for preset, name in label.items():
        ours = [f"{r['ours'][preset]:.1f}" if preset in r["ours"] else "" for r in results]
        theirs = f"{published[preset]:.1f}" if preset in published else ""
        lines.append(f"| {name} | {readme.get(preset, 'none')} | {theirs} | " + " | ".join(ours) + " |")
    lines += ["", "| source | methods | rho | tau (p) | most discordant (ours higher vs published higher) |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['source']} | " + " | ".join(_agreement_cells(r["transferattack"], label)) + " |"
              for r in results]
    return "\n".join(lines)
