"""timm's Vision Transformer (ViT-B/16, DeiT-S/16) in TF2, reading timm's safetensors files without torch.

The network is timm's `VisionTransformer` in eval mode with its default configuration for these models: a 16x16/16
convolution with bias (`patch_embed.proj`) cuts the 224 px image into 14 x 14 patch tokens (row-major order), a
learned class token (`cls_token`) is put in front of them and learned position embeddings (`pos_embed`, one per
token, the class token's included) are added. Then `depth` pre-norm transformer blocks, each

    x = x + attn(norm1(x))        multi-head self-attention: qkv (with bias) -> softmax(q k^T / sqrt(d_head)) v -> proj
    x = x + mlp(norm2(x))         fc1 -> exact (erf) GELU -> fc2, hidden width 4 x embed

(no layer scale, no q/k norms in these configurations), a final LayerNorm `norm`, the class token's output and
the linear classifier `head`. LayerNorms have eps 1e-6 (timm's LayerNorm default). ViT-B: embed 768, 12 heads;
DeiT-S: embed 384, 6 heads; both 12 blocks.

End points carry timm's module names: `blocks.0` .. `blocks.11` (tokens [N, 197, D]) and `norm`. Residual additions
go through `tfattack.backward.residual_add` (SGM, ghost networks act there); the linear layers' outputs and the
patch embedding's through `tfattack.edits.layer_output`.

The transformer pieces (`attention`, `mlp`, `patch_embed`) serve timm's Swin port too; LayerNorm, token-wise
linear layers and GELU are `tfattack.models.torch_layers`'.
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, registry, torch_layers
from tfattack.models.torch_layers import timm_record

IMAGE_SIZE = 224
PATCH_SIZE = 16
LN_EPSILON = 1e-6
MLP_RATIO = 4


@dataclasses.dataclass(frozen=True)
class Variant:
    embed: int
    depth: int
    heads: int


VARIANTS = {
    "vit_base_patch16_224": Variant(embed=768, depth=12, heads=12),
    "deit_small_patch16_224": Variant(embed=384, depth=12, heads=6),
}


# --- transformer pieces -----------------------------------------------------------------------------


def mlp(store, x, name: str):
    """timm's Mlp: fc1 -> GELU -> fc2 (dropout is the identity in eval mode)."""
    width = x.shape[-1]
    hidden = torch_layers.gelu(torch_layers.token_linear(store, x, f"{name}.fc1", width * MLP_RATIO))
    return torch_layers.token_linear(store, hidden, f"{name}.fc2", width)


def attention(store, x, name: str, heads: int, bias=None, windows: int = 1):
    """Multi-head self-attention on tokens [B, T, D]: `qkv` gives [B, T, 3, heads, d_head] (q, k, v in that order),
    softmax(q k^T / sqrt(d_head) + bias) v per head, heads concatenated, then `proj`. `bias` is added to the
    attention logits: [heads, T, T] (Swin's relative position bias), or [windows, heads, T, T] when the B rows are
    `windows` consecutive windows of each image (Swin's shifted-window mask folded in)."""
    tokens, width = x.shape[1], x.shape[2]
    head_width = width // heads
    qkv = torch_layers.token_linear(store, x, f"{name}.qkv", 3 * width)
    qkv = tf.transpose(tf.reshape(qkv, [-1, tokens, 3, heads, head_width]), [2, 0, 3, 1, 4])
    query, key, value = qkv[0], qkv[1], qkv[2]                                   # [B, heads, T, d_head]
    logits = tf.matmul(query * tf.cast(head_width ** -0.5, x.dtype), key, transpose_b=True)
    if bias is not None:
        if windows > 1:
            logits = tf.reshape(tf.reshape(logits, [-1, windows, heads, tokens, tokens]) + bias,
                                [-1, heads, tokens, tokens])
        else:
            logits = logits + bias
    weights = tf.cast(tf.nn.softmax(torch_layers.widened(logits), axis=-1), x.dtype)
    mixed = tf.reshape(tf.transpose(tf.matmul(weights, value), [0, 2, 1, 3]), [-1, tokens, width])
    return torch_layers.token_linear(store, mixed, f"{name}.proj", width)


