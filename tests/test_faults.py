"""Fault injection on scripts/attack.py: kills, interrupts, two writers, a full disk, bad inputs of every kind.

Each fault is real: SIGKILL/SIGINT sent to the process, a second process, a tmpfs that fills up (or, where
mounting is not allowed, a file-size limit the kernel enforces), a read-only mount, files broken on disk.
After each, whatever the folder holds must be trustworthy: every PNG decodes and is within eps of its input,
the record lists exactly images that are there with their hashes, no temporary file survives a rerun, and a
rerun finishes the job with the same images an uninterrupted run makes.
"""

import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_attack_script import ENV, REPO, SCRIPT, make_input, pixels, run_attack
from test_data_policies import write_constant_png
from tfattack import files, record

SETTINGS = ["--models=efficientnet_lite0", "--attack=mi_fgsm", "--num_iter=2", "--batch_size=1", "--max_epsilon=8"]


def start_attack(*args, **kwargs):
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO, **kwargs)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("attack.py: error:")]


def assert_trustworthy(images, out, eps=8):
    """What a folder holds after any fault: decodable PNGs within eps, and a record that does not lie."""
    outputs = sorted(n for n in os.listdir(out) if n.endswith(".png") and not n.startswith("."))
    for name in outputs:
        delta = np.abs(pixels(out / name) - pixels(images / name))
        assert delta.max() <= eps, name
    path = out / "run.json"
    if path.exists():
        payload = json.loads(path.read_text())
        assert payload["format"] == record.FORMAT
        for image_id, entry in payload["images"].items():
            assert (out / f"{image_id}.png").exists(), f"record lists {image_id} but its file is not there"
            assert entry["output"] == record.file_sha256(out / f"{image_id}.png"), image_id
    return outputs


