"""Per-model speed: forward and forward+input-gradient seconds per image, FLOP/s, peak memory."""

from __future__ import annotations

from typing import Dict, List

import tfattack
from tfattack.bench import timing


def measure(name: str, batch: int, *, jit_compile: bool = False, model_dir=None) -> Dict:
    """Measures one model in this process (call it in a fresh process for a meaningful peak memory)."""
    spec = tfattack.models.get(name)
    try:
        model = tfattack.models.load(name, random_weights=True)
        weights = "random (self-made; speed does not depend on values)"
    except ValueError:
        model = tfattack.models.load(name, model_dir=model_dir)
        weights = model.info.get("checkpoint", "file")
    result = timing.time_model(model, batch, spec.image_size, jit_compile=jit_compile)
    result.update(model=name, batch=batch, image_size=spec.image_size, jit_compile=jit_compile, weights=str(weights))
    return result


def measure_in_subprocess(name: str, batch: int, jit_compile: bool, tool: List[str], model_dir=None) -> Dict:
    """`tool`: the benchmark command line to run again, e.g. [python, -m, tfattack.cli.benchmark]."""
    command = list(tool) + ["--what=_one_model", f"--models={name}", f"--batch_size={batch}",
               f"--jit_compile={jit_compile}"]
    if model_dir:
        command.append(f"--model_dir={model_dir}")
    return timing.json_from_fresh_process(command, model=name, batch=batch, jit_compile=jit_compile)


def markdown_table(rows: List[Dict], matmul_rate: float) -> str:
    lines = [f"Machine float32 matmul rate: {matmul_rate / 1e9:.1f} GFLOP/s (2048x2048).", "",
             "| model | input | batch | XLA | forward ms/img | fwd+grad ms/img | GFLOPs/img | achieved / matmul | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | {r['batch']} | {r['jit_compile']} | error: {r['error']} | | | | |")
            continue
        flops = r["forward_flops"] / r["batch"]
        achieved = flops / r["forward_s_per_image"] / matmul_rate if r["forward_s_per_image"] else 0.0
        lines.append(f"| {r['model']} | {r['image_size']} | {r['batch']} | {r['jit_compile']} | "
                     f"{1e3 * r['forward_s_per_image']:.1f} | {1e3 * r['gradient_s_per_image']:.1f} | "
                     f"{flops / 1e9:.2f} | {achieved:.2f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)
