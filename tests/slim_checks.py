"""Shared by the slim-port tests: the official variable lists and random checkpoints in the official format."""

from pathlib import Path

import numpy as np

import slim_oracle
from tfattack.models.checkpoint import write_slim_checkpoint

SLIM_VARIABLES = Path(__file__).resolve().parents[1].parent / "shared" / "slim_variables"


def read_tsv(path):
    """[(variable name, shape)] from a `../shared/slim_variables/<model>.tsv` file, in creation order."""
    rows = (line.split("\t") for line in Path(path).read_text().splitlines())
    return [(name, tuple(int(d) for d in shape.split(","))) for name, shape in rows]


def official_variables(model_name):
    return read_tsv(SLIM_VARIABLES / f"{model_name}.tsv")


def fill_and_save(network, prefix, seed):
    """Fills `network` with checkpoint-like random values (BN far from identity), writes them at `prefix`
    as a TF1 V2 checkpoint, and returns the values by full name."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, var in network.variables_by_name.items():
        values[name] = slim_oracle.random_value(name, tuple(var.shape), rng)
        var.assign(values[name])
    write_slim_checkpoint(values, prefix)
    return values
