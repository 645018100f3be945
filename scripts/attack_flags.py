"""absl flags for every attack piece, generated from `tfattack.attacks.AttackConfig`'s fields.

One flag per config field (its help is the field's doc, with the paper), default "from the preset":
only flags given on the command line override the `--attack` preset. `eps` and `steps` are set by
the NIPS'17-style `--max_epsilon` (pixels) and `--num_iter` flags of the scripts.
"""

import dataclasses

from absl import flags

from tfattack.attacks import config as attack_config

FLAGS = flags.FLAGS
# Set by the scripts' own flags (NIPS'17 names and units), not generated.
SCRIPT_OWNED = ("name", "eps", "steps")
CHOICES = {"loss": attack_config.LOSSES, "start": attack_config.STARTS, "label_source": attack_config.LABEL_SOURCES,
           "augment_mode": attack_config.AUGMENT_MODES, "compute_dtype": attack_config.COMPUTE_DTYPES}


def piece_fields():
    return [f for f in dataclasses.fields(attack_config.AttackConfig) if f.name not in SCRIPT_OWNED]


def define_piece_flags():
    for field in piece_fields():
        help_text = f"{field.metadata['doc']} (default: the --attack preset's value, {field.default!r} if unset there)"
        default = field.default
        if field.name in CHOICES:
            flags.DEFINE_enum(field.name, None, CHOICES[field.name], help_text)
        elif isinstance(default, bool):
            flags.DEFINE_boolean(field.name, None, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, None, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, None, help_text)
        elif isinstance(default, tuple):
            flags.DEFINE_list(field.name, None, help_text)
        else:
            flags.DEFINE_string(field.name, None, help_text)


def piece_overrides() -> dict:
    """The attack-piece flags given on the command line, converted to the config's field types."""
    overrides = {}
    for field in piece_fields():
        value = FLAGS[field.name].value
        if value is None:
            continue
        if isinstance(field.default, tuple):
            kind = float if field.default and isinstance(field.default[0], float) else str
            try:
                value = tuple(kind(v) for v in value if str(v).strip())
            except ValueError:
                raise ValueError(f"--{field.name}: expected a comma-separated list of numbers, got {value}") from None
        overrides[field.name] = value
    return overrides
