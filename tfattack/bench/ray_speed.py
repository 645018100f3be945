"""Crafting on Ray against crafting here: images per second at 1 and 2 workers, byte-identity, and the Ray path's
overhead per batch (issue 18's scaling row).

Every run crafts the same images with the same attack (MI-FGSM, 10 steps, eps 16, on EfficientNet-Lite0, oneDNN off
so that the engines' bytes can be compared) into a fresh folder, warm: the local attack is traced and each pool's
workers are started and traced on two batches before the timed run. The overhead is measured twice: end to end (the
1-worker run's wall time minus the local run's, per batch) and per call (one batch sent to a warm worker with
`ray.get`, minus the same batch crafted in this process).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from typing import Dict, Sequence

WORKER_COUNTS = (1, 2)
BATCH = 2
ATTACK = ("mi_fgsm", {"eps": 16 / 255, "steps": 10, "seed": 0})
MEMBERS = ("efficientnet_lite0",)


def _files(folder: str) -> Dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if name.endswith(".png")}


def measure(dataset, model_dir=None, worker_counts: Sequence[int] = WORKER_COUNTS, batch_size: int = BATCH,
            log=print) -> Dict:
    """The scaling row's figures on `dataset` (a `tfattack.data.Dataset`), as a JSON-ready dict."""
    import ray

    from tfattack import data, pipeline, runs, scale

    ensemble = scale.EnsembleRecipe(tuple((name, 1.0) for name in MEMBERS), model_dir=model_dir)
    recipe = scale.AttackRecipe(*ATTACK)
    model, attack = ensemble.build(), recipe.build()
    root = tempfile.mkdtemp(prefix="ray_speed_")
    warm = dataset.select(dataset.ids[:batch_size])

    def craft(subset, name, crafter=None) -> float:
        folder = os.path.join(root, name)
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        pipeline.attack_dataset(subset, folder, model, attack, batch_size=batch_size, targeted=False, crafter=crafter)
        return time.perf_counter() - started

    try:
        craft(warm, "warm")
        local = craft(dataset, "local")
        batches = list(data.batches(dataset, batch_size))
        log(f"ray_speed: local {len(dataset)} images in {local:.1f} s")
        in_process = []
        for batch in batches:
            started = time.perf_counter()
            pipeline.craft_batch(model, attack, batch, False)
            in_process.append(time.perf_counter() - started)
        rows = [{"engine": "local", "workers": 0, "seconds": local, "images_per_second": len(dataset) / local,
                 "identical_to_local": True}]
        started = time.perf_counter()
        ray.init(num_cpus=max(os.cpu_count() or 1, max(worker_counts)), include_dashboard=False,
                 logging_level="WARNING")
        ray_start = time.perf_counter() - started
        call = {}
        for count in worker_counts:
            with scale.RayCrafter(ensemble, recipe, False, num_workers=count) as crafter:
                started = time.perf_counter()
                craft(dataset.select(dataset.ids[:batch_size * count]), "warm", crafter)
                warm_up = time.perf_counter() - started
                seconds = craft(dataset, f"ray{count}", crafter)
                same = _files(os.path.join(root, f"ray{count}")) == _files(os.path.join(root, "local"))
                rows.append({"engine": "ray", "workers": count, "seconds": seconds,
                             "images_per_second": len(dataset) / seconds, "identical_to_local": same,
                             "start_and_warm_up_seconds": warm_up})
                log(f"ray_speed: {count} worker(s): {seconds:.1f} s, identical to local: {same}")
                if count == 1:
                    worker = crafter._workers[0]
                    round_trips, remote = [], []
                    for _ in range(20):
                        started = time.perf_counter()
                        ray.get(worker.pid.remote())
                        round_trips.append(time.perf_counter() - started)
                    for batch in batches:
                        started = time.perf_counter()
                        ray.get(worker.craft.remote(batch))
                        remote.append(time.perf_counter() - started)
                    call = {"empty_call_ms": 1e3 * statistics.median(round_trips),
                            "batch_in_process_s": statistics.mean(in_process),
                            "batch_on_worker_s": statistics.mean(remote)}
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    one = next(r for r in rows if r["workers"] == 1)
    return {"images": len(dataset), "batch_size": batch_size, "members": list(MEMBERS), "cpu_count": os.cpu_count(),
            "attack": {"preset": ATTACK[0], **{k: v for k, v in ATTACK[1].items()}}, "rows": rows,
            "ray_init_seconds": ray_start, "overhead_per_batch_end_to_end_ms": 1e3 * (one["seconds"] - local) / len(
                batches), **call, "environment": runs.environment(), "time": time.time()}


def markdown(payload) -> str:
    """The scaling table and the overhead figures."""
    attack = payload["attack"]
    lines = [f"{attack['preset']} ({attack['steps']} steps) on {' + '.join(payload['members'])}, "
             f"{payload['images']} images, batch {payload['batch_size']}, warm (workers started and traced before "
             f"the timed run); {payload['cpu_count']} CPU cores.", "",
             "| engine | workers | seconds | images/s | speed-up | bytes equal to local |", "|---|---|---|---|---|---|"]
    local = payload["rows"][0]["seconds"]
    for row in payload["rows"]:
        lines.append(f"| {row['engine']} | {row['workers'] or '-'} | {row['seconds']:.1f} | "
                     f"{row['images_per_second']:.3f} | {local / row['seconds']:.2f}x | "
                     f"{'yes' if row['identical_to_local'] else 'NO'} |")
    lines += ["", f"Ray start (embedded): {payload['ray_init_seconds']:.1f} s. Overhead of the Ray path per batch: "
                  f"{payload['overhead_per_batch_end_to_end_ms']:.0f} ms end to end (1 worker against local)"]
    if "batch_on_worker_s" in payload:
        lines[-1] += (f"; one batch sent to a warm worker {payload['batch_on_worker_s']:.3f} s against "
                      f"{payload['batch_in_process_s']:.3f} s crafted here; an empty actor call "
                      f"{payload['empty_call_ms']:.2f} ms.")
    return "\n".join(lines)
