"""timm's Visformer-S (`visformer_small`) in TF2, reading timm's safetensors file without torch.

Chen et al., Visformer: The vision-friendly transformer, ICCV 2021. The layout (timm 1.0's visformer.py with
visformer_small's options: init_channels 32, embed_dim 384, depth (7, 4, 4), num_heads 6, mlp_ratio 4, group 8,
attn_stage '011', spatial_conv '100', BatchNorm2d as the norm and embedding norm, positional embeddings), all on
NHWC maps, every batch norm eps 1e-5:

  stem          `stem.0` a 7x7 / 2 convolution (padding 3, no bias) to 32 channels, `stem.1` batch norm, ReLU: 112 px
  patch_embed1  a 4x4 / 4 convolution with bias to 192 channels + batch norm `norm`: 28 px; `pos_embed1` added
  stage1        7 convolutional blocks (no attention): x + mlp(norm2(x)), the MLP a 1x1 convolution to 384
                channels, GELU, a 3x3 convolution in 8 groups (padding 1), GELU, a 1x1 convolution back to 192
  patch_embed2  a 2x2 / 2 convolution to 384 channels + batch norm: 14 px; `pos_embed2` added
  stage2        4 attention blocks: x + attn(norm1(x)), then x + mlp(norm2(x)); attention on the map's pixels,
                `qkv` a 1x1 convolution (no bias) whose 3 * 384 channels are q|k|v, each head after head (6 heads
                of 64), softmax(q k^T / sqrt(64)) v, `proj` a 1x1 convolution; the MLP 1x1 to 1536, GELU, 1x1 back
  patch_embed3  2x2 / 2 to 768 channels + batch norm: 7 px; `pos_embed3` added
  stage3        4 attention blocks at 768 channels (6 heads of 128, MLP 3072)
  norm          batch norm; then global average pooling and `head`, a linear classifier.

GELU is the exact (erf) form; dropout and drop path are the identity at inference. End points: `stem`,
`stage{s}.{j}` each block's output, `stage1`..`stage3` each stage's output, `norm`, all NHWC maps; `Logits` the
output of `head`.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, layers, registry, torch_layers
from tfattack.models.torch_layers import gelu, timm_record

IMAGE_SIZE = 224
BN_EPSILON = 1e-5
STEM_FILTERS = 32
EMBED_DIM = 384
HEADS = 6
MLP_RATIO = 4
GROUPS = 8
# (blocks, width, patch size of the embedding before the stage, attention, grouped 3x3 in the MLP) per stage.
STAGES = ((7, EMBED_DIM // 2, 4, False, True), (4, EMBED_DIM, 2, True, False), (4, 2 * EMBED_DIM, 2, True, False))



def attend(q, k, v):
    """Softmax attention per head: q, k, v [N, L, heads, d] -> [N, L, heads * d], head by head in channel order."""
    logits = tf.einsum("nlhd,nmhd->nhlm", q, k) * (q.shape[-1] ** -0.5)
    out = tf.einsum("nhlm,nmhd->nlhd", tf.nn.softmax(logits, axis=-1), v)
    return tf.reshape(out, [-1, out.shape[1], out.shape[2] * out.shape[3]])

def batch_norm(store, x, name: str, scale_init: str = "ones"):
    """BatchNorm2d in inference mode; `scale_init` is the scale's value in an unloaded network."""
    return torch_layers.batch_norm(store, x, name, BN_EPSILON, scale_init)


def block_norm(store, x, name: str):
    """A block's norm1 / norm2. An unloaded network's batch norms are identities that do not normalise: with unit
    scales its residual stream and attention logits grow block after block until float16 overflows, so these start
    from small random scales instead (the branches stay alive, at a fraction of the stream)."""
    return batch_norm(store, x, name, scale_init="small")


def conv1x1(store, x, name: str, filters: int):
    return edits.layer_output(torch_layers.conv2d(store, x, name, filters, 1))


def spatial_mlp(store, x, name: str, spatial_conv: bool):
    """timm's SpatialMlp: 1x1 up, GELU, [grouped 3x3, GELU,] 1x1 back. With the 3x3 (group 8) the hidden width
    is twice the input's, without it `mlp_ratio` times."""
    width = x.shape[-1]
    hidden = 2 * width if spatial_conv else MLP_RATIO * width
    y = gelu(conv1x1(store, x, f"{name}.conv1", hidden))
    if spatial_conv:
        y = gelu(edits.layer_output(torch_layers.conv2d(store, y, f"{name}.conv2", hidden, 3, padding=1,
                                                        groups=GROUPS)))
    return conv1x1(store, y, f"{name}.conv3", width)


