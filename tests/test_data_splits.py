"""Splits: seeded and deterministic, official lists honoured, split files checked and reused."""
from __future__ import annotations

import json

import pytest

from paanet_fast.data import DatasetError, SyntheticSource, default_split, read_split, write_split
from paanet_fast.data.splits import carve_validation, random_split

IDS = [f"case{i:03d}" for i in range(57)]


def test_random_split_is_80_10_10_disjoint_and_complete():
    split = random_split(IDS, seed=3)
    assert [len(split[k]) for k in ("train", "val", "test")] == [45, 6, 6]
    assert sorted(split["train"] + split["val"] + split["test"]) == IDS
    assert all(split[k] == sorted(split[k]) for k in split)


def test_random_split_depends_only_on_seed_and_the_set_of_ids():
    assert random_split(IDS, seed=3) == random_split(list(reversed(IDS)), seed=3)
    assert random_split(IDS, seed=3) != random_split(IDS, seed=4)


def test_tiny_datasets_still_get_one_validation_and_one_test_sample():
    split = random_split(IDS[:4], seed=0)
    assert [len(split[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    with pytest.raises(DatasetError, match="at least 3 samples, got 2"):
        random_split(IDS[:2], seed=0)


def test_carved_validation_comes_from_the_official_train_list():
    train, test = IDS[:47], IDS[47:]
    split = carve_validation(train, test, seed=1)
    assert split["test"] == test
    assert sorted(split["train"] + split["val"]) == train and len(split["val"]) == 5
    assert split == carve_validation(train, test, seed=1) != carve_validation(train, test, seed=2)


def test_default_split_uses_official_lists_when_a_source_has_them():
    class Official:
        official_split = {"train": IDS[:50], "test": IDS[50:]}

        def ids(self):
            return IDS

    assert default_split(Official(), 0)["test"] == IDS[50:]
    synthetic = SyntheticSource(num_images=20, image_size=32, seed=0)
    assert default_split(synthetic, 5) == random_split(synthetic.ids(), 5)


def test_split_file_round_trip(tmp_path):
    split = random_split(IDS, seed=9)
    write_split(tmp_path / "split.json", split)
    assert json.loads((tmp_path / "split.json").read_text()) == split
    assert read_split(tmp_path / "split.json", IDS) == split


@pytest.mark.parametrize("content, message", [
    ('{"train": ["case000"], "val": ["case001"]}', "exactly the keys"),
    ('{"train": ["case000"], "val": ["case001"], "test": ["nope"]}', "id 'nope' in 'test' is not in the dataset"),
    ('{"train": ["case000"], "val": ["case000"], "test": []}', "id 'case000' is in both 'train' and 'val'"),
    ('{"train": [], "val": ["case001"], "test": []}', "'train' is empty"),
    ('{"train": "case000", "val": ["case001"], "test": []}', "'train' must be a list"),
    ('{"train": [', "cannot read split file"),
])
def test_bad_split_files_are_named(tmp_path, content, message):
    path = tmp_path / "my_split.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message) as info:
        read_split(path, IDS)
    assert str(path) in str(info.value)


def test_missing_split_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match=f"split file {tmp_path / 'absent.json'} does not exist"):
        read_split(tmp_path / "absent.json", IDS)
