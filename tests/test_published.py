"""The published rates the leaderboard and the targeted table are compared with: reading TransferAttack's README tables
(from a README this test writes in its format), the committed data files, the rank agreement against NumPy/scipy,
DI-MI's standing, the targeted table's comparison, and the script's output and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import tfattack
from tfattack.bench import published

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["ResNet-50", "VGG-16", "Mobilenet_v2", "Inception_v3", "ViT", "PiT", "Visformer", "Swin", "AT", "HGD", "RS",
           "NRP", "DiffPure"]


def readme_row(file, name, rates):
    cells = "\n".join(f"<td >{r}</td>" for r in rates)
    return (f'<tr>\n<td><a href="./transferattack/{file}.py" target="_blank" rel="noopener noreferrer">{name}</a>'
            f"</td>\n{cells}\n</tr>\n")


def results_table(rows, tr=True):
    """A results table in the README's HTML; `tr=False` leaves out the rows' opening <tr>, as some of its targeted
    rows do."""
    head = "\n".join(f"<th> {c} </th>" for c in COLUMNS)
    body = "".join(readme_row(*row) if tr else readme_row(*row)[len("<tr>\n"):] for row in rows)
    return (f"<table  style=\"width:100%\" border=\"1\">\n<thead>\n<tr class=\"header\">\n<th rowspan=\"2\"><strong>"
            f"Category</strong></th>\n<th colspan=\"4\"><strong>CNNs</strong></th>\n</tr>\n{head}\n</thead>\n\n\n"
            f"<th rowspan=\"2\"><sub><strong>Gradient-based</strong></sub></th>\n{body}</table>\n")


def write_readme(path, rows, heading="### Untargeted Attack", targeted=None, targeted_heading="### Targeted Attack",
                 targeted_table=None):
    """A README with the method lists, then `rows` under `heading` and the targeted table (`targeted_table`, or
    `targeted` rows, by default TARGETED_ROWS) under `targeted_heading`, then the contributors' table."""
    lists = ("### Untargeted Attacks\n<table>\n<tr><td>a list, not the results</td></tr>\n</table>\n\n"
             "### Targeted Attacks\n<table  style=\"width:100%\" border=\"1\">\n<thead>\n<tr class=\"header\">\n"
             "<th><strong>Category</strong></th>\n<th><strong>Attack </strong></th>\n</tr>\n</thead>\n<tr>\n<td><a "
             "href=\"https://arxiv.org/abs/2012.11207\">Logit (Zhao et al., 2021)</a></td>\n<td ><sub>logit loss</sub>"
             "</td>\n</tr>\n</table>\n")
    if targeted_table is None:
        targeted_table = results_table(TARGETED_ROWS if targeted is None else targeted, tr=False)
    path.write_text(f"# TransferAttack\n\n{lists}\n{heading}\n**Note**: eps 16/255.\n\n{results_table(rows)}\n"
                    f"{targeted_heading}\n\n**Note**: T=300.\n\n```\nClass Number: Class Name\n24: Great Grey Owl\n```\n\n"
                    f"{targeted_table}\n## Contributing to TransferAttack\n\n### Main contributors\n\n<table>\n<tr>\n"
                    f"<td align=\"center\"><a href=https://github.com/xiaosen-wang>Xiaosen Wang</a></td>\n</tr>\n</table>\n")
    return path


RATES = {"mi": [99.9, 57.9, 53.4, 37.4, 14.5, 22.5, 26.2, 28.1, 40.6, 17.9, 27.4, 58.5, 13.3],
         "bsr": [99.0] + [90.0] * 12, "svre": [98.8, 99.9, 99.9, 99.9] + [40.0] * 9,
         "tap": [99.9] + [50.0] * 12}
ROWS = [("gradient/mifgsm", "MI-FGSM", RATES["mi"]), ("input_transformation/bsr", "BSR", RATES["bsr"]),
        ("input_transformation/bsr", "BSR", RATES["bsr"]), ("advanced_objective/tap", "TAP", RATES["tap"]),
        ("ensemble/svre", "SVRE", RATES["svre"])]
# The targeted table's rows as the README writes them: a name with a trailing space, whole numbers without ".0",
# RFCoA linked to SASD_WS's file, FTM without a tfattack preset.
TARGETED_RATES = {"su": [100.0, 6.0, 7.5, 2.5, 1.0, 2.0, 13.5, 4.0, 0.0, 3.5, 0.0, 0.0, 0.5],
                  "logit": [57.0, 23.0, 16.5, 19.5, 2.5, 5.5, 24.5, 10.5, 0.5, 32.5, 0.0, 0.0, 0.0],
                  "cfm": [99.0, 54.0, 63, 47.0, 21.5, 38.0, 63.5, 46.0, 0.5, 54.0, 0, 0.5, 1.0],
                  "ftm": [99.0] + [40.0] * 12, "sasd": [90.0] + [30.0] * 12, "rfcoa": [99.5, 98.5] + [5.0] * 11}
