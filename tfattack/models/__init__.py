"""The model zoo: one registry, one classifier contract (RGB [0, 1] in, 1000 standard logits out).

    model = tfattack.models.load("ens3_adv_inception_v3", checkpoint="checkpoints/ens3_adv_inception_v3")
    logits = model(images)          # float32 [N, H, W, 3] in [0, 1] -> [N, 1000]
    tfattack.models.available()
"""

from tfattack.models.classifier import Classifier
from tfattack.models.ensemble import Ensemble
from tfattack.models.labels import class_names, nips17_to_index, top_k
from tfattack.models.loading import ModelNotFoundError, load, locate
from tfattack.models.registry import ModelSpec, available, get, specs
from tfattack.models.checkpoint import CheckpointError

__all__ = ["Classifier", "Ensemble", "ModelSpec", "ModelNotFoundError", "CheckpointError", "available", "get",
           "specs", "load", "locate", "class_names", "nips17_to_index", "top_k"]
