"""A PyTorch transcription of the feature-denoising release's networks (facebookresearch/ImageNet-Adversarial-
Training: resnet_model.py, nets.py), the reference of tfattack's port in tests/test_models_feature_denoising.py. It
runs only inside tests/torch_oracle.py's process. No published PyTorch implementation exists, and the release's own
code needs TF1 and tensorpack: this one is written from the release's graph in NCHW, as the release computes it,
with TensorFlow's SAME padding spelled out per convolution and pool, and its weights drawn at random into the npz
layout tensorpack's dump writes (`name:0`, kernels HWIO).
"""

from __future__ import annotations

import numpy as np

BLOCKS = {"fd_resnet152": ((3, 8, 36, 3), 1, 64, ""), "fd_resnet152_denoise": ((3, 8, 36, 3), 1, 64, "group"),
          "fd_resnext101_denoise_all": ((3, 4, 23, 3), 32, 8, "block")}


class Weights:
    """Draws each named weight once, on first use: He-scaled kernels, batch-norm scales and offsets at random, and
    batch-norm statistics near those of the tensor they normalise on this first pass (as a trained network's are),
    so that activations stay finite through 100 random layers and the dot-product blocks, which are cubic in their
    input; no batch norm is the identity."""

    def __init__(self, torch, seed):
        self.torch, self.rng, self.arrays = torch, np.random.default_rng(seed), {}

    def get(self, name, shape, kind, observed=None):
        if name not in self.arrays:
            if kind == "kernel" and "embedding" in name:  # the release's initialiser: keeps the softmax unsaturated
                value = self.rng.normal(size=shape) * 0.01
            elif kind == "kernel":
                value = self.rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:3]))
            elif kind == "gamma" and name.endswith("non_local/conv/bn/gamma"):
                # 33 dot-product blocks in a row, each amplifying rounding a little more: smaller still (the
                # operation itself is checked against its formula on its own).
                value = self.rng.uniform(0.03, 0.1, shape)
            elif kind == "gamma" and name.endswith(("conv3/bn/gamma", "/conv/bn/gamma")):
                # A residual branch's last batch norm, which the release initialises to zero: small, so that each
                # block stays near the identity and rounding does not grow through 100 random blocks.
                value = self.rng.uniform(0.1, 0.3, shape)
            elif kind == "gamma":
                value = self.rng.uniform(0.5, 1.5, shape)
            elif kind == "mean":
                mean, std = (t.detach().numpy() for t in (observed.mean(dim=(0, 2, 3)), observed.std(dim=(0, 2, 3))))
                value = mean + 0.1 * std * self.rng.normal(size=shape)
            elif kind == "variance":
                # Floored at a tenth of the layer's mean square: a channel that is nearly constant over the image
                # (a non-local mean is) divided by its own tiny spread would amplify float32 rounding beyond what
                # any two implementations agree on.
                y = observed.detach().double()
                value = (y.var(dim=(0, 2, 3)).numpy() * self.rng.uniform(0.5, 1.5, shape)
                         + 0.1 * float((y * y).mean()))
            else:
                value = self.rng.normal(size=shape) * 0.1
            self.arrays[name] = value.astype(np.float32)
        return self.torch.tensor(self.arrays[name])


def tf_same_pad(F, x, kernel, stride, value=0.0):
    """Pads NCHW x as TensorFlow's SAME does: total = max((ceil(n/s) - 1) s + k - n, 0), the odd pixel after."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad takes the last axis first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def forward(torch, weights, x, architecture):
    F = torch.nn.functional
    blocks, groups, group_width, denoise = BLOCKS[architecture]

    def conv(x, name, filters, kernel, stride=1, split=1, bn=True):
        w = weights.get(f"{name}/W", (kernel, kernel, x.shape[1] // split, filters), "kernel")
        y = F.conv2d(tf_same_pad(F, x, kernel, stride), w.permute(3, 2, 0, 1), stride=stride, groups=split)
        if not bn:
            return y
        channels = (filters,)
        gamma = weights.get(f"{name}/bn/gamma", channels, "gamma")
        beta = weights.get(f"{name}/bn/beta", channels, "beta")
        mean = weights.get(f"{name}/bn/mean/EMA", channels, "mean", observed=y)
        variance = weights.get(f"{name}/bn/variance/EMA", channels, "variance", observed=y)
        return F.batch_norm(y, mean, variance, gamma, beta, training=False, eps=1e-5)

    def denoising(x, name, embed, softmax):
        n, c, h, w = x.shape
        if embed:
            theta, phi = conv(x, f"{name}/embedding_theta", c // 2, 1, bn=False), \
                conv(x, f"{name}/embedding_phi", c // 2, 1, bn=False)
        else:
            theta = phi = x
        # The release's einsums: f[n, a, b, c, d] = sum_i theta[n, i, a, b] phi[n, i, c, d].
        f = torch.einsum("niab,nicd->nabcd", theta, phi)
        if softmax:
            f = torch.softmax(f.reshape(n, h * w, h * w) / np.sqrt(theta.shape[1]), dim=-1).reshape(n, h, w, h, w)
        out = torch.einsum("nabcd,nicd->niab", f, x)
        if not softmax:
            out = out / (h * w)
        return x + conv(out, f"{name}/conv", c, 1)

    x = F.relu(conv(x, "conv0", 64, 7, 2))
    x = F.max_pool2d(tf_same_pad(F, x, 3, 2, value=float("-inf")), 3, 2)
    for group, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for index in range(count):
            name, stride = f"group{group}/block{index}", (2 if group > 0 and index == 0 else 1)
            width = planes * group_width * groups // 64
            y = F.relu(conv(x, f"{name}/conv1", width, 1))
            y = F.relu(conv(y, f"{name}/conv2", width, 3, stride, groups))
            y = conv(y, f"{name}/conv3", planes * 4, 1)
            shortcut = conv(x, f"{name}/convshortcut", planes * 4, 1, stride) if x.shape[1] != planes * 4 else x
            x = F.relu(y + shortcut)
            if denoise == "block":
                x = denoising(x, f"{name}/non_local", embed=False, softmax=False)
        if denoise == "group":
            x = denoising(x, f"group{group}_denoise", embed=True, softmax=True)
    pooled = x.mean(dim=(2, 3))
    return pooled @ weights.get("linear/W", (pooled.shape[1], 1000), "kernel") + \
        weights.get("linear/b", (1000,), "beta")


def reference(architecture, seed, images, logit_weights, out_dir):
    """Writes OUT_DIR/weights.npz (tensorpack's layout) and reference.npz (logits, NHWC input gradient) for RGB
    images in [0, 1], fed as the release feeds them: BGR, pixel * 2/255 - 1."""
    import os

    import torch

    weights = Weights(torch, seed)
    pixels = torch.tensor(images.transpose(0, 3, 1, 2), requires_grad=True)
    logits = forward(torch, weights, pixels.flip(1) * 2.0 - 1.0, architecture)
    (logits * torch.tensor(logit_weights)).sum().backward()
    np.savez(os.path.join(out_dir, "weights.npz"), **{f"{name}:0": value for name, value in weights.arrays.items()})
    np.savez(os.path.join(out_dir, "reference.npz"), logits=logits.detach().numpy(),
             gradient=pixels.grad.numpy().transpose(0, 2, 3, 1))
