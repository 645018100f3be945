"""Images/s of a local run against --engine=ray with 1 and 2 workers (warm: workers started and traced), byte-identity,
and the Ray path's per-batch overhead: EfficientNet-Lite0, MI-FGSM 10 steps, batch 2, oneDNN off.

    python scripts/ray_speed.py [IMAGE_FOLDER]        # default samples/images
"""
import os, sys, time, shutil, statistics, tempfile
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
from tfattack import data, pipeline, scale
import ray

ROOT = tempfile.mkdtemp(prefix="ray_speed_")
ds = data.read_dataset(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples", "images"))
ENS = scale.EnsembleRecipe([("efficientnet_lite0", 1.0)])
ATK = scale.AttackRecipe("mi_fgsm", {"eps": 16 / 255, "steps": 10})
model, attack = ENS.build(), ATK.build()
B = 2
def go(dataset, out, crafter=None):
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    s = pipeline.attack_dataset(dataset, out, model, attack, batch_size=B, targeted=False, crafter=crafter)
    return time.perf_counter() - t, s
res = {}
go(ds.select(ds.ids[:2]), ROOT + "/warm")
wall, s = go(ds, ROOT + "/local"); res["local"] = wall
print(f"local: {len(s.written)} images in {wall:.2f} s = {len(s.written)/wall:.3f} images/s", flush=True)
# per-batch compute in this process, for the overhead comparison
batches = list(data.batches(ds, B))
local_batch = []
for b in batches:
    t = time.perf_counter(); pipeline.craft_batch(model, attack, b, False); local_batch.append(time.perf_counter() - t)
t = time.perf_counter(); ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
print(f"ray.init (embedded, 2 CPUs): {time.perf_counter() - t:.2f} s", flush=True)
for n in (1, 2):
    with scale.RayCrafter(ENS, ATK, False, num_workers=n) as c:
        t = time.perf_counter()
        go(ds.select(ds.ids[:2 * n]), ROOT + "/warm", c)  # starts the workers, traces each once
        print(f"ray {n} worker(s): start + warm-up of {2*n} images {time.perf_counter() - t:.2f} s", flush=True)
        wall, s = go(ds, f"{ROOT}/ray{n}", c); res[f"ray{n}"] = wall
        same = all(open(f"{ROOT}/local/{i}.png", "rb").read() == open(f"{ROOT}/ray{n}/{i}.png", "rb").read() for i in ds.ids)
        print(f"ray {n} worker(s): {len(s.written)} images in {wall:.2f} s = {len(s.written)/wall:.3f} images/s; "
              f"byte-identical to local: {same}", flush=True)
        if n == 1:
            w = c._workers[0]
            rt = []
            for _ in range(20):
                t = time.perf_counter(); ray.get(w.pid.remote()); rt.append(time.perf_counter() - t)
            remote_batch = []
            for b in batches:
                t = time.perf_counter(); ray.get(w.craft.remote(b)); remote_batch.append(time.perf_counter() - t)
            print(f"  empty actor call round trip: median {statistics.median(rt)*1e3:.2f} ms", flush=True)
            print(f"  one batch, Ray call vs in-process craft_batch: {statistics.mean(remote_batch):.3f} s vs "
                  f"{statistics.mean(local_batch):.3f} s (difference {1e3*(statistics.mean(remote_batch)-statistics.mean(local_batch)):.0f} ms)", flush=True)
print(f"per-batch overhead end to end, 1 worker vs local: {(res['ray1'] - res['local']) / len(batches) * 1e3:.0f} ms "
      f"over {len(batches)} batches", flush=True)
ray.shutdown()
