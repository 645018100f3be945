"""The robustness library's adversarially trained ImageNet models (Salman et al., NeurIPS 2020), one record per
published file, on the torchvision architectures (`tfattack.models.torchvision_resnet` and its siblings).

Each file is the library's training checkpoint: an AttackerModel whose classifier weights sit under `module.model.`
(read by `torch_pickle.read_model_state_dict`), with the ImageNet mean/std normaliser inside the model, i.e. the
"torchvision" preprocessing here. The published download links (an Azure blob container) have expired: a record
names its file, and the weights are taken from `checkpoint=` or a model dir (`robust_imagenet/<file>`).
"""

from __future__ import annotations

from tfattack.models import registry
from tfattack.models.registry import ModelSpec

PAPER = "Salman et al., Do adversarially robust ImageNet models transfer better?, NeurIPS 2020"
PROVENANCE = ("robustness library ImageNet checkpoint {file} (microsoft/robust-models-transfer, MIT licence), "
              "{training}")
NOTE = "ImageNet validation top-1 published in microsoft/robust-models-transfer's README ({norm}, eps {eps})"

# file-name prefix -> tfattack architecture
ARCHITECTURES = {"resnet18": "resnet18", "resnet50": "resnet50", "wide_resnet50_2": "wide_resnet50_2",
                 "wide_resnet50_4": "wide_resnet50_4", "resnext50_32x4d": "resnext50_32x4d",
                 "mobilenet": "mobilenet_v2", "vgg16_bn": "vgg16_bn"}
L2_EPS = ("0", "0.01", "0.03", "0.05", "0.1", "0.25", "0.5", "1", "3", "5")
LINF_EPS = ("0.5", "1.0", "2.0", "4.0", "8.0")  # in pixels of 255
# Published top-1 per file stem (L2 tables: ResNets at every eps; the other architectures at eps 0 and 3).
TOP1 = {
    **dict(zip((f"resnet18_l2_eps{e}" for e in L2_EPS),
               (69.79, 69.90, 69.24, 69.15, 68.77, 67.43, 65.49, 62.32, 53.12, 45.59))),
    **dict(zip((f"resnet50_l2_eps{e}" for e in L2_EPS),
               (75.80, 75.68, 75.76, 75.59, 74.78, 74.14, 73.16, 70.43, 62.83, 56.13))),
    **dict(zip((f"wide_resnet50_2_l2_eps{e}" for e in L2_EPS),
               (76.97, 77.25, 77.26, 77.17, 76.74, 76.21, 75.11, 73.41, 66.90, 60.94))),
    **dict(zip((f"wide_resnet50_4_l2_eps{e}" for e in L2_EPS),
               (77.91, 78.02, 77.87, 77.77, 77.64, 77.10, 76.52, 75.51, 69.67, 65.20))),
    "mobilenet_l2_eps0": 65.26, "mobilenet_l2_eps3": 50.40,
    "resnext50_32x4d_l2_eps0": 77.38, "resnext50_32x4d_l2_eps3": 66.25,
    "vgg16_bn_l2_eps0": 73.66, "vgg16_bn_l2_eps3": 57.19,
    **dict(zip((f"resnet18_linf_eps{e}" for e in LINF_EPS), (66.13, 63.46, 59.63, 52.49, 42.11))),
    **dict(zip((f"resnet50_linf_eps{e}" for e in LINF_EPS), (73.73, 72.05, 69.10, 63.86, 54.53))),
    **dict(zip((f"wide_resnet50_2_linf_eps{e}" for e in LINF_EPS), (75.82, 74.65, 72.35, 68.41, 60.82))),
}


def _spec(stem: str) -> ModelSpec:
    prefix, norm, eps = stem.rsplit("_", 2)
    norm_name, eps_value = norm.upper().replace("LINF", "L-inf"), eps[len("eps"):]
    eps_text = f"{eps_value}/255" if norm == "linf" else eps_value
    return ModelSpec(
        name=f"robust_{stem}", architecture=ARCHITECTURES[prefix], source="torch_pickle", image_size=224,
        preprocessing="torchvision", num_classes=1000, default_location=f"robust_imagenet/{stem}.ckpt",
        licence="MIT", provenance=PROVENANCE.format(
            file=f"{stem}.ckpt", training=(f"adversarially trained with {norm_name} eps {eps_text}" if eps_value != "0"
                                           else "trained without adversarial examples by the same code (eps 0)")),
        reference_top1=TOP1[stem], reference_note=NOTE.format(norm=norm_name, eps=eps_text), paper=PAPER)


FAMILY = "Robustness library (adversarially trained, Salman et al. 2020)"
SPECS = tuple(_spec(stem) for stem in TOP1)

for _spec_record in SPECS:
    registry.register(_spec_record)
