"""`--dataset folder` end to end (issue 25): every form trains one epoch, evaluates and predicts;
every kind of bad data is one named line on stderr, exit status 2, and no run folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fake_datasets import single_thread  # noqa: F401 (fixture)
from folder_datasets import CLASSES, FORM_FLAGS, MAKERS, make_labels, make_png, save
from paanet_fast.cli import EXIT_ERROR, main

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = ["--image-size", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--encoder", "resnet18",
        "--encoder-weights", "none", "--lr", "1e-3"]


def _image_files(root, form):
    folder = root / ("Original" if form == "cvc" else "images")
    return sorted(folder.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("form", MAKERS)
def test_each_form_trains_evaluates_and_predicts(form, tmp_path, capsys):
    root, run = tmp_path / "data", tmp_path / "run"
    truth = MAKERS[form](root)
    flags = FORM_FLAGS.get(form, [])
    assert main(["train", "--dataset", "folder", "--data-root", str(root), "--out", str(run), *TINY, *flags]) == 0
    first = capsys.readouterr().out.splitlines()
    counts = "7 train, 2 val, 1 test" if form == "split-lists" else "8 train, 1 val, 1 test"
    assert first[0].startswith(f"found {len(truth)} image/mask pairs in {root}"), first[0]
    assert first[0].endswith(f"; split: {counts}"), first[0]
    assert f"training on folder ({root}): {counts}" in first[2], first[2]

    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "scores"),
                 "--workers", "0", "--split", "all"]) == 0
    scores = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert scores["num_images"] == len(truth) and scores["dataset"] == "folder"
    assert 0 <= scores["dsc"] <= 1
    rows = (tmp_path / "scores" / "per_image.csv").read_text().splitlines()
    assert sorted(row.split(",")[0] for row in rows[1:]) == sorted(truth)
    classes = int(dict(zip(flags[::2], flags[1::2])).get("--classes", 1))
    if classes > 1:
        assert len(scores["classes"]) == classes
        mean = np.mean([c["dsc"] for c in scores["classes"].values()])
        assert scores["dsc"] == pytest.approx(mean, rel=1e-12)
        assert len(rows[0].split(",")) == 5 + 4 * classes
    else:
        assert "classes" not in scores and rows[0] == "id,dsc,iou,recall,precision"

    images = _image_files(root, form)
    assert main(["predict", "--checkpoint", str(run / "best.pt"), str(images[0].parent), "--out",
                 str(tmp_path / "pred")]) == 0
    for image in images:
        written = np.asarray(Image.open(tmp_path / "pred" / "masks" / f"{image.stem}.png"))
        assert written.shape == truth[image.stem].shape[:2]
        assert set(np.unique(written)) <= (set(range(classes + 1)) if classes > 1 else {0, 255})


def _fail(argv, capsys) -> str:
    assert main(argv) == EXIT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _unpaired(root):
    make_png(root, count=12)
    for i in (1, 4, 6):
        (root / "masks" / f"case{i:02d}.png").unlink()
    (root / "images" / "case10.png").unlink()


def _resized_mask(root):
    make_png(root)
    save(np.zeros((10, 12), np.uint8), root / "masks" / "case02.png")


def _unreadable(root):
    make_png(root)
    (root / "images" / "case05.png").write_bytes(b"not a picture")


def _grey_levels(root):
    make_png(root)
    mask = np.asarray(Image.open(root / "masks" / "case02.png"))
    save((np.arange(mask.size).reshape(mask.shape) % 200).astype(np.uint8), root / "masks" / "case02.png")


def _empty(root):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()


def _missing_id(root):
    make_png(root)
    (root / "train.txt").write_text("case00\ncase01\ncase02\ncase03\ncase04\ncase05\ncase06\n")
    (root / "val.txt").write_text("case07\nmissing_case\n")


def _label_too_big(root):
    make_labels(root)
    labels = np.asarray(Image.open(root / "masks" / "case04.png")).copy()
    labels[0, 0] = CLASSES + 2
    save(labels, root / "masks" / "case04.png")


def _wrong_class_count(root):
    MAKERS["class-folders"](root)


def _jpeg_labels(root):
    make_labels(root)
    labels = np.asarray(Image.open(root / "masks" / "case01.png"))
    (root / "masks" / "case01.png").unlink()
    save(labels, root / "masks" / "case01.jpg")


BAD_DATA = {
    "unpaired": (_unpaired, [], "folder: 3 images in {root}/images have no mask in {root}/masks: case01.png, "
                 "case04.png, case06.png; 1 masks in {root}/masks have no image in {root}/images: case10.png "
                 "(images and masks pair by file stem)"),
    "size": (_resized_mask, [], "mask {root}/masks/case02.png is 10x12 but its image {root}/images/case02.png "
             "is 48x48"),
    "unreadable": (_unreadable, [], "cannot read image {root}/images/case05.png: cannot identify image file"),
    "grey levels": (_grey_levels, [], "mask {root}/masks/case02.png is neither 0/1 nor 0/255: read as grey levels it "
                    "holds 200 values (0, 1, 2, 3, 4, 5, ...); a binary mask holds two values (label masks 0..N need "
                    "--classes N)"),
    "empty": (_empty, [], "images folder {root}/images is empty: no image files"),
    "missing id": (_missing_id, [], "folder: split list {root}/val.txt names 1 ids with no image/mask pair in "
                   "{root}/images: missing_case"),
    "label above classes": (_label_too_big, ["--classes", str(CLASSES)],
                            f"mask {{root}}/masks/case04.png holds the value {CLASSES + 2}, above --classes {CLASSES}"),
    "class folders": (_wrong_class_count, ["--classes", "2"], "folder: {root}/masks holds 3 class folders (bubble, "
                      "instrument, polyp) but 2 classes were given: train with --classes 3 (evaluate takes the "
                      "classes of the checkpoint's model)"),
    "jpeg labels": (_jpeg_labels, ["--classes", str(CLASSES)], "mask {root}/masks/case01.jpg is a JPEG: label masks "
                    "must be lossless"),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_is_one_named_line_exit_2_and_no_run_folder(case, tmp_path, capsys):
    make, flags, message = BAD_DATA[case]
    root, run = tmp_path / "data", tmp_path / "run"
    make(root)
    line = _fail(["train", "--dataset", "folder", "--data-root", str(root), "--out", str(run), *TINY, *flags], capsys)
    assert line.startswith("paanet-fast train: error: ")
    assert message.format(root=root) in line, line
    assert not run.exists()


def test_a_missing_folder_names_the_flag(tmp_path, capsys):
    make_png(tmp_path / "data")
    line = _fail(["train", "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--images", "Original",
                  "--out", str(tmp_path / "run"), *TINY], capsys)
    assert f"folder: expected the images folder (--images): {tmp_path}/data/Original does not exist" in line
    assert not (tmp_path / "run").exists()
