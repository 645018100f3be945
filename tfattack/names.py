"""Names in one-line messages: suggestions for mistyped ones (models, attacks, components) and short lists."""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence


def first_few(items: Sequence[str], limit: int = 3) -> str:
    """The first `limit` of `items`, comma-separated, and how many there are in all when there are more."""
    items = [str(item) for item in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known name (case-insensitive), or '' when none is close."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered and lowered[name.lower()] != name:
        return f"; did you mean {lowered[name.lower()]!r}?"
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[close[0]]!r}?" if close else ""
