"""docs/cli.md is generated from the tools' flags and up to date; the console commands pyproject.toml installs are
exactly the documented tools; docs/benchmarks.md's table blocks render from their JSON."""

import json
import sys
from pathlib import Path

import pytest

from tfattack.bench import tables
from tfattack.cli import docs

ROOT = Path(__file__).parents[1]


def test_cli_doc_is_up_to_date():
    assert (ROOT / "docs" / "cli.md").read_text() == docs.render(), "docs/cli.md is stale: run python scripts/make_docs.py"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_every_documented_tool_is_an_installed_command_and_back():
    import tomllib
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {command: f"tfattack.cli.{module}:main" for command, module in docs.TOOLS}


def test_a_tool_section_lists_its_flags_with_defaults():
    section = docs._section_in_child(("tfattack-merge-runs", "merge_runs"))
    assert section.splitlines()[0] == "## `tfattack-merge-runs`"
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    assert rows == ["| `--output_dir` |  | The folder the shards wrote to. |",
                    "| `--verbose` | false | Show TensorFlow's start-up and INFO log lines (hidden by default). |"]


def _memory_payload():
    return {"rows": [{"preset": "admix_ti_dim", "copies_per_pass": 0, "batch": 12, "copies": 15, "images_per_pass": 180,
                      "s_per_image_iteration": 2.5, "peak_rss_mib": 9000}], "time": 0}


def test_a_table_block_is_rewritten_from_its_json(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "memory.json").write_text(json.dumps(_memory_payload()))
    text = "Before.\n<!-- table: benchmarks/memory.json -->\nold numbers\n<!-- end of table -->\nAfter.\n"
    filled = tables.fill_document(text, tmp_path)
    table = tables.render(tmp_path / "benchmarks" / "memory.json")
    assert filled == f"Before.\n<!-- table: benchmarks/memory.json -->\n{table}\n<!-- end of table -->\nAfter.\n"
    assert "| admix_ti_dim |" in table and "old numbers" not in filled
    assert tables.fill_document(filled, tmp_path) == filled


def test_a_block_naming_a_missing_json_or_an_unknown_kind_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="benchmarks/absent.json, which does not exist"):
        tables.fill_document("<!-- table: benchmarks/absent.json -->\n<!-- end of table -->\n", tmp_path)
    (tmp_path / "weird.json").write_text("{}")
    with pytest.raises(ValueError, match="no table for benchmark files named weird.json"):
        tables.render(tmp_path / "weird.json")
    with pytest.raises(ValueError, match="name a part of the speed payload"):
        tables.renderer(tmp_path / "speed.json")
    with pytest.raises(ValueError, match=r"only speed.json and leaderboard.json \(#summary\) have parts, not 'short'"):
        tables.renderer(tmp_path / "leaderboard.json", "short")


def test_a_leaderboard_block_may_ask_for_its_summary():
    from tfattack.bench import leaderboard_run

    assert tables.renderer(Path("x/leaderboard.json"), "summary") is not tables.renderer(Path("x/leaderboard.json"))
    pilot = ROOT / "benchmarks" / "leaderboard_pilot" / "leaderboard.json"
    assert tables.render(pilot, "summary") == leaderboard_run.summary(json.loads(pilot.read_text()))
