"""absl flags for the attack's components, and the 0.1 piece flags kept working.

Component slots take one spec string each (the text `run.json` records):
    --transforms=di:0.5,si:5,bsr:blocks=3  --estimator=vt:20  --objective=logit  --filters=ti:7  --update=mi:1.0
    --post=blur:3  --backward=sgm:0.2  --forward=cfm  --views=2  --norm=l2
The 0.1 piece flags (--momentum, --diversity_prob, --ti_kernel, ...) still override the --attack preset's
components as before. A slot set by both its spec flag and a piece flag is an error. Every flag defaults to
"from the preset": only flags given on the command line override it. `eps` and `steps` are set by the NIPS'17-style
`--max_epsilon` (pixels) and `--num_iter` flags of the scripts.
"""

from absl import flags

from tfattack.attacks import components, legacy
from tfattack.attacks import config as attack_config
from tfattack.runs import UsageError

FLAGS = flags.FLAGS
# Set by the scripts' own flags (NIPS'17 names and units), not generated.
SCRIPT_OWNED = ("name", "eps", "steps")
CHOICES = {"loss": tuple(legacy.OBJECTIVES), "start": attack_config.STARTS,
           "label_source": attack_config.LABEL_SOURCES, "augment_mode": ("all", "one"),
           "compute_dtype": attack_config.COMPUTE_DTYPES}
# flag name -> (config slot, role)
SLOT_FLAGS = {"transforms": ("transforms", "transform"), "estimator": ("estimators", "estimator"),
              "objective": ("objective", "objective"), "filters": ("filters", "filter"),
              "update": ("update", "update"), "post": ("post", "post"), "backward": ("backward", "backward"),
              "forward": ("forward", "forward")}
# The 0.1 piece flags that edit each slot.
PIECES_OF_SLOT = {
    "transforms": {k for _, keys, *_ in legacy.TRANSFORMS for k in keys},
    "estimators": {"vt_samples", "vt_beta"},
    "objective": set(legacy.OBJECTIVE),
    "filters": {"ti_kernel", "ti_nsig"},
    "update": set(legacy.UPDATE),
    "post": {"delta_blur_kernel", "delta_blur_nsig"},
    "backward": set(),
    "forward": set(),
    "views": {"num_copies"},
}


def preset_names():
    from tfattack.attacks import presets
    return presets()


def piece_names():
    return [name for name in legacy.FIELDS if name not in SCRIPT_OWNED]


def _slot_help(flag: str, role: str) -> str:
    names = ", ".join(components.available(role))
    return (f"Attack {role} components as a spec string, replacing the preset's (e.g. "
            f"{flag}=NAME:VALUE,KEY=VALUE; 'none' for none); available: {names}. See docs/attacks.md.")


def define_piece_flags():
    for flag, (_, role) in SLOT_FLAGS.items():
        flags.DEFINE_string(flag, None, _slot_help(f"--{flag}", role))
    flags.DEFINE_alias("estimators", "estimator")
    flags.DEFINE_integer("views", None, attack_config.FIELD_DOCS["views"] + " (default: the preset's)")
    flags.DEFINE_enum("norm", None, list(attack_config.NORMS), attack_config.FIELD_DOCS["norm"]
                      + " With l2, --max_epsilon is the L2 radius in pixel units (0..255 scale).")
    for name in piece_names():
        default, doc = legacy.FIELDS[name]
        help_text = f"{doc} (default: the --attack preset's value, {default!r} if unset there)"
        if name in CHOICES:
            flags.DEFINE_enum(name, None, list(CHOICES[name]), help_text)
        elif isinstance(default, bool):
            flags.DEFINE_boolean(name, None, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, None, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(name, None, help_text)
        elif isinstance(default, tuple):
            flags.DEFINE_list(name, None, help_text)
        else:
            flags.DEFINE_string(name, None, help_text)


def piece_overrides() -> dict:
    """The attack flags given on the command line, as `tfattack.attacks.build` keyword arguments.
    Raises UsageError (one line, naming the flag) for a bad spec or a slot set twice."""
    overrides = {}
    for name in piece_names():
        value = FLAGS[name].value
        if value is None:
            continue
        default = legacy.FIELDS[name][0]
        if isinstance(default, tuple):
            kind = float if default and isinstance(default[0], float) else str
            try:
                value = tuple(kind(v) for v in value if str(v).strip())
            except ValueError:
                raise UsageError(f"--{name}: expected a comma-separated list of numbers, got {value}") from None
        overrides[name] = value
    for flag, (slot, role) in SLOT_FLAGS.items():
        text = FLAGS[flag].value
        if text is None:
            continue
        clashes = sorted(PIECES_OF_SLOT[slot] & set(overrides))
        if clashes:
            raise UsageError(f"--{flag} and --{', --'.join(clashes)} both set the {slot}: give one of them")
        try:
            many = attack_config.SLOTS[slot][1]
            overrides[slot] = components.parse(role, text) if many else components.parse_one(role, text)
        except components.ComponentError as err:
            raise UsageError(f"--{flag}: {err}") from None
    if FLAGS.views is not None:
        if "num_copies" in overrides:
            raise UsageError("--views and --num_copies both set the views: give one of them")
        overrides["views"] = FLAGS.views
    if FLAGS.norm is not None:
        overrides["norm"] = FLAGS.norm
    return overrides