def attention(store, x, name: str, heads: int):
    """Visformer's Attention on a map [N, H, W, C]: the pixels attend to each other (row-major order)."""
    _, height, breadth, width = x.shape
    qkv = tf.reshape(conv1x1(store, x, f"{name}.qkv", 3 * width), [-1, height * breadth, 3, heads, width // heads])
    out = tf.reshape(attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]), [-1, height, breadth, width])
    return conv1x1(store, out, f"{name}.proj", width)


def block(store, x, name: str, use_attention: bool, spatial_conv: bool):
    if use_attention:
        x = backward.residual_add(x, attention(store, block_norm(store, x, f"{name}.norm1"), f"{name}.attn", HEADS))
    return backward.residual_add(x, spatial_mlp(store, block_norm(store, x, f"{name}.norm2"), f"{name}.mlp",
                                                spatial_conv))


def patch_embed(store, x, name: str, filters: int, patch: int):
    """timm's PatchEmbed (flatten=False): a patch x patch convolution at stride patch with bias, batch norm."""
    y = torch_layers.conv2d(store, x, f"{name}.proj", filters, patch, patch, bias=True, bn=f"{name}.norm",
                            epsilon=BN_EPSILON)
    return edits.layer_output(y)


def visformer(store, x, num_classes: int = 1000):
    end_points = backward.EndPoints()
    size = IMAGE_SIZE // 2
    # Created first, as timm's state dict lists them; [1, H, W, C] in our layout (see `tf_axes`).
    pos_embeds = []
    for index, (_, width, patch, _, _) in enumerate(STAGES, start=1):
        size //= patch
        pos_embeds.append(store.get(f"pos_embed{index}", [1, size, size, width], "small"))

    net = torch_layers.conv_bn(store, x, "stem.0", "stem.1", STEM_FILTERS, 7, 2, 3, epsilon=BN_EPSILON)
    net = edits.end_point(end_points, "stem", net)
    for index, (depth, width, patch, use_attention, spatial_conv) in enumerate(STAGES, start=1):
        net = patch_embed(store, net, f"patch_embed{index}", width, patch) + pos_embeds[index - 1]
        for unit in range(depth):
            net = block(store, net, f"stage{index}.{unit}", use_attention, spatial_conv)
            net = edits.end_point(end_points, f"stage{index}.{unit}", net)
        net = edits.end_point(end_points, f"stage{index}", net)

    net = edits.end_point(end_points, "norm", batch_norm(store, net, "norm"))
    logits = torch_layers.linear(store, layers.global_avg_pool(net, keepdims=False), "head", num_classes)
    end_points["Logits"] = logits
    return logits, end_points


class TimmVisformer(torch_layers.TorchStateDictNetwork):
    """timm's Visformer whose variables are named by its state-dict keys."""

    family = "timm Visformer variant"
    classifier_bias = "head.bias"

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        super().__init__(functools.partial(visformer, num_classes=num_classes), architecture, IMAGE_SIZE, seed=seed)

    def tf_axes(self, name: str, ndim: int):
        if name.startswith("pos_embed"):  # PyTorch's [1, C, H, W] map -> [1, H, W, C]
            return (0, 2, 3, 1)
        return torch_layers.torch_to_tf_axes(ndim)


build = torch_layers.fixed_size_builder(TimmVisformer, IMAGE_SIZE)

registry.register_architecture("visformer_small", build)
# 15 blocks in all. early: the fourth of stage1's seven (4 in, about a quarter); mid: the end of stage1, the 28 px
# convolutional stage (7 in, about half); late: the end of stage2, the 14 px stage (11 in, about three quarters),
# the last features before the final downsampling, as ResNets' `layer3` is theirs.
features.register_aliases("visformer_small", {"early": "stage1.3", "mid": "stage1", "late": "stage2"})

FAMILY = "timm Visformer"
SPECS = (timm_record("timm_visformer_small", "visformer_small", "timm/visformer_small.in1k", 82.092,
                     licence="apache-2.0", crop="crop_pct 0.9, bicubic",
                     paper="Chen et al., Visformer: The vision-friendly transformer, ICCV 2021"),)

for _spec_record in SPECS:
    registry.register(_spec_record)
