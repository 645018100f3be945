"""timm's ports of TensorFlow's own checkpoints, loaded onto our TF-slim ports by a name map.

timm republishes Google's adversarially trained Inception-ResNet-v2 (Tramer et al.'s ensemble adversarial training)
as a safetensors file with its own module names (`repeat_1.4.branch1.2.conv.weight`). The architecture is TF-slim's:
same convolutions, TF's symmetric SAME padding at stride 1 and VALID at stride 2, average pools that exclude the
padding, batch norm eps 0.001 with no learned scale. So the file loads onto the slim port, and the model is the
original graph, with slim's end-point names and everything keyed on the slim architecture (feature taps, the
feature-level methods' layers).

The map is derived from the slim port's own tables: a block's timm name is its slim scope lower-cased without the
kernel suffix (`Conv2d_4a_3x3` -> `conv2d_4a`, `Mixed_6a` -> `mixed_6a`), `Repeat_1/block17_5` -> `repeat_1.4`,
`Block8` -> `block8`; a branch's layers are `branchI.J` (`branchI` when the branch is one convolution; pools have no
weights), a residual block's projection `conv2d`, the classifier `classif`. Per convolution: `conv.weight` ->
`weights`, `bn.bias` -> `BatchNorm/beta`, `bn.running_mean` / `bn.running_var` -> `moving_mean` /
`moving_variance`; `bn.weight` must be 1 (TF's batch norm here has no scale), which a TF port always satisfies.

timm's Inception-v3 ports are not here: timm's InceptionV3 averages with the padding counted, unlike TF, so they
are torchvision's architecture (see `tfattack.models.torchvision_inception`).
"""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np

from tfattack.models import inception_resnet_v2 as slim_irv2
from tfattack.models import registry, torch_layers
from tfattack.models.inception_v3 import Conv, Mixed
from tfattack.models.torch_layers import StateDictMismatchError, timm_record
from tfattack.names import first_few

# timm suffix -> slim suffix, for a convolution followed by batch norm, and for a biased layer.
BATCH_NORM_CONV = {"conv.weight": "weights", "bn.bias": "BatchNorm/beta", "bn.running_mean": "BatchNorm/moving_mean",
                   "bn.running_var": "BatchNorm/moving_variance"}
BIASED = {"weight": "weights", "bias": "biases"}
UNIT_SCALE_SUFFIX = "bn.weight"


def _timm_block_name(slim_name: str) -> str:
    """`Conv2d_4a_3x3` -> `conv2d_4a`, `Mixed_6a` -> `mixed_6a`."""
    return "_".join(slim_name.lower().split("_")[:2])


def _branch_layers(timm_prefix: str, slim_prefix: str, branches) -> Dict[str, str]:
    """timm layer prefix -> slim scope for every convolution of a Mixed block's (or residual block's) branches."""
    names = {}
    for i, branch in enumerate(branches):
        for j, layer in enumerate(branch):
            if isinstance(layer, Conv):
                position = f"branch{i}" if len(branch) == 1 else f"branch{i}.{j}"
                names[f"{timm_prefix}.{position}"] = f"{slim_prefix}/Branch_{i}/{layer.name}"
    return names


def inception_resnet_v2_layers() -> Tuple[Dict[str, str], Dict[str, str]]:
    """(timm prefix -> slim scope of every conv + batch norm, timm prefix -> slim scope of every biased layer)."""
    convs, biased = {}, {}
    for entry in slim_irv2.TRUNK:
        if isinstance(entry, Conv):
            convs[_timm_block_name(entry.name)] = entry.name
        elif isinstance(entry, Mixed):
            convs.update(_branch_layers(_timm_block_name(entry.name), entry.name, entry.branches))
        elif isinstance(entry, slim_irv2.ResidualStage):
            for index, scope in enumerate(entry.block_scopes()):
                prefix = f"{entry.scope.lower()}.{index}" if entry.block else entry.scope.lower()
                convs.update(_branch_layers(prefix, scope, entry.branches))
                biased[f"{prefix}.conv2d"] = f"{scope}/Conv2d_1x1"
    biased["classif"] = "Logits/Logits"
    return convs, biased


