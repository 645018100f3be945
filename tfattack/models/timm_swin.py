"""timm's Swin Transformer Swin-T (`swin_tiny_patch4_window7_224`) in TF2, reading timm's safetensors file without
torch. Liu et al., Swin Transformer: Hierarchical vision transformer using shifted windows, ICCV 2021.

The layout is timm 1.0's swin_transformer.py, channels-last (NHWC) throughout:

  patch_embed       a 4x4/4 convolution with bias to 96 channels (56 x 56 tokens), then LayerNorm `patch_embed.norm`
  layers.0..3       stages of 2, 2, 6, 2 blocks at widths 96, 192, 384, 768 (3, 6, 12, 24 heads of 32 channels).
                    Stages 1..3 START with `downsample` (patch merging): each 2x2 neighbourhood's four tokens are
                    concatenated in the order (0, 0), (1, 0), (0, 1), (1, 1) (row offset first), LayerNorm
                    `downsample.norm` over the 4C channels, linear `downsample.reduction` to 2C without bias
                    (56 -> 28 -> 14 -> 7 px).
  norm              the final LayerNorm; global average pooling; the linear classifier `head.fc`.

A block `layers.S.blocks.B`: x + attn(norm1(x)), then x + mlp(norm2(x)) (LayerNorm eps 1e-5, torch's default). The
attention runs within non-overlapping 7x7 windows; every second block (B odd) first rolls the map by -3 pixels on both
axes (cyclic shift) and rolls it back after, and masks the attention between tokens that the roll brought together
from different regions (-100 on their logits, as timm). Where a stage's map is no larger than the window (stage 3's
7x7 map) the window is the whole map and no block shifts. Each head adds a relative position bias to its logits, read
from `attn.relative_position_bias_table` [(2*7-1)^2, heads] at the index of each token pair's offset. Windows are
batched (reshape/transpose and tf.roll), with no loop over them.

timm 1.0 keeps `relative_position_index` and `attn_mask` as non-persistent buffers (not in its state dicts), but
the files on the Hugging Face hub were written when they were persistent; `load_state_dict` accepts a file with or
without them, and checks those it has against the ones computed here.

End points carry timm's module names: every block (`layers.2.blocks.5`) and stage (`layers.2`, the same tensor as its
last block), NHWC maps, and `norm`.
"""

from __future__ import annotations

import functools
from typing import Dict, Mapping

import numpy as np
import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, layers, registry, torch_layers
from tfattack.models.timm_vit import attention, mlp, patch_embed
from tfattack.models.torch_layers import layer_norm, timm_record, token_linear
from tfattack.names import first_few

IMAGE_SIZE = 224
PATCH_SIZE = 4
EMBED = 96
DEPTHS = (2, 2, 6, 2)
HEADS = (3, 6, 12, 24)
WINDOW = 7
LN_EPSILON = 1e-5
MASKED = -100.0   # timm's value on the logits of token pairs a shifted window must not mix

BIAS_TABLE = "relative_position_bias_table"


