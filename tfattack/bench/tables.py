"""Markdown tables from the benchmarks' JSON files: the benchmark script writes each table next to its JSON with
these functions, and docs/benchmarks.md and the README embed them from the JSON (scripts/make_docs.py), so a table
in the docs is always what its JSON says.

A table is named by its JSON file and, for the multi-part `--what=speed` payload, a part; a leaderboard's short form
(the README's) is its `summary` part:
    render(Path("benchmarks/transfer_eps4/transfer.json"))
    render(Path("benchmarks/speed.json"), "peer")
    render(Path("benchmarks/leaderboard_pilot/leaderboard.json"), "summary")
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Callable, Dict, Optional


def _models(payload: Dict) -> str:
    from tfattack.bench import model_speed
    return model_speed.markdown_table(payload["rows"], payload["matmul_flops_per_second"])


def _accuracy(payload: Dict) -> str:
    from tfattack.bench import accuracy
    return accuracy.markdown(payload)


def _attacks(payload: Dict) -> str:
    from tfattack.bench import attack_speed
    text = attack_speed.markdown_table(payload["rows"])
    if any(row.get("ops") for row in payload["rows"]):
        text += "\n\nTime by op type (one profiled call):\n\n" + attack_speed.ops_table(payload["rows"])
    return text


def _memory(payload: Dict) -> str:
    from tfattack.bench import speed
    return speed.memory_table(payload["rows"])


def _transfer(payload: Dict) -> str:
    from tfattack.bench import transfer
    return transfer.markdown(payload)


def _leaderboard(payload: Dict) -> str:
    from tfattack.bench import leaderboard_run
    return leaderboard_run.markdown(payload)


def _leaderboard_summary(payload: Dict) -> str:
    from tfattack.bench import leaderboard_run
    return leaderboard_run.summary(payload)


def _ray_speed(payload: Dict) -> str:
    from tfattack.bench import ray_speed
    return ray_speed.markdown(payload)


def _speed_part(part: str) -> Callable[[Dict], str]:
    def render_part(payload: Dict) -> str:
        from tfattack.bench import attack_speed, speed
        renderers = {"models": speed.models_table, "attacks": attack_speed.markdown_table, "peer": speed.peer_table,
                     "options": speed.options_table, "memory": speed.memory_table}
        return renderers[part](payload[part])
    return render_part


# JSON file stem -> renderer; `--what=attacks` runs are often kept under other stems (attacks_xla_rest, profile).
BY_STEM: Dict[str, Callable[[Dict], str]] = {
    "models": _models, "accuracy": _accuracy, "attacks": _attacks, "profile": _attacks, "memory": _memory,
    "transfer": _transfer, "transfer_targeted": _transfer, "leaderboard": _leaderboard,
    "ray_speed": _ray_speed}
SPEED_PARTS = ("models", "attacks", "peer", "options", "memory")


def renderer(path: Path, part: Optional[str] = None) -> Callable[[Dict], str]:
    stem = path.stem
    if stem == "speed":
        if part not in SPEED_PARTS:
            raise ValueError(f"{path}: name a part of the speed payload, one of {', '.join(SPEED_PARTS)}")
        return _speed_part(part)
    if stem == "leaderboard" and part == "summary":
        return _leaderboard_summary
    if part is not None:
        raise ValueError(f"{path}: only speed.json and leaderboard.json (#summary) have parts, not {part!r}")
    if stem.startswith("attacks_"):
        return _attacks
    if stem not in BY_STEM:
        raise ValueError(f"{path}: no table for benchmark files named {stem}.json")
    return BY_STEM[stem]


def render(path: Path, part: Optional[str] = None) -> str:
    """The markdown table of the benchmark JSON at `path` (and `part`, for speed.json), and under it the run that
    wrote the JSON, where the JSON records it."""
    draw = renderer(path, part)
    with open(path) as handle:
        payload = json.load(handle)
    return f"{draw(payload)}\n\n{written_by(payload)}" if "run" in payload else draw(payload)


def command_line(argv) -> str:
    """The command as typed, for the record: the tool's file name (`benchmark.py` or `tfattack-benchmark`) and its
    arguments, quoted for a shell."""
    return shlex.join([os.path.basename(argv[0])] + list(argv[1:]))


def written_by(payload: Dict) -> str:
    """One sentence under a table: the command, kernels and sources of the run that wrote its JSON."""
    run = payload["run"]
    return (f"Written by `{run['command']}` with TensorFlow {run['tensorflow']} on {run['kernels']}, tfattack "
            f"{run['tfattack']} (sources {run['tfattack_sources']}).")


# In a markdown document: the table of benchmarks/X.json (or X.json#part) sits between these two lines.
BLOCK = re.compile(r"(<!-- table: (?P<file>[^ #]+)(?:#(?P<part>\w+))? -->\n)(?P<table>.*?)(<!-- end of table -->)", re.S)


def fill_document(text: str, root: Path) -> str:
    """`text` with every table block rewritten from its JSON file (a path relative to `root`)."""
    def table(match) -> str:
        path = root / match["file"]
        if not path.is_file():
            raise ValueError(f"a table block names {match['file']}, which does not exist under {root}")
        return f"{match.group(1)}{render(path, match['part'])}\n{match.group(5)}"
    return BLOCK.sub(table, text)