TARGETED_ROWS = [("input_transformation/su", "SU", TARGETED_RATES["su"]),
                 ("advanced_objective/logit", "Logit ", TARGETED_RATES["logit"]),
                 ("advanced_objective/cfm", "CFM", TARGETED_RATES["cfm"]),
                 ("advanced_objective/ftm", "FTM", TARGETED_RATES["ftm"]),
                 ("ensemble/sasd_ws", "SASD_WS", TARGETED_RATES["sasd"]),
                 ("ensemble/sasd_ws", "RFCoA", TARGETED_RATES["rfcoa"])]


def test_the_untargeted_table_is_read_with_its_presets_and_settings(tmp_path):
    table = published.parse_transferattack_readme(write_readme(tmp_path / "README.md", ROWS).read_text())
    assert table["columns"] == COLUMNS
    # The README's repeated row is kept once; TAP has no tfattack preset; SVRE is an ensemble strategy.
    assert [(r["name"], r["preset"], r["setting"]) for r in table["rows"]] == [
        ("MI-FGSM", "mi_fgsm", "single"), ("BSR", "bsr", "single"), ("TAP", None, "single"),
        ("SVRE", "svre", "ensemble")]
    assert table["rows"][0]["rates"] == RATES["mi"]
    means = published.published_means(table, "single")
    assert means == {"mi_fgsm": pytest.approx(np.mean(RATES["mi"][1:])), "bsr": pytest.approx(90.0)}
    # The ensemble strategies' surrogates are the four CNN columns: the mean is over the other nine.
    assert published.published_means(table, "ensemble") == {"svre": pytest.approx(40.0)}


@pytest.mark.parametrize("text, message", [
    ("# TransferAttack\n", "no '### Untargeted Attack' heading in the README"),
    ("### Untargeted Attack\nsoon\n</table>", "no table under the '### Untargeted Attack' heading"),
])
def test_a_readme_without_the_table_is_one_line(text, message):
    with pytest.raises(published.PublishedTableError, match=f"^{message}$"):
        published.parse_transferattack_readme(text)


def test_a_row_with_a_missing_or_non_numeric_rate_is_one_line(tmp_path):
    short = write_readme(tmp_path / "a.md", [("gradient/mifgsm", "MI-FGSM", RATES["mi"][:12])]).read_text()
    with pytest.raises(published.PublishedTableError, match="^row 'MI-FGSM' has 12 rates for 13 columns$"):
        published.parse_transferattack_readme(short)
    dash = write_readme(tmp_path / "b.md", [("gradient/mifgsm", "MI-FGSM", RATES["mi"][:12] + ["-"])]).read_text()
    with pytest.raises(published.PublishedTableError, match="^row 'MI-FGSM' has a rate that is not a number"):
        published.parse_transferattack_readme(dash)


def test_the_committed_rates_name_real_presets_once_and_their_commit():
    reference = published.load()
    assert len(reference["commit"]) == 40 and reference["commit"] in reference["url"]
    assert reference["columns"] == COLUMNS
    presets = [r["preset"] for r in reference["rows"] if r["preset"]]
    assert len(presets) == len(set(presets)) == len(published.PRESETS)
    assert set(presets) <= set(tfattack.attacks.presets())
    rows = {r["preset"]: r for r in reference["rows"] if r["preset"]}
    assert rows["mi_fgsm"]["rates"] == RATES["mi"]  # the README's MI-FGSM row at that commit
    assert {r["setting"] for r in rows.values() if r["preset"] in ("svre", "cwa", "adaea", "smer")} == {"ensemble"}


