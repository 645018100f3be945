"""The example panel's captions: target class on targeted sets, class names shortened at word boundaries."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfattack import data, evaluate, report
from tfattack.models import class_names

NAMES = class_names()


def _words(text):
    return text.replace("…", " ").split()


def test_short_class_name_takes_the_first_synonym():
    assert report.short_class_name("black-footed ferret, ferret, Mustela nigripes") == "black-footed ferret"
    assert report.short_class_name("Granny Smith") == "Granny Smith"
    assert report.short_class_name("tench, Tinca tinca") == "tench"


@pytest.mark.parametrize("width", [6, 10, 14, 18, 24])
def test_every_imagenet_name_is_shortened_at_word_boundaries(width):
    for name in NAMES:
        first = name.split(",")[0].strip()
        short = report.short_class_name(name, width)
        words = _words(short)
        # Whole words of the first synonym, in its order, from its start: never a word cut in the middle.
        assert words == first.split()[:len(words)], (name, short)
        if short == first:
            assert len(first) <= width or len(words) == 1, (name, short)  # a single word is never cut
        else:
            assert short.endswith("…")
            # Within the width unless a single first word alone is already longer.
            assert len(short) <= width or len(words) == 1, (name, short)


def test_a_first_word_longer_than_the_width_stays_whole():
    assert report.short_class_name("supercalifragilistic word, other", 8) == "supercalifragilistic…"
    assert report.short_class_name("supercalifragilistic, other", 8) == "supercalifragilistic"
    assert report.short_class_name("German short-haired pointer", 18) == "German…"


def test_long_names_are_shortened_within_the_default_width():
    name = "American Staffordshire terrier, Staffordshire terrier"
    short = report.short_class_name(name)
    assert short == "American Staffordshire…" and len(short) <= report.CLASS_NAME_WIDTH


def test_targeted_caption_names_the_target_and_whether_it_was_hit():
    granny = NAMES.index("Granny Smith")
    hit = report.adversarial_caption("mi", granny, NAMES, targeted=True, target=granny)
    assert hit == f"mi: Granny Smith ({granny})\ntarget: Granny Smith ({granny}), hit"
    missed = report.adversarial_caption("mi", 0, NAMES, targeted=True, target=granny)
    assert missed == f"mi: tench (0)\ntarget: Granny Smith ({granny}), missed"
    assert report.adversarial_caption("mi", 0, NAMES, targeted=True, target=None) == "mi: tench (0)\ntarget: n/a"


def test_untargeted_caption_shows_no_target():
    caption = report.adversarial_caption("mi", 0, NAMES, targeted=False, target=5)
    assert caption == "mi: tench (0)" and "target" not in caption


def test_caption_class_names_are_whole_words():
    long_index = max(range(len(NAMES)), key=lambda k: len(NAMES[k].split(",")[0]))
    caption = report.adversarial_caption("set", long_index, NAMES, targeted=True, target=long_index)
    full_words = set(NAMES[long_index].replace(",", " ").split())
    for line in caption.split("\n"):
        name = line.split(": ", 1)[1].rsplit(" (", 1)[0]
        assert name.endswith("…") and set(_words(name)) <= full_words, line


class RedModel:
    """Predicts class round(255 * mean red), so the top-1 of each image is set by its red level."""

    name = "red"
    differentiable = True

    def __call__(self, images):
        level = 255.0 * tf.reduce_mean(images[..., 0], axis=[1, 2])
        return -tf.square(level[:, None] - tf.range(1000, dtype=tf.float32)[None, :])


def test_targeted_panel_shows_targets(tmp_path, monkeypatch):
    # i0: adversarial red 40 = its target (hit); i1: adversarial red 90, target 91 (missed).
    images, adv = tmp_path / "images", tmp_path / "adv"
    images.mkdir(), adv.mkdir()
    rows = ["ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass"]
    for image_id, (red, adv_red, label, target) in {"i0": (30, 40, 30, 40), "i1": (80, 90, 80, 91)}.items():
        pixels = np.full((16, 16, 3), 128, np.uint8)
        pixels[..., 0] = red
        data.write_png(pixels, str(images / f"{image_id}.png"))
        pixels[..., 0] = adv_red
        data.write_png(pixels, str(adv / f"{image_id}.png"))
        rows.append(f"{image_id},u,0,0,1,1,{label + 1},{target + 1}")
    (tmp_path / "dev_dataset.csv").write_text("\n".join(rows) + "\n")
    (adv / "run.json").write_text(json.dumps({"targeted": True, "max_epsilon": 16}))
    ev = evaluate.evaluate(data.read_dataset(str(images)), [evaluate.read_adv_set(str(adv))], [RedModel()])

    figures = []
    make = report._figure
    monkeypatch.setattr(report, "_figure", lambda *size: figures.append(make(*size)) or figures[-1])
    path = tmp_path / "examples.png"
    assert report.plot_examples(ev, str(path))
    assert path.stat().st_size > 0
    titles = [axes.get_title() for axes in figures[0].axes]
    assert f"adv: {report.class_label(40, NAMES)}\ntarget: {report.class_label(40, NAMES)}, hit" in titles
    assert f"adv: {report.class_label(90, NAMES)}\ntarget: {report.class_label(91, NAMES)}, missed" in titles
