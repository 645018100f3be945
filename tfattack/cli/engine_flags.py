"""The --engine flags of the tools that can spread their work over Ray (attack.py, evaluate.py, benchmark.py)."""

from absl import flags

from tfattack.runs import UsageError

NAMES = ("engine", "ray_address", "num_workers", "worker_gpus", "worker_cpus")


def define(work: str, holding: str) -> None:
    """Defines --engine, --ray_address, --num_workers, --worker_gpus, --worker_cpus; `work` says what runs where
    ("Where batches are crafted"), `holding` what each worker keeps loaded ("the ensemble")."""
    flags.DEFINE_enum("engine", "local", ["local", "ray"], f"{work}: local (this process) or ray (Ray actors, one or "
                      f"many machines; the same results; needs pip install 'tfattack[ray]').")
    flags.DEFINE_string("ray_address", None, "With --engine=ray: the cluster to join (auto, or HOST:PORT); default: "
                        "an embedded Ray on this machine, shut down at the end.")
    flags.DEFINE_integer("num_workers", None, f"With --engine=ray: worker actors, each holding {holding} (default: "
                         f"as many as the cluster's GPUs / --worker_gpus, else CPUs / --worker_cpus).")
    flags.DEFINE_float("worker_gpus", 0.0, "With --engine=ray: GPUs per worker (fractions share a GPU).")
    flags.DEFINE_float("worker_cpus", 1.0, "With --engine=ray: CPUs Ray reserves per worker; a CPU worker runs "
                       "TensorFlow with that many threads (at least 1).")


def check() -> None:
    """One-line errors for the flags' values (and Ray's absence) before any long work."""
    from tfattack import scale

    FLAGS = flags.FLAGS
    # Flags with a value of their own by default (--worker_cpus 1) are given only when on the command line.
    given = [f"--{name}" for name in NAMES[1:] if FLAGS[name].present]
    if FLAGS.engine == "local" and given:
        raise UsageError(f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with --engine=ray")
    scale.check_engine(FLAGS.engine, num_workers=FLAGS.num_workers, worker_gpus=FLAGS.worker_gpus,
                       worker_cpus=FLAGS.worker_cpus, ray_address=FLAGS.ray_address)


def pool_options(say=None, quiet: bool = True) -> dict:
    """The keyword arguments of a `tfattack.scale` pool from the flags."""
    FLAGS = flags.FLAGS
    return dict(address=FLAGS.ray_address, num_workers=FLAGS.num_workers, worker_gpus=FLAGS.worker_gpus,
                worker_cpus=FLAGS.worker_cpus, say=say, quiet=quiet)
