"""Writes tfattack/bench/data/transferattack_untargeted.json and transferattack_targeted.json, the published rates the
leaderboard's and the targeted table's orderings are compared with (`tfattack.bench.published`), from TransferAttack's
README at one commit: both tables are read before either file is written.

    python scripts/published_rates.py --commit=<40 hex digits>             # downloads the README at that commit
    python scripts/published_rates.py --commit=<...> --readme=README.md    # a copy of it read from disk
"""

import json
import os
import re
import sys
import urllib.request

from absl import app, flags

flags.DEFINE_string("commit", None, "The TransferAttack commit whose README is read (40 hex digits).")
flags.DEFINE_string("readme", None, "A copy of that commit's README.md (default: download it).")
flags.DEFINE_string("output_dir", None, "The folder the two files go to (default: the package's data folder).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tfattack.bench import published

    if not FLAGS.commit or not re.fullmatch(r"[0-9a-f]{40}", FLAGS.commit):
        sys.exit(f"published_rates.py: --commit must be 40 lowercase hex digits, got {FLAGS.commit!r}")
    url = published.README_URL.format(commit=FLAGS.commit)
    try:
        if FLAGS.readme:
            with open(FLAGS.readme, encoding="utf-8") as handle:
                text = handle.read()
        else:
            with urllib.request.urlopen(url, timeout=60) as response:
                text = response.read().decode("utf-8")
    except OSError as err:
        sys.exit(f"published_rates.py: cannot read {FLAGS.readme or url}: {err}")
    try:
        tables = {"untargeted": (published.parse_transferattack_readme(text), published.DATA),
                  "targeted": (published.parse_transferattack_targeted(text), published.TARGETED_DATA)}
    except published.PublishedTableError as err:
        sys.exit(f"published_rates.py: {FLAGS.readme or url}: {err}")
    for kind, (table, default) in tables.items():
        payload = {"source": f"Trustworthy-AI-Group/TransferAttack README.md, {kind} table", "commit": FLAGS.commit,
                   "url": url, **table}
        output = os.path.join(FLAGS.output_dir, os.path.basename(default)) if FLAGS.output_dir else default
        os.makedirs(os.path.dirname(output), exist_ok=True)
        temporary = output + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(payload, handle, indent=1)
            handle.write("\n")
        os.replace(temporary, output)
        mapped = sum(1 for r in table["rows"] if r["preset"])
        print(f"published_rates.py: {kind}: {len(table['rows'])} methods ({mapped} with a tfattack preset) -> "
              f"{output}")


if __name__ == "__main__":
    app.run(main)
