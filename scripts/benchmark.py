"""`tfattack-benchmark` from a source checkout (see its --help), reading the development data that sits beside the
checkout (../shared: nips17_dev/ and real_models/) unless --data_dir / --model_dir say otherwise; the tables in
benchmarks/ were made this way."""

import os

from absl import flags

from tfattack.cli.benchmark import main

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir, "shared")

if __name__ == "__main__":
    flags.FLAGS.set_default("data_dir", os.path.normpath(os.path.join(SHARED, "nips17_dev")))
    flags.FLAGS.set_default("model_dir", os.path.normpath(os.path.join(SHARED, "real_models")))
    main()
