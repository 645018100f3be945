"""The published rates the leaderboard is compared with: reading TransferAttack's README table (from a README this
test writes in its format), the committed data file, the rank agreement against NumPy/scipy, DI-MI's standing, and
the script's output and one-line errors."""

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


def write_readme(path, rows, heading="### Untargeted Attack"):
    head = "\n".join(f"<th> {c} </th>" for c in COLUMNS)
    body = "".join(readme_row(*row) for row in rows)
    path.write_text(f"# TransferAttack\n\n### Untargeted Attacks\n<table>\n<tr><td>a list, not the results</td></tr>"
                    f"\n</table>\n\n{heading}\n**Note**: eps 16/255.\n\n<table  style=\"width:100%\" border=\"1\">\n"
                    f"<thead>\n<tr class=\"header\">\n<th rowspan=\"2\"><strong>Category</strong></th>\n</tr>\n{head}\n"
                    f"</thead>\n\n<tr>\n<th rowspan=\"2\"><sub><strong>Gradient-based</strong></sub></th>\n{body}"
                    f"</table>\n\n### Targeted Attack\n<table>\n<thead><th> X </th></thead>\n"
                    + readme_row("gradient/mifgsm", "MI-FGSM", [1.0]) + "</table>\n")
    return path


RATES = {"mi": [99.9, 57.9, 53.4, 37.4, 14.5, 22.5, 26.2, 28.1, 40.6, 17.9, 27.4, 58.5, 13.3],
         "bsr": [99.0] + [90.0] * 12, "svre": [98.8, 99.9, 99.9, 99.9] + [40.0] * 9,
         "tap": [99.9] + [50.0] * 12}
ROWS = [("gradient/mifgsm", "MI-FGSM", RATES["mi"]), ("input_transformation/bsr", "BSR", RATES["bsr"]),
        ("input_transformation/bsr", "BSR", RATES["bsr"]), ("advanced_objective/tap", "TAP", RATES["tap"]),
        ("ensemble/svre", "SVRE", RATES["svre"])]


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
    output = tmp_path / "rates.json"
    commit = "0123456789abcdef0123456789abcdef01234567"

    def script(*args):
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "published_rates.py"), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)

    done = script(f"--commit={commit}", f"--readme={readme}", f"--output={output}")
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads(output.read_text())
    assert written["commit"] == commit and commit in written["url"]
    assert written["rows"] == published.parse_transferattack_readme(readme.read_text())["rows"]
    bad = script("--commit=abc", f"--readme={readme}", f"--output={output}")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == (
        "published_rates.py: --commit must be 40 lowercase hex digits, got 'abc'")
    empty = tmp_path / "EMPTY.md"
    empty.write_text("# nothing\n")
    bad = script(f"--commit={commit}", f"--readme={empty}", f"--output={output}")
    assert bad.stderr.strip().splitlines()[-1] == (
        f"published_rates.py: {empty}: no '### Untargeted Attack' heading in the README")
