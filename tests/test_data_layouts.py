"""The three real dataset layouts: pairing by id, mask union, archives, and every bad-data error."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fake_datasets import make_dsb2018, make_isic2018, make_kvasir_instrument
from paanet_fast.data import DatasetError, open_source
from paanet_fast.data.common import read_mask, read_rgb
from paanet_fast.data.dsb2018 import open_dsb2018
from paanet_fast.data.isic2018 import open_isic2018
from paanet_fast.data.kvasir_instrument import open_kvasir_instrument

OPENERS = {"dsb2018": (make_dsb2018, open_dsb2018), "isic2018": (make_isic2018, open_isic2018),
           "kvasir-instrument": (make_kvasir_instrument, open_kvasir_instrument)}


@pytest.mark.parametrize("name", sorted(OPENERS))
def test_layout_pairs_every_image_with_its_own_mask(tmp_path, name):
    make, open_layout = OPENERS[name]
    truth = make(tmp_path)
    source = open_layout(tmp_path)
    assert source.ids() == sorted(truth)
    for sample_id, expected in truth.items():
        image, mask = source.load(sample_id)
        assert image.dtype == np.uint8 and image.shape == (*expected.shape, 3)
        np.testing.assert_array_equal(mask, expected)
        # the bright disc of the image lies exactly on the mask, so image and mask belong together
        assert image[mask].mean() > image[~mask].mean() + 100


def test_open_source_dispatches_by_name_and_requires_a_root(tmp_path):
    make_isic2018(tmp_path)
    assert open_source("isic2018", tmp_path, image_size=64, num_images=3, seed=0).name == "isic2018"
    with pytest.raises(DatasetError, match="needs --data-root"):
        open_source("dsb2018", None, image_size=64, num_images=3, seed=0)
    with pytest.raises(DatasetError, match="unknown dataset 'voc'"):
        open_source("voc", tmp_path, image_size=64, num_images=3, seed=0)


def test_dsb_unions_nuclei_and_drops_alpha(tmp_path):
    truth = make_dsb2018(tmp_path, count=3)
    sample_id = sorted(truth)[0]
    folder = tmp_path / "stage1_train" / sample_id
    rgba = np.asarray(Image.open(folder / "images" / f"{sample_id}.png"))
    assert rgba.shape[2] == 4
    image, mask = open_dsb2018(tmp_path / "stage1_train").load(sample_id)  # the folder itself works too
    np.testing.assert_array_equal(image, rgba[..., :3])
    nuclei = [np.asarray(Image.open(p)) > 0 for p in sorted((folder / "masks").iterdir())]
    np.testing.assert_array_equal(mask, nuclei[0] | nuclei[1])
    assert mask.sum() > max(n.sum() for n in nuclei)


def test_masks_stored_as_zero_one_or_zero_255_or_rgb_read_the_same(tmp_path):
    expected = np.zeros((6, 7), dtype=bool)
    expected[1:4, 2:6] = True
    for name, array in (("ones.png", expected.astype(np.uint8)), ("full.png", expected.astype(np.uint8) * 255),
                        ("rgb.png", np.repeat(expected[..., None].astype(np.uint8) * 255, 3, axis=2))):
        Image.fromarray(array).save(tmp_path / name)
        np.testing.assert_array_equal(read_mask(tmp_path / name), expected)
    Image.fromarray(np.full((5, 5), 7, np.uint8)).save(tmp_path / "grey.png")
    assert read_rgb(tmp_path / "grey.png").shape == (5, 5, 3)


@pytest.mark.parametrize("archives_nested", [True, False], ids=["nested", "flat"])
def test_kvasir_archives_are_unpacked_when_only_they_exist(tmp_path, archives_nested):
    truth = make_kvasir_instrument(tmp_path, archives=True, nested=archives_nested)
    assert not (tmp_path / "images").exists()
    source = open_kvasir_instrument(tmp_path)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{i}.jpg" for i in sorted(truth)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".unpack")] == []
    for sample_id, expected in truth.items():
        np.testing.assert_array_equal(source.load(sample_id)[1], expected)
    assert source.official_split == {"train": sorted(truth)[2:], "test": sorted(truth)[:2]}


# --- bad data: every case raises a DatasetError whose message names the file or folder -----------------

def _first_sample(root: Path, name: str) -> tuple[Path, Path]:
    """(image, mask) paths of the first sample of a fake layout."""
    if name == "dsb2018":
        folder = sorted((root / "stage1_train").iterdir())[0]
        return next((folder / "images").iterdir()), sorted((folder / "masks").iterdir())[0]
    if name == "isic2018":
        image = sorted((root / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))[0]
        return image, root / "ISIC2018_Task1_Training_GroundTruth" / f"{image.stem}_segmentation.png"
    image = sorted((root / "images").iterdir())[0]
    return image, root / "masks" / f"{image.stem}.png"


def _raises_naming(path: Path, open_layout, root: Path, load_all: bool = False) -> str:
    with pytest.raises(DatasetError) as info:
        source = open_layout(root)
        if load_all:
            for sample_id in source.ids():
                source.load(sample_id)
    assert str(path) in str(info.value), str(info.value)
    return str(info.value)


@pytest.fixture(params=sorted(OPENERS))
def layout(request, tmp_path):
    """(name, opener, root, first image, first mask) of a freshly made fake layout."""
    make, open_layout = OPENERS[request.param]
    make(tmp_path)
    return (request.param, open_layout, tmp_path, *_first_sample(tmp_path, request.param))


def test_corrupt_image_is_named(layout):
    _, open_layout, root, image, _ = layout
    image.write_bytes(b"this is not an image")
    assert "cannot read image" in _raises_naming(image, open_layout, root)


def test_truncated_image_is_named_when_loaded(layout):
    """A file whose header is fine but whose data is cut off passes the up-front check and fails on load."""
    _, open_layout, root, image, _ = layout
    data = image.read_bytes()
    image.write_bytes(data[:len(data) // 2])
    _raises_naming(image, open_layout, root, load_all=True)


def test_missing_mask_is_named(layout):
    name, open_layout, root, _, mask = layout
    if name == "dsb2018":
        shutil.rmtree(mask.parent)
        _raises_naming(mask.parent, open_layout, root)
    else:
        mask.unlink()
        assert "missing mask" in _raises_naming(mask, open_layout, root)


def test_image_and_mask_of_different_sizes_are_named(layout):
    _, open_layout, root, image, mask = layout
    Image.fromarray(np.zeros((13, 17), np.uint8)).save(mask)
    message = _raises_naming(mask, open_layout, root)
    assert str(image) in message and "13x17" in message


@pytest.mark.parametrize("name", sorted(OPENERS))
def test_missing_or_wrong_data_root_is_named(tmp_path, name):
    _, open_layout = OPENERS[name]
    missing = tmp_path / "nowhere"
    assert "does not exist" in _raises_naming(missing, open_layout, missing)
    wrong = tmp_path / "holiday_photos"
    wrong.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(wrong / "beach.jpg")
    _raises_naming(wrong, open_layout, wrong)


@pytest.mark.parametrize("name", sorted(OPENERS))
def test_empty_folders_are_named(tmp_path, name):
    make, open_layout = OPENERS[name]
    make(tmp_path, count=3, **({"test_count": 1} if name == "kvasir-instrument" else {}))
    image, _ = _first_sample(tmp_path, name)
    folder = image.parent.parent if name == "dsb2018" else image.parent
    if name == "dsb2018":
        for entry in folder.iterdir():
            shutil.rmtree(entry)
    else:
        for entry in folder.iterdir():
            if entry.suffix != ".txt":
                entry.unlink()
    _raises_naming(folder, open_layout, tmp_path)


def test_dsb_missing_image_and_stray_file_are_named(tmp_path):
    make_dsb2018(tmp_path, count=3)
    image, _ = _first_sample(tmp_path, "dsb2018")
    image.unlink()
    stray = tmp_path / "stage1_train" / "notes.csv"
    stray.write_text("id\n")
    message = _raises_naming(image, open_dsb2018, tmp_path)
    assert str(stray) in message and "2 problem(s)" in message


def test_isic_mask_without_image_is_named(tmp_path):
    make_isic2018(tmp_path, count=3)
    image, mask = _first_sample(tmp_path, "isic2018")
    image.unlink()
    assert "has no image" in _raises_naming(mask, open_isic2018, tmp_path)


def test_kvasir_list_problems_are_named(tmp_path):
    truth = make_kvasir_instrument(tmp_path, count=5, test_count=1)
    ids = sorted(truth)
    (tmp_path / "test.txt").write_text(f"{ids[0]}\n{ids[1]}\nghost\n")  # ids[1] is in train.txt too
    (tmp_path / "train.txt").write_text("\n".join(ids[1:4]) + "\n")  # ids[4] listed nowhere
    message = _raises_naming(tmp_path / "images" / f"{ids[4]}.jpg", open_kvasir_instrument, tmp_path)
    assert f"id {ids[1]} is listed in both" in message
    assert str(tmp_path / "images" / "ghost.jpg") in message
    (tmp_path / "test.txt").unlink()
    _raises_naming(tmp_path / "test.txt", open_kvasir_instrument, tmp_path)


def test_kvasir_corrupt_archive_is_named(tmp_path):
    make_kvasir_instrument(tmp_path, count=3, test_count=1, archives=True)
    archive = tmp_path / "masks.tar.gz"
    archive.write_bytes(archive.read_bytes()[:40])
    _raises_naming(archive, open_kvasir_instrument, tmp_path)
    assert not (tmp_path / "masks").exists()
