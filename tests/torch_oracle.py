"""The PyTorch reference side of the ports' numerics tests, run as its own process: torch and TensorFlow in one
process can crash on import (triton's extension after TensorFlow's libraries), and an oracle should not share a
process with what it checks anyway.

    python tests/torch_oracle.py torchvision ARCHITECTURE SEED IMAGES.npy WEIGHTS.npy OUT_DIR [--robustness]
        [--sgm_gamma=G]   (the gradient under SGM's hooks, as its authors apply them to DenseNets)
    python tests/torch_oracle.py timm MODEL SEED IMAGES.npy WEIGHTS.npy OUT_DIR [--taps=a,b] [--unit_norm_scale]
    python tests/torch_oracle.py feature_denoising ARCHITECTURE SEED IMAGES.npy WEIGHTS.npy OUT_DIR
    python tests/torch_oracle.py shapes ARCHITECTURE 0 - - -      (the state dict's keys and shapes as JSON)
    python tests/torch_oracle.py timm_shapes MODEL 0 - - -

builds torchvision's ARCHITECTURE with random weights and random batch-norm statistics (so no batch norm is the
identity), writes its state dict with torch.save (zip layout; with --robustness, as the robustness library's
legacy-format training checkpoint), and writes OUT_DIR/reference.npz: the logits for IMAGES ([N, H, W, 3] RGB in
[0, 1], normalised as torchvision's ImageNet weights expect), the gradient of sum(logits * WEIGHTS) w.r.t. the
images (NHWC), and for ResNets the output of every stage (`layer1`..`layer4`, NHWC).

`timm` does the same for timm's MODEL (`timm.create_model(MODEL)`): batch-norm and layer-norm parameters are
randomised too, the weights are written with safetensors (timm's Hugging Face format) as weights.safetensors, the
images are normalised with the model's own mean/std, and `--taps` names modules whose outputs are saved too (4-D
outputs transposed to NHWC). `--unit_norm_scale` keeps batch-norm scales at 1, as in timm's ports of TF
checkpoints, whose batch norms have no scale; `--calibrate_norms` sets the batch-norm statistics to the images' own
(see `calibrate_batch_norms`).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_model(torchvision, architecture: str):
    """torchvision's model of that name; wide_resnet50_4 is the robustness library's (not in torchvision).
    inception_v3 is built as torchvision builds it for its IMAGENET1K_V1 weights (inception_v3(weights=...)):
    transform_input=True (the published weights expect [-1, 1] inputs and the model re-maps ImageNet-normalised
    ones), aux_logits=True (the file holds the auxiliary head), init_weights=False (the weights are loaded over it)."""
    if architecture == "wide_resnet50_4":
        from torchvision.models.resnet import Bottleneck, ResNet
        return ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=64 * 4)
    if architecture == "inception_v3":
        return torchvision.models.inception_v3(weights=None, transform_input=True, aux_logits=True,
                                               init_weights=False)
    return getattr(torchvision.models, architecture)(weights=None)


def randomise_norms(torch, model, seed: int, unit_norm_scale: bool = False):
    """Random batch-norm and layer-norm parameters and statistics, so that no normalisation is the identity."""
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                if not unit_norm_scale:
                    module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            elif isinstance(module, torch.nn.LayerNorm) and module.elementwise_affine:
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()


def reference_model(torch, torchvision, architecture: str, seed: int):
    torch.manual_seed(seed)
    return randomise_norms(torch, build_model(torchvision, architecture), seed)


def logits_and_gradient(torch, model, images, weights, mean, std):
    """The model's logits on IMAGES ([N, H, W, 3] in [0, 1]) normalised by mean/std, and the NHWC gradient of
    sum(logits * WEIGHTS) w.r.t. the images."""
    pixels = torch.tensor(images.transpose(0, 3, 1, 2), requires_grad=True)
    normalised = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    logits = model(normalised)
    (logits * torch.tensor(weights)).sum().backward()
    return logits.detach().numpy(), pixels.grad.numpy().transpose(0, 2, 3, 1)


def hook_outputs(model, names, channels_last=False):
    """Registers forward hooks that keep the named modules' outputs (4-D ones as NHWC arrays; `channels_last`: the
    model's maps are NHWC already, as timm's Swin's are)."""
    outputs = {}

    def keep(name):
        def hook(module, inputs, output):
            value = output.detach().numpy()
            outputs[name] = value.transpose(0, 2, 3, 1) if value.ndim == 4 and not channels_last else value
        return hook

    for name in names:
        model.get_submodule(name).register_forward_hook(keep(name))
    return outputs


def robustness_checkpoint(torch, state):
    """The robustness library's layout: an AttackerModel's weights twice, its normaliser, the training state."""
    return {"model": {**{f"module.model.{k}": v for k, v in state.items()},
                      **{f"module.attacker.model.{k}": v for k, v in state.items()},
                      "module.normalizer.new_mean": torch.tensor(MEAN).reshape(3, 1, 1),
                      "module.normalizer.new_std": torch.tensor(STD).reshape(3, 1, 1)},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
            "schedule": None, "epoch": 90}


