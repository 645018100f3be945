"""Inception-v3 port against the official TF-slim graph (tf_slim.nets.inception_v3) on one random checkpoint."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import slim_oracle
import tfattack.models as models
from tfattack.models import loading, registry
from tfattack.models.checkpoint import CheckpointError, write_slim_checkpoint

from slim_checks import SLIM_VARIABLES, read_tsv  # noqa: E402

SHARED_TSV = SLIM_VARIABLES / "inception_v3.tsv"
# Sum of the official variable shapes (1001 classes, aux head included) = the parameter count.
OFFICIAL_PARAMETER_COUNT = 27_182_194
INCEPTION_V3_NAMES = ("inception_v3", "adv_inception_v3", "ens3_adv_inception_v3", "ens4_adv_inception_v3")


def assert_close_to(actual, expected):
    """Equal up to float32 reordering: max abs difference below 1e-4 of the reference's spread."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    spread = float(expected.max() - expected.min())
    assert spread > 0
    assert np.abs(actual - expected).max() < 1e-4 * spread


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """The official graph filled with random values: its checkpoint, inputs, logits, end points, variables."""
    folder = tmp_path_factory.mktemp("inception_v3_oracle")
    images01 = np.random.default_rng(7).uniform(0, 1, (2, 299, 299, 3)).astype(np.float32)
    prefix = str(folder / "model.ckpt")
    logits, end_points, shapes = slim_oracle.run_oracle("inception_v3", images01 * 2 - 1, prefix)
    return {"prefix": prefix, "images01": images01, "logits": logits, "end_points": end_points, "shapes": shapes}


@pytest.fixture(scope="module")
def model(oracle):
    return models.load("inception_v3", checkpoint=oracle["prefix"])


@pytest.fixture(scope="module")
def model_outputs(model, oracle):
    logits, aux = model.logits_and_aux(oracle["images01"])
    return logits.numpy(), aux.numpy()


def official_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def variable_list(network):
    return [(name, tuple(var.shape)) for name, var in network.variables_by_name.items()]


def test_variables_equal_the_oracle_graph_in_creation_order(model, oracle):
    expected = [(name, tuple(shape)) for name, shape in oracle["shapes"].items()]
    assert variable_list(model.network) == expected


@pytest.mark.skipif(not SHARED_TSV.exists(), reason=f"{SHARED_TSV} (../shared) is not available")
def test_variables_equal_the_official_checkpoint_list():
    network = loading.build_network(registry.get("inception_v3"))
    assert variable_list(network) == read_tsv(SHARED_TSV)
    assert sum(int(np.prod(shape)) for _, shape in read_tsv(SHARED_TSV)) == OFFICIAL_PARAMETER_COUNT


def test_parameter_count(model):
    assert sum(int(np.prod(var.shape)) for var in model.network.variables_by_name.values()) == \
        OFFICIAL_PARAMETER_COUNT


def test_logits_and_aux_logits_equal_the_oracle(model_outputs, oracle):
    logits, aux = model_outputs
    # The classifier drops slim's background column 0; everything else must match the official graph.
    assert_close_to(logits, oracle["logits"][:, 1:])
    assert_close_to(aux, oracle["end_points"]["AuxLogits"][:, 1:])
    assert not np.allclose(logits[0], logits[1])  # two different images really were compared


def test_end_points_match_the_oracle_in_shape_and_value(model, oracle):
    _, end_points = model.network(oracle["images01"] * 2 - 1)
    pinned = {"Conv2d_1a_3x3": (2, 149, 149, 32), "MaxPool_5a_3x3": (2, 35, 35, 192),
              "Mixed_5b": (2, 35, 35, 256), "Mixed_6a": (2, 17, 17, 768), "Mixed_6e": (2, 17, 17, 768),
              "Mixed_7a": (2, 8, 8, 1280), "Mixed_7c": (2, 8, 8, 2048), "AuxLogits": (2, 1001),
              "Logits": (2, 1001)}
    for name, shape in pinned.items():
        assert tuple(end_points[name].shape) == shape, name
    for name in ("Mixed_5b", "Mixed_6a", "Mixed_7c"):
        assert_close_to(end_points[name].numpy(), oracle["end_points"][name])


