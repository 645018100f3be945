"""Measuring models: forward and forward+input-gradient time, FLOPs, the machine's matmul rate.

Used by `scripts/benchmark.py`; nothing here asserts a speed (tests never time anything).
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np
import tensorflow as tf


def best_time(fn: Callable, *args, repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time (s) of `fn(*args)` over `repeats` runs after `warmup` runs (results are fetched)."""
    for _ in range(warmup):
        _fetch(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _fetch(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def first_call_time(fn: Callable, *args) -> float:
    """Wall time (s) of one call with its results fetched: for a fresh `tf.function`, tracing + graph
    optimisation (+ XLA compilation) + one run. Time later calls with `best_time(..., warmup=0)`."""
    start = time.perf_counter()
    _fetch(fn(*args))
    return time.perf_counter() - start


def _fetch(result):
    # Forces the computation to finish (eager results may still be in flight on a GPU).
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)


def forward_and_gradient_fns(model, jit_compile: bool = False):
    """Compiled forward and forward+input-gradient (cross-entropy to fixed labels) functions."""

    @tf.function(jit_compile=jit_compile)
    def forward(images):
        return model(images)

    @tf.function(jit_compile=jit_compile)
    def input_gradient(images, labels):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(images)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, model(images)))
        return tape.gradient(loss, images)

    return forward, input_gradient


def time_model(model, batch: int, image_size: int, *, jit_compile: bool = False, repeats: int = 3) -> Dict[str, float]:
    """Seconds per image for forward and forward+input-gradient at `batch`, plus peak RSS so far (MiB)."""
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 1, (batch, image_size, image_size, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 1000, batch), tf.int64)
    forward, gradient = forward_and_gradient_fns(model, jit_compile)
    t_forward = best_time(forward, images, repeats=repeats)
    t_gradient = best_time(gradient, images, labels, repeats=repeats)
    return {"forward_s_per_image": t_forward / batch, "gradient_s_per_image": t_gradient / batch,
            "peak_rss_mib": peak_rss_mib(), "forward_flops": count_flops(forward, images),
            # Measured here, right after the model, so that both see the same load on a shared machine.
            "matmul_flops_per_second": matmul_flops_per_second()}


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux; it is the process's peak, so measure one model per process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def live_operations(graph) -> list:
    """The ops of a traced function's graph that its outputs depend on, in graph order: what runs. A network may
    build ops nothing reads (a folded convolution's own output, kept as an end point for feature taps), which
    TensorFlow prunes before running the graph."""
    live, todo = set(), [t.op for t in graph.outputs] + list(graph.control_outputs)
    while todo:
        op = todo.pop()
        if op not in live:
            live.add(op)
            todo += [t.op for t in op.inputs] + list(op.control_inputs)
    return [op for op in graph.get_operations() if op in live]


def count_flops(function, *args) -> float:
    """Multiply-adds x 2 of the convolutions and matmuls a traced function computes (static shapes)."""
    graph = function.get_concrete_function(*args).graph
    total = 0.0
    for op in live_operations(graph):
        if op.type in ("Conv2D", "DepthwiseConv2dNative"):
            out = op.outputs[0].shape
            kernel = op.inputs[1].shape
            if not out.is_fully_defined() or not kernel.is_fully_defined():
                continue
            if op.type == "Conv2D":
                total += 2.0 * np.prod(out.as_list()) * kernel[0] * kernel[1] * kernel[2]
            else:
                total += 2.0 * np.prod(out.as_list()) * kernel[0] * kernel[1]
        elif op.type in ("MatMul", "BatchMatMulV2"):
            a, out = op.inputs[0].shape, op.outputs[0].shape
            if a.is_fully_defined() and out.is_fully_defined():
                inner = a[-2] if op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x") else a[-1]
                total += 2.0 * np.prod(out.as_list()) * inner
    return float(total)


def matmul_flops_per_second(size: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul rate (FLOP/s), the ceiling a convnet's achieved rate is judged by."""
    a = tf.random.stateless_uniform([size, size], seed=[1, 2])
    b = tf.random.stateless_uniform([size, size], seed=[3, 4])
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    seconds = best_time(matmul, a, b, repeats=repeats, warmup=2)
    return 2.0 * size ** 3 / seconds


def op_time_breakdown(fn: Callable, *args, top: int = 12) -> List[Dict]:
    """Where one call of a (warmed-up) `tf.function` spends its time, by op type.

    Runs `fn(*args)` once under `tf.profiler` and sums event durations by type: TensorFlow ops on the
    executor threads (e.g. `_MklNativeFusedConv2D`, `Conv2DBackpropInput`) and, for XLA-compiled code,
    the compiled program's thunks on the Eigen threads, named "xla:" + the HLO name without its
    numbering (e.g. "xla:Conv2DBackpropInput", "xla:dot"). Ops on parallel threads overlap, so the
    seconds add up to more than the wall time; `share` is of their sum. Returns the `top` types,
    largest first, as {"op": type, "seconds": s, "share": fraction, "count": events}.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    folder = tempfile.mkdtemp(prefix="tfattack_profile_")
    tf.profiler.experimental.start(folder)
    try:
        _fetch(fn(*args))
    finally:
        tf.profiler.experimental.stop()
    seconds, counts = collections.Counter(), collections.Counter()
    for path in glob.glob(f"{folder}/**/*.xplane.pb", recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            for line in plane.lines:
                for event in line.events:
                    op_type = _event_op_type(line.name, plane.event_metadata[event.metadata_id])
                    if op_type:
                        seconds[op_type] += event.duration_ps * 1e-12
                        counts[op_type] += 1
    shutil.rmtree(folder, ignore_errors=True)
    total = sum(seconds.values()) or 1.0
    return [{"op": op, "seconds": s, "share": s / total, "count": counts[op]} for op, s in seconds.most_common(top)]


def _event_op_type(line_name: str, metadata) -> str:
    """The op type of a profiler event, or "" for bookkeeping (executor, thread pool, Python) events."""
    if line_name.startswith("tf_Compute"):
        return metadata.display_name  # TensorFlow op events carry their type; executor events none
    if "Eigen" in line_name and "::" not in metadata.name and not metadata.name.startswith("end:"):
        # XLA:CPU thunks, named after their HLO instruction: "Conv2DBackpropInput_93.13", "fusion.4".
        return "xla:" + re.sub(r"(_\d+)?(\.\d+)*$", "", metadata.name)
    return ""


def json_from_fresh_process(command, **error_row) -> dict:
    """Runs `command` (a benchmark subprocess printing its result as one JSON line) and returns that
    result, or `error_row` plus "error" (the last stderr line) if it failed. A fresh process per
    measurement keeps peak RSS and library state (XLA, oneDNN caches) per row."""
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return dict(error_row, error=(done.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(lines[-1])