def test_the_targeted_table_is_read_with_its_presets_by_row_name(tmp_path):
    text = write_readme(tmp_path / "README.md", ROWS).read_text()
    table = published.parse_transferattack_targeted(text)
    assert table["columns"] == COLUMNS
    # By name: RFCoA's row links SASD_WS's file yet is a row of its own, on several classifiers; FTM has no preset.
    assert [(r["file"], r["name"], r["preset"], r["setting"]) for r in table["rows"]] == [
        ("input_transformation/su", "SU", "su", "single"),
        ("advanced_objective/logit", "Logit", "logit_ti_di_mi_fgsm", "single"),
        ("advanced_objective/cfm", "CFM", "cfm", "single"), ("advanced_objective/ftm", "FTM", None, "single"),
        ("ensemble/sasd_ws", "SASD_WS", None, "single"), ("ensemble/sasd_ws", "RFCoA", None, "ensemble")]
    assert [r["rates"] for r in table["rows"]] == [[float(v) for v in rates] for _, _, rates in TARGETED_ROWS]
    assert published.published_means(table, "single") == {
        preset: pytest.approx(np.mean(TARGETED_RATES[key][1:])) for preset, key in
        [("su", "su"), ("logit_ti_di_mi_fgsm", "logit"), ("cfm", "cfm")]}
    # The untargeted table of the same README is still read on its own.
    assert [r["name"] for r in published.parse_transferattack_readme(text)["rows"]] == ["MI-FGSM", "BSR", "TAP", "SVRE"]


def cut_after_the_targeted_table(text):
    """The README cut short inside its targeted table (before that table's </table>)."""
    return text[:text.rindex("</table>", 0, text.index("## Contributing"))]


@pytest.mark.parametrize("readme, message", [
    (dict(targeted=[("advanced_objective/cfm", "CFM", TARGETED_RATES["cfm"][:12])]),
     "row 'CFM' has 12 rates for 13 columns"),
    (dict(targeted=[("advanced_objective/cfm", "CFM", TARGETED_RATES["cfm"][:12] + ["n/a"])]),
     r"row 'CFM' has a rate that is not a number: \[.*'n/a'\]"),
    (dict(targeted=[]), "the targeted table has no method rows"),
    (dict(targeted_table=results_table(TARGETED_ROWS).replace("</thead>", "")),
     "the targeted table is cut short \\(no </thead>\\)"),
    (dict(targeted_table=results_table(TARGETED_ROWS).replace("<th> ", "<td> ").replace(" </th>", " </td>")),
     "the targeted table's header names no victim columns"),
    (dict(targeted_table="Coming soon.\n"), "no table under the '### Targeted Attack' heading"),
    (dict(targeted_heading="### Targeted Attacks, results"), "no '### Targeted Attack' heading in the README"),
    ("cut", "the targeted table is cut short \\(no </table>\\)"),
])
def test_a_malformed_targeted_table_is_one_line(tmp_path, readme, message):
    if readme == "cut":
        text = cut_after_the_targeted_table(write_readme(tmp_path / "README.md", ROWS).read_text())
    else:
        text = write_readme(tmp_path / "README.md", ROWS, **readme).read_text()
    with pytest.raises(published.PublishedTableError, match=f"^{message}$") as raised:
        published.parse_transferattack_targeted(text)
    assert "\n" not in str(raised.value)


CFM_README = [99.1, 54.2, 62.9, 46.9, 21.6, 38.1, 63.7, 46.0, 0.2, 54.2, 0.0, 0.5, 0.8]  # its CFM row at that commit


def test_the_committed_targeted_rates_map_the_targeted_tables_presets_at_the_untargeted_files_commit():
    from tfattack.bench import transfer

    reference, untargeted = published.load(published.TARGETED_DATA), published.load()
    assert (reference["commit"], reference["url"]) == (untargeted["commit"], untargeted["url"])
    assert reference["source"] == "Trustworthy-AI-Group/TransferAttack README.md, targeted table"
    assert reference["columns"] == COLUMNS and len(reference["columns"]) == 13
    assert all(len(r["rates"]) == 13 for r in reference["rows"])
    mapped = {r["name"]: r["preset"] for r in reference["rows"] if r["preset"]}
    assert mapped == {"PoTrip": "po_trip_ti_di_mi_fgsm", "Logit": "logit_ti_di_mi_fgsm",
                      "Logit-Margin": "logit_margin", "SU": "su", "CFM": "cfm"}
    assert set(mapped.values()) == set(transfer.TARGETED.values())
    assert {r["preset"]: r["rates"] for r in reference["rows"] if r["preset"]}["cfm"] == CFM_README
    names = [r["name"] for r in reference["rows"]]
    assert len(names) == len(set(names)) and {"SASD_WS", "RFCoA"} <= set(names)


PAYLOAD_VICTIMS, PAYLOAD_DEFENSES = ["efficientnet_lite2", "mobilenet_v2_quant_int8"], ["jpeg:75", "rp"]


