"""tfattack: transferable adversarial examples against ImageNet classifiers, in TensorFlow 2.

    import tfattack
    model = tfattack.models.load("inception_v3", checkpoint="checkpoints/inception_v3")
    attack = tfattack.attacks.build("ti_di_mi_fgsm", eps=16 / 255, steps=10)
"""

import importlib

__version__ = "0.1.0"
__all__ = ["models", "attacks", "data", "defenses", "evaluate", "__version__"]


def __getattr__(name):
    # Subpackages load on first use, so `import tfattack` stays light and has no import cycles.
    if name in __all__:
        return importlib.import_module(f"tfattack.{name}")
    raise AttributeError(f"module 'tfattack' has no attribute {name!r}")