def window_and_shift(resolution: int, block_index: int):
    """(window, shift) of a block on a resolution x resolution map: timm shrinks the window to a map no larger than
    it and then does not shift."""
    if resolution <= WINDOW:
        return resolution, 0
    return WINDOW, (WINDOW // 2 if block_index % 2 else 0)


def relative_position_index(window: int) -> np.ndarray:
    """[window^2, window^2]: the bias-table row of each (query, key) token pair of a window (row-major tokens),
    (dy + window - 1) * (2 * window - 1) + (dx + window - 1) for the offset (dy, dx) = query - key."""
    rows, cols = np.divmod(np.arange(window * window), window)
    dy = rows[:, None] - rows[None, :] + window - 1
    dx = cols[:, None] - cols[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def shifted_window_mask(resolution: int, window: int, shift: int) -> np.ndarray:
    """[windows, window^2, window^2], 0 or -100: after the cyclic shift, the map's last `window` rows (columns) hold
    two regions, split `shift` from the end; tokens of different regions (row band x column band) do not attend
    to each other."""
    bands = np.zeros(resolution, np.int64)
    bands[resolution - window:resolution - shift] = 1
    bands[resolution - shift:] = 2
    region = bands[:, None] * 3 + bands[None, :]                       # [H, W]
    count = resolution // window
    per_window = region.reshape(count, window, count, window).transpose(0, 2, 1, 3).reshape(-1, window * window)
    differs = per_window[:, :, None] != per_window[:, None, :]
    return np.where(differs, MASKED, 0.0).astype(np.float32)


def partition(x, window: int):
    """[N, H, W, C] -> [N * windows, window^2, C], windows in row-major order, each window's tokens row-major."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    grid = tf.reshape(x, [-1, height // window, window, width // window, window, channels])
    return tf.reshape(tf.transpose(grid, [0, 1, 3, 2, 4, 5]), [-1, window * window, channels])


def merge(windows, window: int, height: int, width: int):
    """The inverse of `partition`: [N * windows, window^2, C] -> [N, H, W, C]."""
    channels = windows.shape[-1]
    grid = tf.reshape(windows, [-1, height // window, width // window, window, window, channels])
    return tf.reshape(tf.transpose(grid, [0, 1, 3, 2, 4, 5]), [-1, height, width, channels])


def window_attention(store, x, name: str, heads: int, window: int, shift: int):
    """(Shifted-)window multi-head self-attention on a map [N, H, W, C], with the relative position bias."""
    height, width = x.shape[1], x.shape[2]
    table = store.get(f"{name}.{BIAS_TABLE}", [(2 * window - 1) ** 2, heads], "small")
    area = window * window
    bias = tf.transpose(tf.reshape(tf.gather(table, relative_position_index(window).reshape(-1)),
                                   [area, area, heads]), [2, 0, 1])        # [heads, area, area]
    windows = (height // window) * (width // window)
    if shift:
        x = tf.roll(x, shift=[-shift, -shift], axis=[1, 2])
        mask = tf.constant(shifted_window_mask(height, window, shift), x.dtype)
        bias = bias[None] + mask[:, None]                                  # [windows, heads, area, area]
    y = attention(store, partition(x, window), name, heads, bias=bias, windows=windows if shift else 1)
    y = merge(y, window, height, width)
    return tf.roll(y, shift=[shift, shift], axis=[1, 2]) if shift else y


def swin_block(store, x, name: str, heads: int, block_index: int):
    """timm's SwinTransformerBlock: x + (shifted-)window attention(norm1(x)), then x + mlp(norm2(x))."""
    window, shift = window_and_shift(x.shape[1], block_index)
    y = window_attention(store, layer_norm(store, x, f"{name}.norm1", LN_EPSILON), f"{name}.attn", heads, window,
                         shift)
    x = backward.residual_add(x, y)
    return backward.residual_add(x, mlp(store, layer_norm(store, x, f"{name}.norm2", LN_EPSILON), f"{name}.mlp"))


def patch_merging(store, x, name: str):
    """[N, H, W, C] -> [N, H/2, W/2, 2C]: 2x2 neighbourhoods concatenated (column offset major, row offset minor),
    LayerNorm, linear without bias."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    grid = tf.reshape(x, [-1, height // 2, 2, width // 2, 2, channels])           # n, h, dy, w, dx, c
    merged = tf.reshape(tf.transpose(grid, [0, 1, 3, 4, 2, 5]), [-1, height // 2, width // 2, 4 * channels])
    return token_linear(store, layer_norm(store, merged, f"{name}.norm", LN_EPSILON), f"{name}.reduction",
                        2 * channels, bias=False)


def swin_transformer(store, x, num_classes: int = 1000):
    """The forward pass on [N, 224, 224, 3] normalised RGB; returns (logits, end points)."""
    end_points = backward.EndPoints()
    net = layer_norm(store, patch_embed(store, x, "patch_embed", EMBED, PATCH_SIZE), "patch_embed.norm", LN_EPSILON)
    for stage, (depth, heads) in enumerate(zip(DEPTHS, HEADS)):
        if stage:
            net = patch_merging(store, net, f"layers.{stage}.downsample")
        for index in range(depth):
            name = f"layers.{stage}.blocks.{index}"
            net = edits.end_point(end_points, name, swin_block(store, net, name, heads, index))
        net = edits.end_point(end_points, f"layers.{stage}", net)
    net = edits.end_point(end_points, "norm", layer_norm(store, net, "norm", LN_EPSILON))
    logits = torch_layers.linear(store, layers.global_avg_pool(net, keepdims=False), "head.fc", num_classes)
    end_points["Logits"] = logits
    return logits, end_points


def buffers(resolution: int = IMAGE_SIZE // PATCH_SIZE) -> Dict[str, np.ndarray]:
    """The buffers timm once wrote to its state dicts: each block's `attn.relative_position_index` (int64) and each
    shifted block's `attn_mask`, as this port computes them."""
    values = {}
    for stage, depth in enumerate(DEPTHS):
        size = resolution // 2 ** stage
        for index in range(depth):
            window, shift = window_and_shift(size, index)
            values[f"layers.{stage}.blocks.{index}.attn.relative_position_index"] = relative_position_index(window)
            if shift:
                values[f"layers.{stage}.blocks.{index}.attn_mask"] = shifted_window_mask(size, window, shift)
    return values


class TimmSwinTransformer(torch_layers.TorchStateDictNetwork):
    """timm's SwinTransformer whose variables are named by its state-dict keys."""

    family = "Swin Transformer variant"
    classifier_bias = "head.fc.bias"

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        super().__init__(functools.partial(swin_transformer, num_classes=num_classes), architecture, IMAGE_SIZE,
                         seed=seed)

    def tf_axes(self, name: str, ndim: int):
        if name.endswith(BIAS_TABLE):  # [table rows, heads] as in PyTorch, not a linear weight
            return tuple(range(ndim))
        return torch_layers.torch_to_tf_axes(ndim)

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray], source: str, model_name: str) -> int:
        """Also takes a file that holds timm's former persistent buffers, if they equal this network's."""
        expected = buffers()
        present = {k: v for k, v in state_dict.items() if k not in expected}
        wrong = [k for k in state_dict if k in expected and not (
            tuple(np.shape(state_dict[k])) == expected[k].shape and np.array_equal(state_dict[k], expected[k]))]
        if wrong:
            raise torch_layers.StateDictMismatchError(
                f"{source} has buffer(s) that differ from model {model_name!r}'s ({self.scope}; another window size "
                f"or resolution?): {first_few(wrong, 3)}")
        return super().load_state_dict(present, source, model_name)


build = torch_layers.fixed_size_builder(TimmSwinTransformer, IMAGE_SIZE)

registry.register_architecture("swin_tiny_patch4_window7_224", build)
# The stage outputs at 56, 28 and 14 px (strides 4, 8, 16), as torchvision ResNets' layer1..layer3.
features.register_aliases("swin_tiny_patch4_window7_224", {"early": "layers.0", "mid": "layers.1", "late": "layers.2"})

FAMILY = "timm Swin Transformer"
SPECS = (timm_record("timm_swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224",
                     "timm/swin_tiny_patch4_window7_224.ms_in1k", 81.388, preprocessing="torchvision", licence="mit",
                     paper="Liu et al., Swin Transformer: Hierarchical vision transformer using shifted windows, "
                           "ICCV 2021",
                     crop="crop_pct 0.9, bicubic"),)

for _spec_record in SPECS:
    registry.register(_spec_record)
