"""Crafting on Ray (tfattack.scale): the same PNGs and record as a local run, a killed worker's batch crafted again,
resume across engines, the install hint without Ray, and the command line end to end.

One embedded Ray (2 CPUs) and one pair of worker actors for the module; real sample images, efficientnet_lite0.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

# Bit-identical images across processes need TensorFlow's oneDNN rewrites off (docs/reproducibility.md) in the
# workers, which inherit the variable, and in this process, which crafts the local reference: tests/conftest.py sets
# it before TensorFlow is first imported.
if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
    pytest.skip("byte-identity across engines is promised with TF_ENABLE_ONEDNN_OPTS=0 (tests/conftest.py's default)",
                allow_module_level=True)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

ray = pytest.importorskip("ray")

from tfattack import data, pipeline, scale  # noqa: E402
from tfattack.runs import UsageError  # noqa: E402
from test_attack_script import REPO, make_input  # noqa: E402

ENSEMBLE = scale.EnsembleRecipe([("efficientnet_lite0", 1.0)])
ATTACK = scale.AttackRecipe("mi_fgsm", {"eps": 8 / 255, "steps": 2, "seed": 3})
BATCH = 2
IMAGES = 6  # three batches: two in flight on two workers, one waiting


@pytest.fixture(scope="module", autouse=True)
def workers_with_this_process_threads():
    """The local reference runs on TensorFlow's default pools here, a thread per core; Ray's CPU workers would size
    theirs to the one CPU each reserves. Convolutions fused with their bias (folded batch norm) give other last bits
    on another thread count even with oneDNN off, so the workers get this process's count: worker_environment keeps
    the driver's setting."""
    saved = {name: os.environ.get(name) for name in scale.THREAD_VARIABLES}
    for name in scale.THREAD_VARIABLES:
        os.environ.setdefault(name, str(len(os.sched_getaffinity(0))))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def built():
    return ENSEMBLE.build(), ATTACK.build()


@pytest.fixture(scope="module")
def crafter(cluster):
    notes = []
    with scale.RayCrafter(ENSEMBLE, ATTACK, False, num_workers=2, say=notes.append) as crafter:
        crafter.notes = notes
        yield crafter


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    images, _ = make_input(tmp_path_factory.mktemp("scale"), IMAGES)
    return data.read_dataset(str(images))


def run(dataset, out, built, crafter=None, **kwargs):
    model, attack = built
    return pipeline.attack_dataset(dataset, str(out), model, attack, batch_size=BATCH, targeted=False,
                                   crafter=crafter, **kwargs)


@pytest.fixture(scope="module")
def reference(inputs, built, tmp_path_factory):
    """The local engine's outputs: {file name: bytes} and the record's image entries."""
    out = tmp_path_factory.mktemp("local")
    run(inputs, out, built)
    return outputs(out)


def outputs(folder):
    pngs = {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder)) if n.endswith(".png")}
    record = json.load(open(os.path.join(folder, "run.json")))
    return pngs, record


def assert_same(folder, reference):
    pngs, record = outputs(folder)
    want_pngs, want_record = reference
    assert sorted(pngs) == sorted(want_pngs)
    assert [n for n in pngs if pngs[n] != want_pngs[n]] == []
    assert record["images"] == want_record["images"] and record["settings"] == want_record["settings"]
    assert record["status"] == "complete"


def test_ray_writes_the_local_engines_bytes_and_record(inputs, built, crafter, reference, tmp_path):
    assert len(crafter.worker_pids()) == 0  # nothing started before there is work
    summary = run(inputs, tmp_path / "ray", built, crafter)
    assert len(set(crafter.worker_pids())) == 2 and os.getpid() not in crafter.worker_pids()
    assert sorted(summary.written) == sorted(inputs.ids) and len(summary.written) == IMAGES
    assert_same(tmp_path / "ray", reference)


def test_a_killed_worker_loses_only_its_batch(inputs, built, crafter, reference, tmp_path):
    killed = []

    def progress(total):
        def update(count):
            if not killed:
                # The batch sent last has just started: its worker certainly still holds it.
                pid, ids = max(crafter.holding().items(), key=lambda item: item[1])
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, ids))
        return update

    crafter.notes.clear()
    summary = run(inputs, tmp_path / "ray", built, crafter, progress=progress)
    (pid, ids), = killed
    assert any("died holding images " + ", ".join(ids) in note for note in crafter.notes), crafter.notes
    assert pid not in crafter.worker_pids() and len(crafter.worker_pids()) == 2  # restarted: a new process
    assert sorted(summary.written) == sorted(inputs.ids) and len(summary.written) == IMAGES  # each exactly once
    assert_same(tmp_path / "ray", reference)


class Stop(KeyboardInterrupt):
    pass


def stop_after_one_batch(total):
    def update(count):
        raise Stop()
    return update