def finish(images, out):
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", *SETTINGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert files.stale_temp_files(str(out)) == []
    payload = json.loads((out / "run.json").read_text())
    assert payload["status"] == "complete"
    assert sorted(payload["images"]) == sorted(p.stem for p in images.glob("*.png"))
    assert_trustworthy(images, out)
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Four DEV images and the outputs of one uninterrupted run on them."""
    root = tmp_path_factory.mktemp("reference")
    images, _ = make_input(root, 4)
    out = root / "out"
    finish(images, out)
    return images, {p.name: p.read_bytes() for p in out.glob("*.png")}


def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_images(reference, tmp_path):
    images, expected = reference
    out = tmp_path / "out"
    draw = random.Random(14)
    for _ in range(3):
        process = start_attack(f"--input_dir={images}", f"--output_dir={out}", *SETTINGS)
        time.sleep(draw.uniform(3.0, 16.0))
        process.kill()
        process.wait()
        if out.exists():
            assert_trustworthy(images, out)
    finish(images, out)
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == expected


def test_ctrl_c_is_one_line_and_the_run_resumes(reference, tmp_path):
    images, expected = reference
    out = tmp_path / "out"
    process = start_attack(f"--input_dir={images}", f"--output_dir={out}", *SETTINGS)
    deadline = time.time() + 300
    while not (out.exists() and list(out.glob("*.png"))) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert error_lines(stderr) == ["attack.py: error: interrupted; the finished images and their run record are "
                                   "kept: run the same command again to resume"]
    assert_trustworthy(images, out)
    resumed = finish(images, out)
    assert "already done" in resumed.stderr
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == expected


def test_two_processes_on_one_folder(reference, tmp_path):
    images, expected = reference
    out = tmp_path / "out"
    processes = [start_attack(f"--input_dir={images}", f"--output_dir={out}", *SETTINGS) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    for code, stderr in results:
        assert code in (0, 2), stderr[-3000:]
        if code == 2:  # the second writer is turned away at once, in one line
            assert len(error_lines(stderr)) == 1 and "being written by another run" in error_lines(stderr)[0]
    assert 0 in [code for code, _ in results]
    assert_trustworthy(images, out)
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == expected
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@contextlib.contextmanager
def mounted_tmpfs(path, options):
    """A tmpfs at `path` (root only, where the container allows mounting); None if it cannot be mounted."""
    path.mkdir()
    if os.geteuid() != 0:
        yield None
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_leaves_no_half_output_and_says_so(reference, tmp_path):
    images, _ = reference
    largest = max(len(v) for v in reference[1].values())
    with mounted_tmpfs(tmp_path / "disk", f"size={largest * 3 // 2 // 1024}k") as disk:
        if disk is not None:
            out = disk / "out"
            process = start_attack(f"--input_dir={images}", f"--output_dir={out}", *SETTINGS)
            expected_reason = "No space left on device"
        else:  # no mount here: the kernel's file-size limit fails the first write past it instead
            out = tmp_path / "out"
            limit = largest // 2

            def limit_file_size():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

            process = start_attack(f"--input_dir={images}", f"--output_dir={out}", *SETTINGS,
                                   preexec_fn=limit_file_size)
            expected_reason = "File too large"
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 1, stderr[-3000:]
        assert "Traceback" not in stderr
        lines = error_lines(stderr)
        assert len(lines) == 1 and expected_reason in lines[0] and str(out) in lines[0], stderr[-2000:]
        assert files.stale_temp_files(str(out)) == []
        written = assert_trustworthy(images, out)
        assert len(written) < 4


def test_read_only_output_folder_fails_before_any_work(tmp_path):
    images, _ = make_input(tmp_path, 1)
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as read_only:
        if read_only is None:
            if os.geteuid() == 0:
                pytest.skip("root ignores folder permissions and mounting is not allowed here")
            read_only = tmp_path / "ro"
            read_only.chmod(0o555)
        started = time.time()
        result = run_attack(f"--input_dir={images}", f"--output_dir={read_only / 'out'}", *SETTINGS)
        assert result.returncode == 2, result.stderr[-3000:]
        assert error_lines(result.stderr) == [f"attack.py: error: --output_dir {read_only / 'out'}: cannot create "
                                              f"files there (not writable)"]
        assert "labels:" not in result.stderr  # stopped before reading the data, let alone loading models
        assert time.time() - started < 60


def test_bad_images_of_every_kind_are_named_and_the_rest_attacked(tmp_path):
    images, rows = make_input(tmp_path, 2)
    (images / "notanimage.png").write_text("hello")
    good = sorted(images.glob("*.png"))[0]
    (images / "truncated.png").write_bytes(good.read_bytes()[:4000])
    with open(images / "dev_dataset.csv", "a") as metadata:  # its header reads: it needs a metadata row
        row = dict(rows[0], ImageId="truncated")
        metadata.write(",".join(row[k] for k in rows[0]) + "\n")
    os.symlink(tmp_path / "deleted.png", images / "dangling.png")
    write_constant_png(images / "huge.png", 10000, 10000)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", *SETTINGS)
    assert result.returncode == 0, result.stderr[-3000:]
    failed = json.loads((out / "run.json").read_text())["failed_images"]
    for name in ("notanimage.png", "truncated.png", "dangling.png", "huge.png"):
        assert name in result.stderr, name
        assert any(name in f["image"] for f in failed), name
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{r['ImageId']}.png" for r in rows)
    assert "2 written" in result.stderr and "4 failed" in result.stderr


@pytest.mark.parametrize("flag, message", [
    ("--models=efficientnet_lite0:0", "--models: weight of 'efficientnet_lite0' must be a finite number > 0, got 0"),
    ("--models=efficientnet_lite0:nan", "weight of 'efficientnet_lite0' must be a finite number > 0, got nan"),
    ("--models=efficientnet_lite0:inf", "weight of 'efficientnet_lite0' must be a finite number > 0, got inf"),
    ("--models=efficientnet_lite0,efficientnet_lite0", "'efficientnet_lite0' is listed twice"),
    ("--models=mobilenet_v2_quant_int8", "'mobilenet_v2_quant_int8' is a black-box model"),
    ("--models=EfficientNet_Lite1", "did you mean 'efficientnet_lite1'?"),
    ("--max_epsilon=0.5", "--max_epsilon 0.5 is below one 8-bit level"),
    ("--no_such_flag=1", "Unknown command line flag 'no_such_flag'"),
])
def test_bad_flags_are_one_line_exit_2_and_create_nothing(tmp_path, flag, message):
    images, _ = make_input(tmp_path, 1)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", "--attack=mi_fgsm", "--num_iter=1", flag)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not out.exists()