def test_renamed_checkpoint_with_extras_loads_as_ens3(tmp_path, oracle, model_outputs):
    values = {name.replace("InceptionV3/", "Ens3AdvInceptionV3/", 1): value
              for name, value in official_values(oracle["prefix"]).items()}
    # What training leaves in such files: a step counter and optimiser slots, which must be ignored.
    values["global_step"] = np.int64(450000)
    slot = "Ens3AdvInceptionV3/Logits/Conv2d_1c_1x1/weights"
    values[slot + "/RMSProp"] = np.full_like(values[slot], 1e3)
    spec = registry.get("ens3_adv_inception_v3")
    # Laid out as the archive unpacks into checkpoints/<default_location>/, found through model_dir.
    folder = tmp_path / spec.default_location
    write_slim_checkpoint(values, str(folder / spec.archive_files[0].split(".data-")[0]))
    assert sorted(p.name for p in folder.glob("*.ckpt.*")) == sorted(spec.archive_files)

    renamed = models.load("ens3_adv_inception_v3", model_dir=str(tmp_path))
    assert renamed.info["scope"] == "Ens3AdvInceptionV3"
    logits, aux = renamed.logits_and_aux(oracle["images01"])
    np.testing.assert_allclose(logits.numpy(), model_outputs[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(aux.numpy(), model_outputs[1], rtol=0, atol=1e-5)


def test_official_v1_single_file_layout_loads(tmp_path, oracle, model_outputs):
    # inception_v3_2016_08_28.tar.gz holds one V1 file, inception_v3.ckpt, and no `checkpoint` index.
    spec = registry.get("inception_v3")
    folder = tmp_path / spec.default_location
    folder.mkdir()
    graph = tf.Graph()
    with graph.as_default():
        tf_vars = [tf.compat.v1.Variable(v, name=n) for n, v in official_values(oracle["prefix"]).items()]
        saver = tf.compat.v1.train.Saver(tf_vars, write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(folder / spec.archive_files[0]), write_meta_graph=False)
    (folder / "checkpoint").unlink()
    assert [p.name for p in folder.iterdir()] == list(spec.archive_files)

    loaded = models.load("inception_v3", model_dir=str(tmp_path))
    np.testing.assert_allclose(loaded(oracle["images01"]).numpy(), model_outputs[0], rtol=0, atol=1e-5)


def test_truncated_checkpoint_is_a_one_line_error_naming_the_file(tmp_path, oracle):
    prefix = tmp_path / "model.ckpt"
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(oracle["prefix"] + suffix, str(prefix) + suffix)
    data = str(prefix) + ".data-00000-of-00001"
    os.truncate(data, os.path.getsize(data) // 2)
    with pytest.raises(CheckpointError) as error:
        models.load("inception_v3", checkpoint=str(prefix))
    message = str(error.value)
    assert "\n" not in message
    assert str(prefix) in message and "inception_v3" in message


def test_registry_records():
    for name in INCEPTION_V3_NAMES:
        spec = registry.get(name)
        assert (spec.architecture, spec.source, spec.preprocessing) == ("inception_v3", "slim_checkpoint", "inception")
        assert (spec.num_classes, spec.image_size, spec.checkpoint_scope, spec.aux_logits) == \
            (1001, 299, "InceptionV3", True)
        assert spec.url.startswith(f"http://download.tensorflow.org/models/{name}_20")
        assert spec.url.endswith(".tar.gz") and spec.default_location == name
        assert all(f.startswith(f"{name}.ckpt") for f in spec.archive_files)
        assert spec.licence == "Apache-2.0" and spec.paper and 70 < spec.reference_top1 < 80


def test_other_input_sizes_are_refused(model):
    with pytest.raises(ValueError, match="inception_v3 takes 299x299"):
        model.network(tf.zeros([1, 224, 224, 3]))


def test_feature_taps_equal_the_oracle_end_points(model, oracle):
    taps = ["Conv2d_4a_3x3", "Mixed_5b", "mid", "late", "Mixed_7c"]
    out = model.outputs(oracle["images01"], features=taps)
    assert model.feature_tap("mid") == "Mixed_6b" and model.feature_tap("late") == "Mixed_6e"
    for tap in taps:
        assert_close_to(out.features[tap].numpy(), oracle["end_points"][model.feature_tap(tap)])
    # the same forward pass gives the logits
    assert_close_to(out.logits.numpy(), model(oracle["images01"]).numpy())


def test_an_unknown_tap_is_one_line_naming_the_model_and_its_taps(model):
    from tfattack.models.features import FeatureError
    with pytest.raises(FeatureError, match=r"model 'inception_v3' has no feature tap 'Mixed_5z'; did you mean "
                                           r"'Mixed_5[bcd]'\?; its taps: early, mid, late, Conv2d_1a_3x3"):
        model.outputs(np.zeros((1, 299, 299, 3), np.float32), features=["Mixed_5z"])
