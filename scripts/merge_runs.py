"""Merge the per-shard records of a sharded attack into one run.json (after K workers finished).

  python scripts/merge_runs.py --output_dir=OUT

Checks that the shards share one attack configuration and one set of models, and that together they
cover every image exactly once; the images themselves are already in OUT (each worker wrote its own).
"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "The folder the shards wrote to.")


def fail(message):
    print(f"merge_runs.py: error: {message}", file=sys.stderr)
    return 2


def main(argv):
    del argv
    from tfattack import runs

    if not FLAGS.output_dir or not os.path.isdir(FLAGS.output_dir):
        return fail(f"--output_dir {FLAGS.output_dir!r} is not a folder")
    paths = sorted(glob.glob(os.path.join(FLAGS.output_dir, "run.shard-*-of-*.json")))
    if not paths:
        return fail(f"no shard records (run.shard-I-of-K.json) in {FLAGS.output_dir}")
    records = [json.load(open(p)) for p in paths]
    total = {r["shard"]["num_shards"] for r in records}
    if len(total) != 1:
        return fail(f"shard records disagree on the number of shards: {sorted(total)}")
    total = total.pop()
    indices = sorted(r["shard"]["shard_index"] for r in records)
    if indices != list(range(total)):
        missing = sorted(set(range(total)) - set(indices))
        return fail(f"shards missing: {missing} of {total} (run them, then merge again)")
    for key in ("attack_config", "max_epsilon", "targeted", "fuse"):
        if len({json.dumps(r[key], sort_keys=True) for r in records}) != 1:
            return fail(f"shard records disagree on {key}: they are not one run")
    ids = [i for r in records for i in r["shard"]["image_ids"]]
    if len(ids) != len(set(ids)):
        return fail("an image appears in two shards")
    merged = dict(records[0])
    merged["shard"] = {"num_shards": total, "merged_from": [os.path.basename(p) for p in paths], "image_ids": ids}
    for key in ("images_written", "images_already_done", "attack_seconds", "wall_seconds"):
        merged[key] = sum(r[key] for r in records)
    merged["failed_images"] = [f for r in records for f in r["failed_images"]]
    merged["predicted_labels"] = {k: v for r in records for k, v in r["predicted_labels"].items()}
    merged["images_per_second"] = merged["images_written"] / merged["attack_seconds"] if merged["attack_seconds"] else 0
    runs.write_json_atomic(os.path.join(FLAGS.output_dir, "run.json"), merged)
    print(f"merge_runs.py: {total} shards, {len(ids)} images -> {os.path.join(FLAGS.output_dir, 'run.json')}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
