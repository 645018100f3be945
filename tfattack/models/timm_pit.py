"""timm's Pooling-based Vision Transformer PiT-B (`pit_b_224`) in TF2, reading timm's safetensors file without torch.

Heo et al., Rethinking spatial dimensions of vision transformers, ICCV 2021. The layout (timm 1.0's pit.py):

  patch_embed.conv   a 14x14 convolution at stride 7, no padding, with bias: 224 px -> a 31x31 map of 256 channels
  pos_embed          a learned [31, 31, 256] map added to it (a spatial map, not a token sequence)
  cls_token          one learned class token (pit_b_224 is the non-distilled model: no distillation token, no
                     `head_dist`)
  transformers.0..2  stages of 3, 6, 4 pre-norm transformer blocks at widths 256, 512, 1024 (heads 4, 8, 16 of 64
                     channels). Stages 1 and 2 start with `pool`: the map goes through a depthwise 3x3 convolution at
                     stride 2 with padding 1 that doubles the channels (groups = input channels, two output
                     channels per input channel; 31 -> 16 -> 8 px), the class token through the linear `pool.fc`.
                     A stage's blocks run on the class token followed by the map's pixels in row-major order, and
                     the stage hands on the map and the class token again.
  norm               LayerNorm (eps 1e-6) of the class token only; `head` the linear classifier on it.

A block: x + attn(norm1(x)), then x + mlp(norm2(x)); LayerNorm eps 1e-6; attention with biased `qkv` (channel
order q|k|v, then head, then head channel) and softmax(q k^T / sqrt(64)) v, then `proj`; the MLP `fc1` (4x width),
exact (erf) GELU, `fc2`. Dropout and drop path are the identity at inference.

End points: `transformers.{i}.blocks.{j}` each block's tokens [N, 1 + H*W, C] (the class token first, as timm's
block outputs them); `transformers.{i}` each stage's spatial map [N, H, W, C] (NHWC; the stage's class token is
dropped, as timm's forward_intermediates does); `norm` the normalised class token [N, 1, C]; `Logits` the output
of `head`.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, registry, torch_layers
from tfattack.models.timm_vit import attention
from tfattack.models.torch_layers import gelu, layer_norm, timm_record, token_linear

IMAGE_SIZE = 224
LAYER_NORM_EPSILON = 1e-6
PATCH_SIZE, PATCH_STRIDE = 14, 7
HEAD_DIM = 64
MLP_RATIO = 4
# (blocks, heads) per stage of pit_b_224; the width is heads * 64.
STAGES = ((3, 4), (6, 8), (4, 16))


def block(store, x, name: str, heads: int):
    """A pre-norm transformer block on tokens: x + attn(norm1(x)), then x + mlp(norm2(x))."""
    width = x.shape[-1]
    x = backward.residual_add(x, attention(store, layer_norm(store, x, f"{name}.norm1", LAYER_NORM_EPSILON),
                                           f"{name}.attn", heads))
    hidden = gelu(token_linear(store, layer_norm(store, x, f"{name}.norm2", LAYER_NORM_EPSILON), f"{name}.mlp.fc1",
                               MLP_RATIO * width))
    return backward.residual_add(x, token_linear(store, hidden, f"{name}.mlp.fc2", width))


def pooling(store, x, cls_token, name: str, width: int):
    """timm's Pooling: the map through a depthwise 3x3 / 2 convolution (padding 1) to `width` = a multiple of its
    channels, the class token through the linear `fc`.

    PyTorch's kernel is [width, 1, 3, 3] with groups = input channels: output channel o reads input channel
    o // multiplier. Stored in the default HWIO layout it is [3, 3, 1, width]; its last axis split row-major into
    (input channel, multiplier) is exactly `tf.nn.depthwise_conv2d`'s [3, 3, C, multiplier] kernel, whose output
    channel c * multiplier + m reads input channel c."""
    channels = x.shape[-1]
    kernel = store.get(f"{name}.conv.weight", [3, 3, 1, width], "he")
    depthwise = tf.reshape(kernel, [3, 3, channels, width // channels])
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    y = tf.nn.depthwise_conv2d(padded, depthwise, [1, 2, 2, 1], "VALID")
    y = edits.layer_output(y + store.get(f"{name}.conv.bias", [width], "zeros"))
    return y, token_linear(store, cls_token, f"{name}.fc", width)


def pit(store, x, num_classes: int = 1000):
    end_points = backward.EndPoints()
    width = STAGES[0][1] * HEAD_DIM
    # Created first, as timm's state dict lists them; [1, H, W, C] in our layout (see `tf_axes`).
    grid = (IMAGE_SIZE - PATCH_SIZE) // PATCH_STRIDE + 1
    pos_embed = store.get("pos_embed", [1, grid, grid, width], "small")
    cls_token = store.get("cls_token", [1, 1, width], "small")

    kernel = store.get("patch_embed.conv.weight", [PATCH_SIZE, PATCH_SIZE, x.shape[-1], width], "he")
    net = tf.nn.conv2d(x, kernel, PATCH_STRIDE, "VALID") + store.get("patch_embed.conv.bias", [width], "zeros")
    net = edits.layer_output(net) + pos_embed
    cls = tf.broadcast_to(cls_token, [tf.shape(net)[0], 1, width])

    for index, (depth, heads) in enumerate(STAGES):
        name = f"transformers.{index}"
        if index > 0:
            net, cls = pooling(store, net, cls, f"{name}.pool", heads * HEAD_DIM)
        _, height, breadth, channels = net.shape
        tokens = tf.concat([cls, tf.reshape(net, [-1, height * breadth, channels])], axis=1)
        for unit in range(depth):
            tokens = block(store, tokens, f"{name}.blocks.{unit}", heads)
            tokens = edits.end_point(end_points, f"{name}.blocks.{unit}", tokens)
        cls = tokens[:, :1]
        net = edits.end_point(end_points, name, tf.reshape(tokens[:, 1:], [-1, height, breadth, channels]))

    cls = edits.end_point(end_points, "norm", layer_norm(store, cls, "norm", LAYER_NORM_EPSILON))
    logits = token_linear(store, cls[:, 0], "head", num_classes)
    end_points["Logits"] = logits
    return logits, end_points


class TimmPiT(torch_layers.TorchStateDictNetwork):
    """timm's PoolingVisionTransformer whose variables are named by its state-dict keys."""

    family = "timm PiT variant"
    classifier_bias = "head.bias"

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        super().__init__(functools.partial(pit, num_classes=num_classes), architecture, IMAGE_SIZE, seed=seed)

    def tf_axes(self, name: str, ndim: int):
        if name == "pos_embed":  # PyTorch's [1, C, H, W] map -> [1, H, W, C]
            return (0, 2, 3, 1)
        return torch_layers.torch_to_tf_axes(ndim)


build = torch_layers.fixed_size_builder(TimmPiT, IMAGE_SIZE)

registry.register_architecture("pit_b_224", build)
# 13 blocks in all. early: the end of the 31 px stage (3 blocks in, about a quarter); mid: the third block of the
# 16 px stage (6 in, about half; its tokens); late: the end of the 16 px stage (9 in), the last features before
# the final pooling, as ResNets' `layer3` is theirs.
features.register_aliases("pit_b_224", {"early": "transformers.0", "mid": "transformers.1.blocks.2",
                                        "late": "transformers.1"})

FAMILY = "timm PiT (pooling-based vision transformer)"
SPECS = (timm_record("timm_pit_b_224", "pit_b_224", "timm/pit_b_224.in1k", 82.458, licence="apache-2.0",
                     crop="crop_pct 0.9, bicubic",
                     paper="Heo et al., Rethinking spatial dimensions of vision transformers, ICCV 2021"),)

for _spec_record in SPECS:
    registry.register(_spec_record)