def skip_gradient_hooks(model, gamma: float):
    """SGM on a DenseNet as its authors' code does it: the gradient through every ReLU module outside the transitions
    (both of each dense layer's, and the stem's) is multiplied by sqrt(gamma)."""
    factor = gamma ** 0.5
    for name, module in model.named_modules():
        if type(module).__name__ == "ReLU" and "relu" in name and "transition" not in name:
            module.inplace = False  # a full backward hook cannot wrap an in-place op
            module.register_full_backward_hook(lambda module, grad_in, grad_out: (grad_in[0] * factor,))


def torchvision_reference(architecture, seed, images, weights, out_dir, robustness=False, sgm_gamma=None):
    import torch
    import torchvision

    model = reference_model(torch, torchvision, architecture, seed)
    if sgm_gamma is not None:
        skip_gradient_hooks(model, sgm_gamma)
    if robustness:
        torch.save(robustness_checkpoint(torch, model.state_dict()), os.path.join(out_dir, "weights.ckpt"),
                   _use_new_zipfile_serialization=False)
    else:
        torch.save(model.state_dict(), os.path.join(out_dir, "weights.pth"))
    stages = hook_outputs(model, [f"layer{index}" for index in range(1, 5)] if hasattr(model, "layer1") else [])
    logits, gradient = logits_and_gradient(torch, model, images, weights, MEAN, STD)
    np.savez(os.path.join(out_dir, "reference.npz"), logits=logits, gradient=gradient, **stages)


def calibrate_batch_norms(torch, model, images, mean, std):
    """Running statistics from IMAGES' own batch statistics (one training-mode pass, cumulative average), so that
    every batch norm normalises, as a trained network's do; scales and offsets stay random. Without it, random
    statistics let a deep network's activations grow until softmaxes saturate and float32 rounding decides."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    pixels = torch.tensor(images.transpose(0, 3, 1, 2))
    model.train()
    with torch.no_grad():
        model((pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])
    return model.eval()


def timm_model(model_name: str, seed: int = 0, unit_norm_scale: bool = False):
    import timm
    import torch
    torch.manual_seed(seed)
    return randomise_norms(torch, timm.create_model(model_name, pretrained=False), seed, unit_norm_scale)


def timm_reference(model_name, seed, images, weights, out_dir, taps=(), unit_norm_scale=False, calibrate_norms=False):
    import torch
    from safetensors.torch import save_file

    model = timm_model(model_name, seed, unit_norm_scale)
    if calibrate_norms:
        calibrate_batch_norms(torch, model, images, model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out_dir, "weights.safetensors"))
    outputs = hook_outputs(model, taps, getattr(model, "output_fmt", "NCHW") == "NHWC")
    config = model.pretrained_cfg
    logits, gradient = logits_and_gradient(torch, model, images, weights, config["mean"], config["std"])
    np.savez(os.path.join(out_dir, "reference.npz"), logits=logits, gradient=gradient, **outputs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("family", choices=["torchvision", "timm", "feature_denoising", "shapes", "timm_shapes"])
    parser.add_argument("architecture")
    parser.add_argument("seed", type=int)
    parser.add_argument("images")
    parser.add_argument("weights")
    parser.add_argument("out_dir")
    parser.add_argument("--robustness", action="store_true")
    parser.add_argument("--taps", default="")
    parser.add_argument("--unit_norm_scale", action="store_true")
    parser.add_argument("--calibrate_norms", action="store_true")
    parser.add_argument("--sgm_gamma", type=float, default=None)
    args = parser.parse_args()
    if args.family in ("shapes", "timm_shapes"):  # the state dict's keys and shapes, as JSON on stdout
        import json
        if args.family == "shapes":
            import torchvision
            state = build_model(torchvision, args.architecture).state_dict()
        else:
            state = timm_model(args.architecture).state_dict()
        print(json.dumps({k: list(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}))
        return
    if args.family == "feature_denoising":  # tests/feature_denoising_torch.py: no published PyTorch reference
        import feature_denoising_torch
        feature_denoising_torch.reference(args.architecture, args.seed, np.load(args.images).astype(np.float32),
                                          np.load(args.weights).astype(np.float32), args.out_dir)
        return
    if args.family == "timm":
        timm_reference(args.architecture, args.seed, np.load(args.images).astype(np.float32),
                       np.load(args.weights).astype(np.float32), args.out_dir,
                       [t for t in args.taps.split(",") if t], args.unit_norm_scale, args.calibrate_norms)
        return
    torchvision_reference(args.architecture, args.seed, np.load(args.images).astype(np.float32),
                          np.load(args.weights).astype(np.float32), args.out_dir, args.robustness, args.sgm_gamma)


if __name__ == "__main__":
    main()
