"""Regenerates the generated documentation: docs/attacks.md (components, presets, config fields).

    python scripts/make_docs.py            # rewrite
    python scripts/make_docs.py --check    # exit 1 if out of date
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generated():
    from tfattack.attacks import docs as attack_docs
    return {os.path.join(ROOT, "docs", "attacks.md"): attack_docs.render()}


def main(argv):
    stale = []
    for path, text in generated().items():
        current = open(path).read() if os.path.exists(path) else None
        if current != text:
            stale.append(path)
            if "--check" not in argv:
                with open(path, "w") as handle:
                    handle.write(text)
    if "--check" in argv and stale:
        print(f"make_docs.py: out of date: {', '.join(stale)} (run python scripts/make_docs.py)", file=sys.stderr)
        return 1
    for path in stale:
        print(f"make_docs.py: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
