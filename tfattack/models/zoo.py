"""Imports every model family module once, so that each registers its specs and architectures.

One line per family; a family module holds its architecture code and, next to it, its weight records.
"""

import importlib

FAMILY_MODULES = (
    "tfattack.models.inception_v3",
    "tfattack.models.inception_v4",
    "tfattack.models.inception_resnet_v2",
    "tfattack.models.resnet_v2",
    "tfattack.models.vgg",
    "tfattack.models.keras_applications",
    "tfattack.models.efficientnet_lite",
    "tfattack.models.torchvision_resnet",
    "tfattack.models.torchvision_vgg",
    "tfattack.models.torchvision_mobilenet",
    "tfattack.models.torchvision_densenet",
    "tfattack.models.torchvision_inception",
    "tfattack.models.robust_resnets",
    "tfattack.models.timm_tf_ports",
    "tfattack.models.timm_vit",
    "tfattack.models.timm_swin",
    "tfattack.models.timm_pit",
    "tfattack.models.timm_visformer",
    "tfattack.models.feature_denoising",
    "tfattack.models.tfjs",
    "tfattack.models.tflite",
)

for _module in FAMILY_MODULES:
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as err:
        # Only while a family is being written: a family module that is absent is skipped, but any
        # import error *inside* a present module propagates.
        if err.name != _module:
            raise