def patch_embed(store, x, name: str, embed: int, patch: int):
    """`{name}.proj`: a patch x patch convolution with stride patch and a bias; NHWC out."""
    y = torch_layers.conv2d(store, x, f"{name}.proj", embed, patch, patch)
    return edits.layer_output(y + store.get(f"{name}.proj.bias", [embed], "zeros"))


def _batch_of(x, tensor):
    """`tensor` [1, ...] repeated along a first axis as long as x's batch."""
    return tf.broadcast_to(tensor, tf.concat([tf.shape(x)[:1], tf.shape(tensor)[1:]], 0))


# --- the network ------------------------------------------------------------------------------------


def block(store, x, name: str, heads: int):
    """timm's pre-norm transformer Block: x + attn(norm1(x)), then x + mlp(norm2(x))."""
    x = backward.residual_add(x, attention(store, torch_layers.layer_norm(store, x, f"{name}.norm1", LN_EPSILON), f"{name}.attn",
                                           heads))
    return backward.residual_add(x, mlp(store, torch_layers.layer_norm(store, x, f"{name}.norm2", LN_EPSILON), f"{name}.mlp"))


def vision_transformer(store, x, variant: Variant, num_classes: int = 1000):
    """The forward pass on [N, 224, 224, 3] normalised RGB; returns (logits, end points)."""
    end_points = backward.EndPoints()
    patches = patch_embed(store, x, "patch_embed", variant.embed, PATCH_SIZE)
    grid = patches.shape[1] * patches.shape[2]
    patches = tf.reshape(patches, [-1, grid, variant.embed])
    cls_token = store.get("cls_token", [1, 1, variant.embed], "small")
    tokens = tf.concat([_batch_of(patches, cls_token), patches], axis=1)
    net = tokens + store.get("pos_embed", [1, grid + 1, variant.embed], "small")
    for index in range(variant.depth):
        net = edits.end_point(end_points, f"blocks.{index}", block(store, net, f"blocks.{index}", variant.heads))
    net = edits.end_point(end_points, "norm", torch_layers.layer_norm(store, net, "norm", LN_EPSILON))
    logits = torch_layers.linear(store, net[:, 0], "head", num_classes)   # class-token pooling
    end_points["Logits"] = logits
    return logits, end_points


class TimmVisionTransformer(torch_layers.TorchStateDictNetwork):
    """timm's VisionTransformer whose variables are named by its state-dict keys."""

    family = "Vision Transformer variant"
    classifier_bias = "head.bias"

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        self.variant = VARIANTS[architecture]
        forward = functools.partial(vision_transformer, variant=self.variant, num_classes=num_classes)
        super().__init__(forward, architecture, IMAGE_SIZE, seed=seed)


build = torch_layers.fixed_size_builder(TimmVisionTransformer, IMAGE_SIZE)

for _architecture, _variant in VARIANTS.items():
    registry.register_architecture(_architecture, build)
    # After a quarter, a half and three quarters of the blocks.
    features.register_aliases(_architecture, {alias: f"blocks.{_variant.depth * share // 4 - 1}"
                                              for alias, share in zip(features.ALIASES, (1, 2, 3))})


# --- Weight records ---------------------------------------------------------------------------------

FAMILY = "timm Vision Transformers (ViT, DeiT)"
SPECS = (
    timm_record("timm_vit_base_patch16_224", "vit_base_patch16_224", "timm/vit_base_patch16_224.augreg_in21k_ft_in1k",
                84.534, preprocessing="inception", licence="apache-2.0",
                paper="Dosovitskiy et al., An image is worth 16x16 words: Transformers for image recognition at "
                      "scale, ICLR 2021; Steiner et al., How to train your ViT? Data, augmentation, and "
                      "regularization in vision transformers, TMLR 2022",
                crop="crop_pct 0.9, bicubic"),
    timm_record("timm_deit_small_patch16_224", "deit_small_patch16_224", "timm/deit_small_patch16_224.fb_in1k",
                79.856, preprocessing="torchvision", licence="apache-2.0",
                paper="Touvron et al., Training data-efficient image transformers & distillation through attention, "
                      "ICML 2021",
                crop="crop_pct 0.9, bicubic"),
)

for _spec_record in SPECS:
    registry.register(_spec_record)
