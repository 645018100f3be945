"""Writes tfattack/bench/data/transferattack_untargeted.json, the published rates the leaderboard's orderings are
compared with (`tfattack.bench.published`), from TransferAttack's README at one commit.

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
flags.DEFINE_string("output", None, "Where to write (default: the package's data file).")
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
        table = published.parse_transferattack_readme(text)
    except published.PublishedTableError as err:
        sys.exit(f"published_rates.py: {FLAGS.readme or url}: {err}")
    payload = {"source": "Trustworthy-AI-Group/TransferAttack README.md, untargeted table", "commit": FLAGS.commit,
               "url": url, **table}
    output = FLAGS.output or published.DATA
    os.makedirs(os.path.dirname(output), exist_ok=True)
    temporary = output + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(payload, handle, indent=1)
        handle.write("\n")
    os.replace(temporary, output)
    mapped = sum(1 for r in table["rows"] if r["preset"])
    print(f"published_rates.py: {len(table['rows'])} methods ({mapped} with a tfattack preset) -> {output}")


if __name__ == "__main__":
    app.run(main)