def targeted_payload(rng, attacks, sources):
    """A targeted transfer table as `transfer.run(..., targeted=True)` returns it, its hit rates drawn from `rng`."""
    cells = [(v, "none") for v in PAYLOAD_VICTIMS] + [("efficientnet_lite2", d) for d in PAYLOAD_DEFENSES]
    rows = [{"source": source, "attack": name, "images": 10, "victim": victim, "defense": defense,
             "clean_accuracy": 0.9, "success_rate": float(rng.uniform()), "success_rate_all": 0.0, "linf_max": 16.0,
             "violations": 0} for source in sources for name in attacks for victim, defense in cells]
    return {"rows": rows, "targeted": True, "num_images": 10, "num_images_expensive": 10, "seed": 0,
            "protocol": {"eps": "16/255", "steps": 300, "step": "2/255"},
            "sources": {source: ["efficientnet_lite0"] for source in sources}, "victims": PAYLOAD_VICTIMS,
            "defenses": PAYLOAD_DEFENSES, "attacks": {name: [preset, {}] for name, preset in attacks.items()}}


def test_the_targeted_comparison_is_numpy_means_and_spearman_and_closes_the_targeted_table():
    from tfattack.bench import transfer

    rng = np.random.default_rng(11)
    attacks = {"Logit": "logit_ti_di_mi_fgsm", "Po+Trip": "po_trip_ti_di_mi_fgsm", "CFM": "cfm", "SU": "su",
               "MI": "mi_fgsm"}
    payload = targeted_payload(rng, attacks, ("single", "ensemble"))
    readme_names = {"logit_ti_di_mi_fgsm": "Logit", "po_trip_ti_di_mi_fgsm": "PoTrip", "cfm": "CFM", "su": "SU",
                    "logit_margin": "Logit-Margin"}
    rates = {preset: rng.uniform(0, 60, 13) for preset in readme_names}
    # MI-FGSM is published only on an ensemble here: no single-surrogate rate, so not compared.
    reference = {"commit": "f" * 40, "columns": COLUMNS, "rows": [
        {"file": f"x/{preset}", "name": name, "preset": preset, "setting": "single", "rates": list(rates[preset])}
        for preset, name in readme_names.items()] + [
        {"file": "ensemble/x", "name": "MI", "preset": "mi_fgsm", "setting": "ensemble", "rates": [50.0] * 13}]}
    theirs = {preset: np.mean(r[1:]) for preset, r in rates.items()}  # ResNet-50, the first column, left out
    common = ["cfm", "logit_ti_di_mi_fgsm", "po_trip_ti_di_mi_fgsm", "su"]
    results = published.targeted_comparison(payload, reference)
    assert [r["source"] for r in results] == ["single", "ensemble"]
    ours = {}
    for r in results:
        ours[r["source"]] = {preset: 100 * np.mean([row["success_rate"] for row in payload["rows"]
                                                    if (row["source"], row["attack"]) == (r["source"], name)])
                             for name, preset in attacks.items()}
        assert r["ours"] == pytest.approx(ours[r["source"]])
        assert r["published"] == pytest.approx({preset: theirs[preset] for preset in common})
        x = np.array([ours[r["source"]][m] for m in common])
        y = np.array([theirs[m] for m in common])
        d = np.argsort(np.argsort(x)) - np.argsort(np.argsort(y))  # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1))
        assert r["transferattack"]["methods"] == common
        assert r["transferattack"]["spearman_rho"] == pytest.approx(1 - 6 * np.sum(d ** 2) / (4 * 15), abs=5e-4)
    lines = published.targeted_markdown(payload, reference).splitlines()
    assert lines[0] == "### Ordering against the published one" and "commit ffffffffff " in lines[2]
    assert (f"| CFM | CFM | {theirs['cfm']:.1f} | {ours['single']['cfm']:.1f} | {ours['ensemble']['cfm']:.1f} |"
            in lines)
    assert f"| MI | none |  | {ours['single']['mi_fgsm']:.1f} | {ours['ensemble']['mi_fgsm']:.1f} |" in lines
    assert any(line.startswith(f"| ensemble | 4 | {results[1]['transferattack']['spearman_rho']:.2f} | ")
               for line in lines)
    # The targeted table's markdown ends with the comparison against the committed table; the untargeted one's not.
    table = transfer.markdown(payload)
    assert table.endswith("\n\n" + published.targeted_markdown(payload)) and table.count("### Ordering") == 1
    assert "### Ordering" not in transfer.markdown({**payload, "targeted": False})
    # Below three methods both have there is no ordering to compare.
    two = targeted_payload(rng, {"Logit": "logit_ti_di_mi_fgsm", "CFM": "cfm"}, ("single",))
    assert published.targeted_comparison(two, reference)[0]["transferattack"] is None
    assert "| single | < 3 |  |  |  |" in published.targeted_markdown(two, reference).splitlines()


