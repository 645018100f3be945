"""Merge the per-shard records of a sharded attack into one run.json (after K workers finished).

  tfattack-merge-runs --output_dir=OUT

Checks that the shards share one attack configuration and one set of models, and that together they
cover every image exactly once; the images themselves are already in OUT (each worker wrote its own).
"""

import os
import sys

from absl import flags

from tfattack import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "The folder the shards wrote to.")


def run() -> int:
    from tfattack import record, runs

    if not FLAGS.output_dir or not os.path.isdir(FLAGS.output_dir):
        raise runs.UsageError(f"--output_dir {FLAGS.output_dir!r} is not a folder")
    paths = record.shard_records(FLAGS.output_dir)
    if not paths:
        raise runs.UsageError(f"no shard records (run.shard-I-of-K.json) in {FLAGS.output_dir}")
    target = os.path.join(FLAGS.output_dir, record.RECORD)
    merged = record.RunRecord.merge([record.RunRecord.load(p) for p in paths], target)
    merged.save()
    shard = merged.info["shard"]
    print(f"{cli.program('merge_runs.py')}: {shard['num_shards']} shards, {len(shard['image_ids'])} images -> {target}",
          file=sys.stderr)
    return 0


def main() -> None:
    cli.main("merge_runs.py", run)


if __name__ == "__main__":
    main()
