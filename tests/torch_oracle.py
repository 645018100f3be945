"""The PyTorch reference side of the ports' numerics tests, run as its own process: torch and TensorFlow in one
process can crash on import (triton's extension after TensorFlow's libraries), and an oracle should not share a
process with what it checks anyway.

    python tests/torch_oracle.py torchvision ARCHITECTURE SEED IMAGES.npy WEIGHTS.npy OUT_DIR [--robustness]
    python tests/torch_oracle.py shapes ARCHITECTURE 0 - - -      (the state dict's keys and shapes as JSON)

builds torchvision's ARCHITECTURE with random weights and random batch-norm statistics (so no batch norm is the
identity), writes its state dict with torch.save (zip layout; with --robustness, as the robustness library's
legacy-format training checkpoint), and writes OUT_DIR/reference.npz: the logits for IMAGES ([N, H, W, 3] RGB in
[0, 1], normalised as torchvision's ImageNet weights expect), the gradient of sum(logits * WEIGHTS) w.r.t. the
images (NHWC), and for ResNets the output of every stage (`layer1`..`layer4`, NHWC).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_model(torchvision, architecture: str):
    """torchvision's model of that name; wide_resnet50_4 is the robustness library's (not in torchvision)."""
    if architecture == "wide_resnet50_4":
        from torchvision.models.resnet import Bottleneck, ResNet
        return ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=64 * 4)
    return getattr(torchvision.models, architecture)(weights=None)


def reference_model(torch, torchvision, architecture: str, seed: int):
    torch.manual_seed(seed)
    model = build_model(torchvision, architecture)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
    return model.eval()


def robustness_checkpoint(torch, state):
    """The robustness library's layout: an AttackerModel's weights twice, its normaliser, the training state."""
    return {"model": {**{f"module.model.{k}": v for k, v in state.items()},
                      **{f"module.attacker.model.{k}": v for k, v in state.items()},
                      "module.normalizer.new_mean": torch.tensor(MEAN).reshape(3, 1, 1),
                      "module.normalizer.new_std": torch.tensor(STD).reshape(3, 1, 1)},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
            "schedule": None, "epoch": 90}


def torchvision_reference(architecture, seed, images, weights, out_dir, robustness=False):
    import torch
    import torchvision

    model = reference_model(torch, torchvision, architecture, seed)
    if robustness:
        torch.save(robustness_checkpoint(torch, model.state_dict()), os.path.join(out_dir, "weights.ckpt"),
                   _use_new_zipfile_serialization=False)
    else:
        torch.save(model.state_dict(), os.path.join(out_dir, "weights.pth"))
    stages = {}
    for index in range(1, 5 if hasattr(model, "layer1") else 1):  # ResNets' stages
        getattr(model, f"layer{index}").register_forward_hook(
            lambda module, inputs, output, name=f"layer{index}": stages.update({name: output.detach()}))
    pixels = torch.tensor(images.transpose(0, 3, 1, 2), requires_grad=True)
    normalised = (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    logits = model(normalised)
    (logits * torch.tensor(weights)).sum().backward()
    np.savez(os.path.join(out_dir, "reference.npz"), logits=logits.detach().numpy(),
             gradient=pixels.grad.numpy().transpose(0, 2, 3, 1),
             **{name: value.numpy().transpose(0, 2, 3, 1) for name, value in stages.items()})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("family", choices=["torchvision", "shapes"])
    parser.add_argument("architecture")
    parser.add_argument("seed", type=int)
    parser.add_argument("images")
    parser.add_argument("weights")
    parser.add_argument("out_dir")
    parser.add_argument("--robustness", action="store_true")
    args = parser.parse_args()
    if args.family == "shapes":  # the state dict's keys and shapes, as JSON on stdout
        import json
        import torchvision
        state = build_model(torchvision, args.architecture).state_dict()
        print(json.dumps({k: list(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}))
        return
    torchvision_reference(args.architecture, args.seed, np.load(args.images).astype(np.float32),
                          np.load(args.weights).astype(np.float32), args.out_dir, args.robustness)


if __name__ == "__main__":
    main()