def test_agreement_is_spearman_and_kendall_over_the_common_methods_with_the_discordant_pairs():
    rng = np.random.default_rng(4)
    names = [f"m{i}" for i in range(9)]
    ours = dict(zip(names, rng.uniform(0, 100, 9)))
    theirs = dict(zip(names[2:] + ["only_published"], rng.uniform(0, 100, 8)))
    result = published.agreement({**ours, "only_ours": 50.0}, theirs)
    common = names[2:]
    assert result["methods"] == sorted(common) and result["n"] == 7
    x, y = np.array([ours[m] for m in sorted(common)]), np.array([theirs[m] for m in sorted(common)])
    d = np.argsort(np.argsort(x)) - np.argsort(np.argsort(y))   # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1))
    assert result["spearman_rho"] == pytest.approx(1 - 6 * np.sum(d ** 2) / (7 * 48), abs=5e-4)
    assert result["kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=5e-4)
    opposite = sum((x[i] - x[j]) * (y[i] - y[j]) < 0 for i in range(7) for j in range(i + 1, 7))
    assert result["discordant_pairs"] == opposite
    worst = result["most_discordant"][0]
    products = [(ours[a] - ours[b]) * (theirs[a] - theirs[b]) for p in result["most_discordant"]
                for a, b in [(p["ours_higher"], p["published_higher"])]]
    assert products == sorted(products) and ours[worst["ours_higher"]] > ours[worst["published_higher"]]
    assert theirs[worst["ours_higher"]] < theirs[worst["published_higher"]]


def test_agreement_with_ties_is_spearman_of_mean_ranks_and_same_orders_agree_fully():
    ours = {"a": 10.0, "b": 20.0, "c": 20.0, "d": 5.0}
    theirs = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 2.0}
    result = published.agreement(ours, theirs)
    expected = stats.spearmanr([ours[m] for m in "abcd"], [theirs[m] for m in "abcd"]).statistic
    assert result["spearman_rho"] == pytest.approx(expected, abs=5e-4)
    same = published.agreement({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 10.0, "b": 20.0, "c": 30.0})
    assert (same["spearman_rho"], same["kendall_tau"], same["discordant_pairs"]) == (1.0, 1.0, 0)
    assert published.agreement({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}) is None


def test_di_mi_standing_lists_what_ranks_above_it():
    standing = published.di_standing({"bsr": 60.0, "di_mi_fgsm": 50.0, "mi_fgsm": 30.0, "sia": 55.0})
    assert standing == {"rank": 3, "of": 4, "mean": 50.0,
                        "above": [{"method": "bsr", "mean": 60.0}, {"method": "sia", "mean": 55.0}]}
    assert published.di_standing({"bsr": 60.0}) is None


def test_the_script_writes_the_rates_and_refuses_bad_input_in_one_line(tmp_path):
    readme = write_readme(tmp_path / "README.md", ROWS)
    output = tmp_path / "data"
    commit = "0123456789abcdef0123456789abcdef01234567"

    def script(*args):
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "published_rates.py"), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)

    done = script(f"--commit={commit}", f"--readme={readme}", f"--output_dir={output}")
    assert done.returncode == 0, done.stderr[-2000:]
    for name, parse in [("transferattack_untargeted.json", published.parse_transferattack_readme),
                        ("transferattack_targeted.json", published.parse_transferattack_targeted)]:
        written = json.loads((output / name).read_text())
        assert written["commit"] == commit and commit in written["url"]
        assert written["rows"] == parse(readme.read_text())["rows"]
    bad = script("--commit=abc", f"--readme={readme}", f"--output_dir={output}")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == (
        "published_rates.py: --commit must be 40 lowercase hex digits, got 'abc'")
    empty = tmp_path / "EMPTY.md"
    empty.write_text("# nothing\n")
    bad = script(f"--commit={commit}", f"--readme={empty}", f"--output_dir={output}")
    assert bad.stderr.strip().splitlines()[-1] == (
        f"published_rates.py: {empty}: no '### Untargeted Attack' heading in the README")
    # A README cut inside its targeted table writes neither file.
    cut = tmp_path / "CUT.md"
    cut.write_text(cut_after_the_targeted_table(readme.read_text()))
    fresh = tmp_path / "fresh"
    bad = script(f"--commit={commit}", f"--readme={cut}", f"--output_dir={fresh}")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == (
        f"published_rates.py: {cut}: the targeted table is cut short (no </table>)")
    assert not fresh.exists()
