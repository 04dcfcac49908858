"""--dataset folder reads every form of issue 25 exactly (no training here: test_cli_folder trains)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from folder_datasets import (CLASS_FOLDERS, CLASSES, FORM_FLAGS, MAKERS, make_png, save, write_rgb16_tiff,
                             write_split_lists)
from paanet_fast.data import DatasetError, FolderSource, SegmentationDataset, default_split, open_source
from paanet_fast.data.common import read_rgb


def _source(form: str, root) -> FolderSource:
    flags = dict(zip(FORM_FLAGS.get(form, [])[::2], FORM_FLAGS.get(form, [])[1::2]))
    return open_source("folder", root, image_size=64, num_images=0, seed=0, classes=int(flags.get("--classes", 1)),
                       images=flags.get("--images", "images"), masks=flags.get("--masks", "masks"))


@pytest.mark.parametrize("form", MAKERS)
def test_every_form_loads_its_masks_exactly(form, tmp_path):
    truth = MAKERS[form](tmp_path)
    source = _source(form, tmp_path)
    assert source.ids() == sorted(truth)
    for sample_id, mask in truth.items():
        image, loaded = source.load(sample_id)
        assert image.dtype == np.uint8 and image.shape == (*mask.shape[:2], 3)
        assert loaded.dtype == bool and loaded.shape == mask.shape
        if form == "jpeg-masks":  # thresholded: JPEG may move an edge pixel, never more
            assert (loaded != mask).mean() < 0.01, sample_id
        else:
            np.testing.assert_array_equal(loaded, mask, err_msg=sample_id)


def test_multi_class_items_have_one_channel_per_class(tmp_path):
    MAKERS["labels"](tmp_path)
    source = _source("labels", tmp_path)
    item = SegmentationDataset(source, source.ids()[:1], lambda image, mask, seed: (image, mask))[0]
    assert item["mask"].shape == (CLASSES, *item["image"].shape[1:])
    assert source.class_names == ["1", "2", "3"]


def test_class_folders_are_the_classes_in_sorted_order(tmp_path):
    MAKERS["class-folders"](tmp_path)
    assert _source("class-folders", tmp_path).class_names == sorted(CLASS_FOLDERS)


def test_sixteen_bit_grey_uses_the_whole_range_instead_of_clipping(tmp_path):
    values = np.array([[0, 257, 257 * 100], [257 * 200, 65535, 128]], dtype=np.uint16)
    save(values, tmp_path / "grey16.tif")
    save(values, tmp_path / "grey16.png")
    for path in (tmp_path / "grey16.tif", tmp_path / "grey16.png"):
        rgb = read_rgb(path)
        np.testing.assert_array_equal(rgb[..., 0], [[0, 1, 100], [200, 255, 0]], err_msg=path.name)
        assert (rgb == rgb[..., :1]).all()


def test_sixteen_bit_rgb_tiff_keeps_the_high_byte_of_each_sample(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 65536, size=(5, 7, 3)).astype(np.uint16)
    write_rgb16_tiff(tmp_path / "rgb16.tif", rgb)
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgb16.tif"), rgb >> 8)


def test_rgba_images_drop_alpha(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, size=(5, 7, 4), dtype=np.uint8)
    save(rgba, tmp_path / "a.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.png"), rgba[..., :3])


def test_split_lists_are_the_split(tmp_path):
    truth = MAKERS["split-lists"](tmp_path)
    source = _source("split-lists", tmp_path)
    expected = write_split_lists(tmp_path, sorted(truth))
    assert default_split(source, seed=5) == {name: sorted(ids) for name, ids in expected.items()}
    assert "split from train.txt, val.txt, test.txt" in source.summary


def test_without_val_list_validation_is_carved_from_train_and_unlisted_pairs_are_counted(tmp_path):
    ids = sorted(make_png(tmp_path))
    (tmp_path / "train.txt").write_text("\n".join(ids[:7]) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(ids[7:9]) + "\n")
    source = FolderSource(tmp_path)
    split = default_split(source, seed=0)
    assert sorted(split["train"] + split["val"]) == ids[:7] and len(split["val"]) == 1
    assert split["test"] == ids[7:9]
    assert "(1 pairs are in no list and are not used)" in source.summary


def test_without_lists_the_split_is_the_seeded_one(tmp_path):
    ids = sorted(make_png(tmp_path))
    split = default_split(FolderSource(tmp_path), seed=3)
    assert split == default_split(FolderSource(tmp_path), seed=3)
    assert sorted(split["train"] + split["val"] + split["test"]) == ids
    assert [len(split[n]) for n in ("train", "val", "test")] == [8, 1, 1]


def test_summary_says_how_the_masks_were_read(tmp_path):
    make_png(tmp_path)  # half 0/255, half 0/1
    assert FolderSource(tmp_path).summary.endswith("binary; masks read as: 5 0/1, 5 0/255")
    jpeg = tmp_path / "jpeg"
    MAKERS["jpeg-masks"](jpeg)
    assert "masks read as: 10 JPEG, thresholded at 128" in FolderSource(jpeg).summary


def test_official_datasets_stay_binary(tmp_path):
    with pytest.raises(DatasetError, match="dataset isic2018 is binary: --classes 3 needs --dataset folder"):
        open_source("isic2018", tmp_path, image_size=64, num_images=0, seed=0, classes=3)
    with pytest.raises(DatasetError, match="--images and --masks name the folders of --dataset folder"):
        open_source("isic2018", tmp_path, image_size=64, num_images=0, seed=0, images="Original")


def test_a_colour_mask_is_refused(tmp_path):
    make_png(tmp_path, count=3)
    colour = np.zeros((*np.asarray(Image.open(tmp_path / "masks" / "case00.png")).shape, 3), np.uint8)
    colour[..., 0] = 255
    save(colour, tmp_path / "masks" / "case00.png")
    with pytest.raises(DatasetError, match="case00.png is a colour image"):
        FolderSource(tmp_path)
