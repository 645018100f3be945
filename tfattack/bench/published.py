"""Published transfer rates the leaderboard's orderings are compared with, and the comparison.

TransferAttack (Trustworthy-AI-Group), the untargeted table of its README: eps 16/255, 10 iterations, MI-FGSM as
the base of the other methods; a ResNet-50 surrogate, except the ensemble strategies (ResNet-50 + VGG-16 +
MobileNet-v2 + Inception-v3); success rate (%) on 4 CNNs, 4 ViTs and 5 defenses. `data/transferattack_untargeted.json`
keeps its rows with the README's commit, written by `scripts/published_rates.py` from the README itself; a method's
published mean is over the columns that are not its surrogates (12, or 9 for the ensemble strategies).

TransferAttackEval (Zhao et al., "Revisiting transferable adversarial images", 2023) publishes no table to rank
against; its claim that under one fair setting "DI outperforms all the follow-up methods" is checked on the
compute-matched budget: where DI-MI-FGSM ranks, and what ranks above it.
"""

from __future__ import annotations

import html
import json
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

DATA = os.path.join(os.path.dirname(__file__), "data", "transferattack_untargeted.json")
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
DI_METHOD = "di_mi_fgsm"


class PublishedTableError(ValueError):
    """A README whose untargeted table cannot be read (one line saying what is missing)."""


def parse_transferattack_readme(text: str) -> Dict:
    """{"columns": victim names, "rows": [{"file", "name", "preset", "setting", "rates"}]} from the README's
    untargeted table (the first table after its "### Untargeted Attack" heading)."""
    start = text.find("### Untargeted Attack\n")
    if start < 0:
        raise PublishedTableError("no '### Untargeted Attack' heading in the README")
    table = text[start:text.find("</table>", start)]
    if "<thead>" not in table:
        raise PublishedTableError("no table under the '### Untargeted Attack' heading")
    head = table[table.index("<thead>"):table.index("</thead>")]
    columns = [html.unescape(c).strip() for c in re.findall(r"<th>\s*([^<]+?)\s*</th>", head)]
    rows = []
    pattern = r'<td><a href="\./transferattack/([^"]+)\.py"[^>]*>([^<]+)</a></td>((?:\s*<td[^>]*>[^<]*</td>)+)'
    for file, name, cells in re.findall(pattern, table):
        values = re.findall(r"<td[^>]*>\s*([^<]*?)\s*</td>", cells)[:len(columns)]
        if len(values) < len(columns):
            raise PublishedTableError(f"row {name!r} has {len(values)} rates for {len(columns)} columns")
        try:
            rates = [float(v) for v in values]
        except ValueError:
            raise PublishedTableError(f"row {name!r} has a rate that is not a number: {values}") from None
        if any(r["file"] == file for r in rows):  # the README lists one method twice (same numbers)
            continue
        rows.append({"file": file, "name": html.unescape(name).strip(), "preset": PRESETS.get(file),
                     "setting": "ensemble" if file.startswith(ENSEMBLE_FILES) else "single", "rates": rates})
    if not rows:
        raise PublishedTableError("the untargeted table has no method rows")
    return {"columns": columns, "rows": rows}


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
        ta, di = r["transferattack"], r["di_mi_fgsm"]
        if ta:
            clashes = "; ".join(f"{p['ours_higher']} > {p['published_higher']} ({p['ours'][0]:.1f} vs "
                                f"{p['ours'][1]:.1f}; published {p['published'][0]:.1f} vs {p['published'][1]:.1f})"
                                for p in ta["most_discordant"][:3])
            cells = [str(ta["n"]), f"{ta['spearman_rho']:.2f}", f"{ta['kendall_tau']:.2f} ({ta['kendall_p']:.2g})",
                     clashes or "none"]
        else:
            cells = ["< 3", "", "", ""]
        standing = f"{di['rank']} of {di['of']}" if di else ""
        lines.append(f"| {r['source']}, eps {r['eps_pixels']:g}, {r['budget']} | " + " | ".join(cells) +
                     f" | {standing} | {', '.join(r['pareto_front'])} |")
    return "\n".join(lines)
