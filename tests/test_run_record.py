"""The run record: a rerun reuses an image only if it was made with the same settings, input and output.

In-process, on real sample images and a tiny real Keras-free model whose weights live in a file the test
writes, so that the weight identity is that of a real file.
"""

import json
import os
import shutil
import stat
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfattack
from tfattack import data, files, pipeline, record
from tfattack.record import RecordError, RunRecord
from test_attack_script import make_input


class TinyModel(tf.Module):
    """logits = mean over pixels of x @ W: any image size, a real weight file on disk (`.npy`)."""

    def __init__(self, weights_path, name="tiny"):
        super().__init__()
        self.spec = types.SimpleNamespace(name=name, source="test")
        self.info = {"checkpoint": str(weights_path)}
        self._w = tf.constant(np.load(weights_path), tf.float32)

    def __call__(self, images):
        return tf.reduce_mean(images, axis=[1, 2]) @ self._w


def weights_file(path, seed=0):
    np.save(path, np.random.default_rng(seed).normal(size=(3, 1000)).astype(np.float32))
    return path


@pytest.fixture
def setup(tmp_path):
    images, _ = make_input(tmp_path, 3)
    model = TinyModel(weights_file(tmp_path / "w.npy"))
    return images, model, tmp_path / "out"


def craft(images, model, out, overwrite=False, batch_size=2, eps=8, steps=2, seed=0, dataset=None, **kwargs):
    dataset = dataset or data.read_dataset(str(images))
    attack = tfattack.attacks.build("mi_fgsm", eps=eps / 255, steps=steps, seed=seed)
    return pipeline.attack_dataset(dataset, str(out), model, attack, batch_size=batch_size, targeted=False,
                                   overwrite=overwrite, **kwargs)


def snapshot(folder):
    return {n: (os.stat(os.path.join(folder, n)).st_mtime_ns, open(os.path.join(folder, n), "rb").read())
            for n in sorted(os.listdir(folder)) if not n.startswith(".")}


def test_record_lists_every_output_with_its_hashes(setup):
    images, model, out = setup
    summary = craft(images, model, out)
    assert len(summary.written) == 3
    payload = json.loads((out / "run.json").read_text())
    assert payload["format"] == record.FORMAT and payload["status"] == "complete"
    assert payload["settings"]["max_epsilon"] == 8.0 and payload["settings"]["batch_size"] == 2
    assert payload["settings"]["models"][0]["weights"]["fingerprint"] == record.weights_fingerprint(
        model.info["checkpoint"])
    for image_id, entry in payload["images"].items():
        assert entry["output"] == record.file_sha256(out / f"{image_id}.png")
        assert entry["source"] == record.file_sha256(images / f"{image_id}.png")
    assert payload["attack_config"]["eps"] == pytest.approx(8 / 255)  # the 0.1 keys readers use


def test_same_settings_reuse_everything(setup):
    images, model, out = setup
    craft(images, model, out)
    before = snapshot(out)
    again = craft(images, model, out)
    assert again.written == [] and sorted(again.already_done) == sorted(data.read_dataset(str(images)).ids)
    after = snapshot(out)
    assert {n: v for n, v in after.items() if n != "run.json"} == {n: v for n, v in before.items() if n != "run.json"}


@pytest.mark.parametrize("change, expected", [
    (dict(eps=4), "max_epsilon 8.0 there, 4.0 now"),
    (dict(steps=3), "attack.steps 2 there, 3 now"),
    (dict(seed=1), "attack.seed 0 there, 1 now"),
    (dict(batch_size=1), "batch_size 2 there, 1 now"),
])
def test_other_settings_stop_before_any_work(setup, change, expected):
    images, model, out = setup
    craft(images, model, out)
    before = snapshot(out)
    with pytest.raises(RecordError, match="made with other settings") as caught:
        craft(images, model, out, **change)
    message = str(caught.value)
    assert expected in message and "--overwrite" in message and "\n" not in message
    assert snapshot(out) == before  # not even the record was rewritten