@pytest.mark.parametrize("first", ["local", "ray"])
def test_a_run_stopped_on_one_engine_is_finished_on_the_other(first, inputs, built, crafter, reference, tmp_path):
    engines = {"local": None, "ray": crafter}
    second = "ray" if first == "local" else "local"
    out = tmp_path / "out"
    with pytest.raises(Stop):
        run(inputs, out, built, engines[first], progress=stop_after_one_batch)
    _, stopped = outputs(out)
    assert stopped["status"] == "running" and len(stopped["images"]) == BATCH
    summary = run(inputs, out, built, engines[second])
    assert sorted(summary.already_done) == sorted(stopped["images"])
    assert len(summary.written) == IMAGES - BATCH
    assert_same(out, reference)


def test_a_batch_lost_more_often_than_allowed_is_one_line_naming_its_images(inputs, built, crafter, tmp_path,
                                                                              monkeypatch):
    # Last of the tests sharing the crafter: its killed worker restarts while no other test waits for it.
    monkeypatch.setattr(crafter, "max_retries", 0)  # the first loss is one too many
    killed = []

    def progress(total):
        def update(count):
            # Once: a later batch's update can come before the loss is noticed, when the dead worker still shows
            # as holding its batch.
            if not killed:
                pid, ids = max(crafter.holding().items(), key=lambda item: item[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(ids)
        return update

    with pytest.raises(scale.WorkerError) as err:
        run(inputs, tmp_path / "ray", built, crafter, progress=progress)
    message = str(err.value)
    assert "\n" not in message and f"images {', '.join(killed[0])} was lost 1 time(s)" in message, message
    _, record = outputs(tmp_path / "ray")
    assert not set(killed[0]) & set(record["images"]) and record["status"] == "running"
    assert not [n for n in os.listdir(tmp_path / "ray") if n.endswith(".png") and n[:-4] not in record["images"]]


def test_cpu_workers_size_their_thread_pools_to_the_cpus_ray_reserves_and_records_say_so(monkeypatch):
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert scale.worker_environment(1.0, 0.0) == {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "1",
                                                  "TF_NUM_INTEROP_THREADS": "1", **_log_level()}
    assert scale.worker_environment(0.5, 0.0)["TF_NUM_INTRAOP_THREADS"] == "1"  # a share of a core: one thread
    assert scale.worker_environment(4.0, 0.0)["TF_NUM_INTEROP_THREADS"] == "4"
    assert "TF_NUM_INTRAOP_THREADS" not in scale.worker_environment(4.0, 1.0)  # GPU workers: TensorFlow's own
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")  # the driver's own setting is the workers'
    assert scale.worker_environment(1.0, 0.0)["TF_NUM_INTRAOP_THREADS"] == "3"
    crafter = scale.RayCrafter(ENSEMBLE, ATTACK, False, worker_cpus=2.0)
    assert crafter.kernels() == "CPU TF_ENABLE_ONEDNN_OPTS=0 TF_NUM_INTRAOP_THREADS=3 TF_NUM_INTEROP_THREADS=2"
    assert scale.RayCrafter(ENSEMBLE, ATTACK, False, worker_gpus=0.5).kernels() == (
        "GPU TF_ENABLE_ONEDNN_OPTS=0 TF_NUM_INTRAOP_THREADS=3")


def _log_level():
    return {"TF_CPP_MIN_LOG_LEVEL": os.environ["TF_CPP_MIN_LOG_LEVEL"]} if "TF_CPP_MIN_LOG_LEVEL" in os.environ else {}


def test_without_ray_the_engine_is_a_one_line_install_hint(monkeypatch, inputs, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for call in (lambda: scale.check_engine("ray"),
                 lambda: scale.attack_dataset(inputs, str(tmp_path / "out"), ENSEMBLE, ATTACK, batch_size=BATCH,
                                              targeted=False, engine="ray")):
        with pytest.raises(UsageError) as err:
            call()
        assert str(err.value) == "--engine=ray needs Ray, which is not installed here: pip install 'tfattack[ray]'"
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="--num_workers only applies with --engine=ray"):
        scale.check_engine("local", num_workers=2)


def test_command_line_with_an_embedded_ray(inputs, reference, tmp_path):
    """Its own embedded Ray (the module's cluster is a different instance), started and shut down by the tool."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + sys.path))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "attack.py"), f"--input_dir={inputs.input_dir}", f"--output_dir={out}",
         "--models=efficientnet_lite0", "--attack=mi_fgsm", "--num_iter=2", "--batch_size=2", "--max_epsilon=8",
         "--seed=3", "--engine=ray", "--num_workers=2"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 Ray worker(s) ready on an embedded Ray" in result.stderr
    assert f"{IMAGES} written" in result.stderr
    assert_same(out, reference)