def key_map(convs: Mapping[str, str], biased: Mapping[str, str]) -> Dict[str, str]:
    """timm state-dict key -> slim variable name (relative to the scope)."""
    names = {}
    for prefix, scope in convs.items():
        names.update({f"{prefix}.{suffix}": f"{scope}/{slim}" for suffix, slim in BATCH_NORM_CONV.items()})
    for prefix, scope in biased.items():
        names.update({f"{prefix}.{suffix}": f"{scope}/{slim}" for suffix, slim in BIASED.items()})
    return names


def slim_layout(value: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in TF-slim's layout: OIHW -> HWIO, [out, in] -> [in, out]."""
    return value.transpose(torch_layers.torch_to_tf_axes(value.ndim))


def load_onto_slim(network, state_dict: Mapping[str, np.ndarray], source: str, model_name: str) -> int:
    """Assigns a timm TF-port state dict to a slim network; every key, shape and unit scale is checked first."""
    convs, biased = inception_resnet_v2_layers()
    names = key_map(convs, biased)
    scales = {f"{prefix}.{UNIT_SCALE_SUFFIX}" for prefix in convs}
    present = {k: v for k, v in state_dict.items() if not k.endswith(torch_layers.IGNORED_KEY_SUFFIX)}
    missing = [k for k in list(names) + sorted(scales) if k not in present]
    unexpected = [k for k in present if k not in names and k not in scales]
    variables = network.store.by_name
    unmapped = [name for name in variables if name not in set(names.values())]
    if unmapped:  # the slim port built a variable no timm key feeds (an aux head): the record is wrong
        raise ValueError(f"model {model_name!r}: the network has variables no timm key maps to: {first_few(unmapped, 5)}")
    if missing or unexpected:
        parts = ([f"lacks {len(missing)} key(s): {first_few(missing, 5)}"] if missing else []) + \
                ([f"has {len(unexpected)} unexpected key(s): {first_few(unexpected, 5)}"] if unexpected else [])
        raise StateDictMismatchError(f"{source} does not fit model {model_name!r} (timm's {network.scope} TF port): "
                                     f"{'; '.join(parts)}")
    wrong = [f"{key} {tuple(present[key].shape)} != {tuple(reversed_shape)}"
             for key, name in names.items()
             for reversed_shape in [_torch_shape(variables[name].shape)]
             if tuple(present[key].shape) != tuple(reversed_shape)]
    if wrong:
        raise StateDictMismatchError(f"{source} has mis-shaped tensor(s) for model {model_name!r}: "
                                     f"{first_few(wrong, 3)}")
    scaled = [key for key in sorted(scales) if not np.allclose(present[key], 1.0, rtol=0, atol=1e-6)]
    if scaled:
        raise StateDictMismatchError(f"{source}: batch-norm scale(s) {first_few(scaled, 3)} are not 1, which TF's "
                                     f"{network.scope} has no variable for (model {model_name!r} takes timm's ports "
                                     f"of TF checkpoints only)")
    for key, name in names.items():
        variables[name].assign(slim_layout(np.asarray(present[key], np.float32)))
    return len(names)


def _torch_shape(tf_shape) -> Tuple[int, ...]:
    shape = tuple(int(s) for s in tf_shape)
    axes = torch_layers.torch_to_tf_axes(len(shape))
    return tuple(shape[axes.index(i)] for i in range(len(shape)))


torch_layers.register_slim_state_dict_map("inception_resnet_v2", load_onto_slim)

FAMILY = "timm's ports of TF checkpoints (onto the slim ports)"
SPECS = (
    timm_record("timm_inception_resnet_v2_tf_ens_adv_in1k", "inception_resnet_v2",
                "timm/inception_resnet_v2.tf_ens_adv_in1k", 79.998, image_size=299, preprocessing="inception",
                licence="apache-2.0", crop="299 px, crop 0.8975, bicubic",
                paper=f"{slim_irv2.TRAMER_CITATION}; {slim_irv2._PAPER}"),
)

for _spec_record in SPECS:
    registry.register(_spec_record)