def test_other_weight_file_or_targeted_mode_stops(setup, tmp_path):
    images, model, out = setup
    craft(images, model, out)
    other = TinyModel(weights_file(tmp_path / "w2.npy", seed=1))
    with pytest.raises(RecordError, match=r"models\[0\]\.weights\.fingerprint"):
        craft(images, other, out)
    dataset = data.read_dataset(str(images))
    attack = tfattack.attacks.build("mi_fgsm", eps=8 / 255, steps=2)
    with pytest.raises(RecordError, match="targeted false there, true now"):
        pipeline.attack_dataset(dataset, str(out), model, attack, batch_size=2, targeted=True)


def test_overwrite_replaces_images_and_record(setup):
    images, model, out = setup
    craft(images, model, out)
    redone = craft(images, model, out, overwrite=True, eps=4)
    assert len(redone.written) == 3
    assert json.loads((out / "run.json").read_text())["settings"]["max_epsilon"] == 4.0


def test_images_without_a_record_are_not_trusted(setup):
    images, model, out = setup
    out.mkdir()
    first = sorted(os.listdir(images))[0]
    shutil.copy(images / first, out / first)
    with pytest.raises(RecordError, match="no run record says how they were made"):
        craft(images, model, out)


def test_changed_input_tampered_output_and_killed_batch_are_attacked_again(setup):
    images, model, out = setup
    craft(images, model, out)
    ids = sorted(data.read_dataset(str(images)).ids)
    # a changed input under the same name
    pixels = np.asarray(Image.open(images / f"{ids[0]}.png").convert("RGB")).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(images / f"{ids[0]}.png")
    # an output changed after the run
    tampered = np.asarray(Image.open(out / f"{ids[1]}.png")).copy()
    tampered[5, 5] ^= 1
    Image.fromarray(tampered).save(out / f"{ids[1]}.png")
    # an output the record does not list (as a kill between a PNG and the record's update leaves it)
    payload = json.loads((out / "run.json").read_text())
    del payload["images"][ids[2]]
    (out / "run.json").write_text(json.dumps(payload))
    again = craft(images, model, out)
    assert sorted(again.written) == ids and again.already_done == []
    assert any("not vouched for by its run record" in n for n in again.notes)


def test_a_legacy_record_is_compared_on_what_it_records(setup):
    images, model, out = setup
    craft(images, model, out)
    payload = json.loads((out / "run.json").read_text())
    legacy = {k: payload[k] for k in ("attack_config", "max_epsilon", "targeted", "fuse", "models")}
    legacy["models"] = [{"name": m["name"], "weight": m["weight"]} for m in legacy["models"]]
    (out / "run.json").write_text(json.dumps(legacy))
    with pytest.raises(RecordError, match="max_epsilon 8.0 there, 4.0 now"):
        craft(images, model, out, eps=4)
    reused = craft(images, model, out)
    assert reused.written == [] and len(reused.already_done) == 3
    assert any("tfattack 0.1" in n for n in reused.notes)
    assert json.loads((out / "run.json").read_text())["format"] == record.FORMAT


def test_unreadable_record_is_one_line(setup):
    images, model, out = setup
    craft(images, model, out)
    (out / "run.json").write_text("{ half a record")
    with pytest.raises(RecordError, match=r"run.json: not a readable run record .*--overwrite"):
        craft(images, model, out)


def test_stale_temp_files_are_removed_and_a_second_writer_is_refused(setup):
    images, model, out = setup
    out.mkdir()
    (out / ".tmp-abc.png").write_bytes(b"half a png")
    craft(images, model, out)
    assert files.stale_temp_files(str(out)) == []
    os.remove(out / f"{sorted(data.read_dataset(str(images)).ids)[0]}.png")
    with record.FolderLock(str(out)):
        with pytest.raises(RecordError, match="being written by another run"):
            craft(images, model, out)


