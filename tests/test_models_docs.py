"""docs/models.md and the README's model-family table are generated from the registry, and docs/benchmarks.md's
tables from benchmarks/*.json, and are up to date; every record is listed, under the family module that registers
it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import tfattack.models as models
from tfattack.models import docs

ROOT = Path(__file__).parents[1]


def _make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_model_and_benchmark_docs_are_up_to_date():
    stale = [path for path, text in _make_docs().generated(cli=False).items()
             if Path(path).name != "attacks.md" and Path(path).read_text() != text]
    assert not stale, f"{', '.join(stale)} stale: run python scripts/make_docs.py"


def test_every_record_is_in_one_family_and_in_the_full_table():
    listed = [spec.name for _, specs in docs.families() for spec in specs]
    # Each once, none left out (but the records other tests register for themselves, named test_*).
    assert sorted(listed) == sorted(spec.name for spec in models.specs() if not spec.name.startswith("test_"))
    text = docs.render_full({})
    assert all(f"| `{name}` |" in text for name in listed)


def test_measured_top1_comes_from_the_accuracy_benchmark_rows():
    payload = {"rows": [{"model": "tiny_darknet", "top1": 67.80000000000001}]}
    assert docs.measured_top1(payload) == {"tiny_darknet": 67.8}
    row = next(line for line in docs.render_full(docs.measured_top1(payload)).splitlines()
               if line.startswith("| `tiny_darknet` |"))
    assert "| 67.8 |" in row and "1000 (darknet order, permuted)" in row