def test_a_finished_folder_is_checked_without_its_lock_and_left_untouched(setup):
    images, model, out = setup
    ids = sorted(data.read_dataset(str(images)).ids)
    craft(images, model, out)
    before = snapshot(out)
    with record.FolderLock(str(out)):  # another run holds the folder: checking a finished one still works
        summary = craft(images, model, out)
    assert sorted(summary.already_done) == ids and summary.written == [] and summary.checked_only
    assert summary.record.images == RunRecord.load(str(out / "run.json")).images
    assert snapshot(out) == before
    # other settings are still refused (by the locked path, with its message), never read as finished
    with pytest.raises(RecordError, match="made with other settings"):
        craft(images, model, out, eps=4)


def test_progress_counts_only_the_images_to_attack(setup):
    images, model, out = setup
    ids = sorted(data.read_dataset(str(images)).ids)
    craft(images, model, out, dataset=data.read_dataset(str(images)).select(ids[:2]))
    totals = []
    craft(images, model, out, progress=lambda total: totals.append(total) or (lambda count: None))
    assert totals == [1]


def test_outputs_honour_the_umask(setup):
    images, model, out = setup
    previous = os.umask(0o002)
    try:
        craft(images, model, out)
    finally:
        os.umask(previous)
    for name in os.listdir(out):
        if not name.startswith("."):
            assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o664, name


def shard_run(images, model, out, num_shards):
    dataset = data.read_dataset(str(images))
    for index in range(num_shards):
        part = dataset.select(data.shard(dataset.ids, num_shards, index))
        craft(images, model, out, dataset=part, record_name=record.record_name(num_shards, index),
              info={"shard": {"num_shards": num_shards, "shard_index": index, "image_ids": list(part.ids)}})


def test_merge_joins_complete_shards_and_refuses_the_rest(setup):
    images, model, out = setup
    shard_run(images, model, out, 2)
    paths = record.shard_records(str(out))
    merged = RunRecord.merge([RunRecord.load(p) for p in paths], str(out / "run.json"))
    assert sorted(merged.images) == sorted(data.read_dataset(str(images)).ids)
    with pytest.raises(RecordError, match=r"shards missing: \[1\] of 2"):
        RunRecord.merge([RunRecord.load(paths[0])], str(out / "run.json"))
    unfinished = RunRecord.load(paths[1])
    unfinished.info["status"] = "running"
    with pytest.raises(RecordError, match=r"run.shard-1-of-2.json is not complete \(status 'running'\)"):
        RunRecord.merge([RunRecord.load(paths[0]), unfinished], str(out / "run.json"))
    other = RunRecord.load(paths[1])
    other.settings = dict(other.settings, max_epsilon=4.0)
    with pytest.raises(RecordError, match="are not one run: max_epsilon"):
        RunRecord.merge([RunRecord.load(paths[0]), other], str(out / "run.json"))


def test_weights_fingerprint_follows_the_files(tmp_path):
    prefix = tmp_path / "model.ckpt"
    (tmp_path / "model.ckpt.index").write_bytes(b"index")
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(b"a" * 10)
    first = record.weights_fingerprint(str(prefix))
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(b"b" * 10)
    assert record.weights_fingerprint(str(prefix)) != first
    with pytest.raises(RecordError, match="no such file"):
        record.weights_fingerprint(str(tmp_path / "absent"))


def test_the_source_digest_follows_every_python_source_and_nothing_else(tmp_path):
    from tfattack import runs

    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")

    def digest():
        runs.source_digest.cache_clear()
        return runs.source_digest(str(package))

    first = digest()
    assert len(first) == 12 and int(first, 16) >= 0
    (package / "notes.txt").write_text("not code")
    (package / "sub" / "__pycache__").mkdir()
    (package / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"\0")
    assert digest() == first  # only .py files count
    (package / "sub" / "b.py").write_text("y = 3\n")
    changed = digest()
    assert changed != first
    (package / "sub" / "b.py").rename(package / "c.py")
    assert digest() not in (first, changed)  # the same bytes under another name are other code
    runs.source_digest.cache_clear()
    assert runs.source_digest() == runs.source_digest(os.path.dirname(tfattack.__file__))
