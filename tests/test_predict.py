"""paanet-fast predict over folders: batches give the masks one-at-a-time gives, progress, skipped entries.

(Masks at each image's size and input errors: test_cli_commands.py; --onnx: test_export_onnx.py.)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deploy_cases import small_model, write_checkpoint, write_images
from fake_datasets import single_thread  # noqa: F401 (fixture)
from paanet_fast.cli import main
from paanet_fast.predict import checkpoint_network, collect_images, predicted_probabilities

pytestmark = pytest.mark.usefixtures("single_thread")
# Five sizes, none the network's; batches of 2 or 3 leave a partial last batch.
SHAPES = {"wide": (37, 61), "tall": (70, 45), "square": (64, 64), "big": (130, 97), "tiny": (9, 14)}
THRESHOLD = 0.5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("checkpoint") / "best.pt", small_model())


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), SHAPES)


def _masks(folder) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((folder / "masks").iterdir())}


def test_batches_give_the_probabilities_of_one_image_at_a_time(checkpoint, images):
    network, size = checkpoint_network(checkpoint, backend="cpp")
    alone = list(predicted_probabilities(network, images, size, batch_size=1))
    batched = list(predicted_probabilities(network, images, size, batch_size=3))
    assert [p for p, _, _ in batched] == [p for p, _, _ in alone] == images
    for (path, image, expected), (_, _, got) in zip(alone, batched):
        assert got.shape == image.shape[:2] == SHAPES[path.stem]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=lambda m: f"{path.name}: {m}")


def test_cli_batches_write_the_masks_of_one_image_at_a_time(checkpoint, images, tmp_path):
    folder = images[0].parent
    for batch_size in ("1", "3"):
        assert main(["predict", "--checkpoint", str(checkpoint), str(folder), "--out", str(tmp_path / batch_size),
                     "--batch-size", batch_size, "--backend", "cpp"]) == 0
    alone, batched = _masks(tmp_path / "1"), _masks(tmp_path / "3")
    assert alone.keys() == batched.keys() == SHAPES.keys()
    network, size = checkpoint_network(checkpoint, backend="cpp")
    for path, _, probabilities in predicted_probabilities(network, images, size, batch_size=1):
        # Batched convolutions may round differently: a pixel may flip only within rounding of the threshold.
        decided = (probabilities - THRESHOLD).abs().numpy() > 1e-5
        assert (alone[path.stem] == batched[path.stem])[decided].all(), path.name
    masks = np.concatenate([m.ravel() for m in alone.values()])
    assert set(np.unique(masks)) == {0, 255}, "the masks should not be all background or all foreground"


def test_progress_is_reported_per_batch(checkpoint, images):
    network, size = checkpoint_network(checkpoint, backend="cpp")
    finished: list[int] = []
    assert len(list(predicted_probabilities(network, images, size, batch_size=2, progress=finished.append))) == 5
    assert finished == [2, 2, 1]


def test_the_closing_line_counts_masks_in_singular_and_plural(checkpoint, images, tmp_path, capsys):
    for files in (images[:1], images[:2]):
        out = tmp_path / str(len(files))
        assert main(["predict", "--checkpoint", str(checkpoint), *map(str, files), "--out", str(out),
                     "--backend", "cpp"]) == 0
        noun = "mask" if len(files) == 1 else "masks"
        assert f"wrote {len(files)} {noun} to {out / 'masks'} and overlay" in capsys.readouterr().out


def test_folder_entries_that_are_not_images_are_named(checkpoint, tmp_path, capsys):
    folder = tmp_path / "mixed"
    write_images(folder, {"a": (40, 40), "b": (33, 50)})
    (folder / "notes.txt").write_text("not an image")
    (folder / "labels.csv").write_text("id,label\n")
    (folder / "sub").mkdir()
    (folder / ".DS_Store").write_bytes(b"\0")
    found = collect_images([folder])
    assert [p.name for p in found.files] == ["a.png", "b.png"]
    assert sorted(p.name for p in found.skipped) == ["labels.csv", "notes.txt", "sub"]
    assert main(["predict", "--checkpoint", str(checkpoint), str(folder), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "skipped 3 entries" in printed
    assert all(name in printed for name in ("labels.csv", "notes.txt", "sub/"))
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["a.png", "b.png"]


def test_many_skipped_entries_are_counted_not_all_listed(tmp_path):
    write_images(tmp_path, {"only": (40, 40)})
    for i in range(14):
        (tmp_path / f"note{i:02d}.txt").write_text("")
    from paanet_fast.predict import describe_skipped

    line = describe_skipped(collect_images([tmp_path]).skipped)
    assert line.startswith("skipped 14 entries that are not image files") and line.endswith("and 4 more")
    assert "note09.txt" in line and "note10.txt" not in line
    assert describe_skipped([tmp_path / "note00.txt"]).startswith("skipped 1 entry that is not an image file (")


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["--onnx", "model.onnx"], "not allowed with argument --checkpoint"),
])
def test_bad_predict_flags_are_usage_errors(checkpoint, images, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--checkpoint", str(checkpoint), str(images[0]), "--out", "unused", *flags])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_predict_needs_a_checkpoint_or_an_onnx_file(images, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", str(images[0]), "--out", "unused"])
    assert info.value.code == 2 and "one of the arguments --checkpoint --onnx is required" in capsys.readouterr().err


def test_unreadable_images_are_named_and_skipped_and_the_exit_status_says_so(checkpoint, tmp_path, capsys):
    """Issue 18: one corrupt image stopped the whole run (exit 2, no masks)."""
    folder = tmp_path / "mixed"
    write_images(folder, {"a": (40, 40), "d": (33, 50)})
    (folder / "b_garbage.png").write_bytes(b"not an image at all")
    data = (folder / "d.png").read_bytes()
    (folder / "c_cut.png").write_bytes(data[:len(data) // 2])  # header intact, data cut
    (folder / "b_zero.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    # batches of 2: [a, b_garbage], [b_zero, c_cut] (nothing to run), [d]
    argv = ["predict", "--checkpoint", str(checkpoint), str(folder), "--out", str(tmp_path / "out"), "--batch-size", "2"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "skipped 1 entry that is not an image file" in captured.out and "notes.txt" in captured.out
    assert "skipped 3 image files that could not be read" in captured.err
    assert all(f"cannot read image {folder / name}" in captured.err for name in ("b_garbage.png", "b_zero.png",
                                                                                 "c_cut.png"))
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["a.png", "d.png"]
    readable = _masks(tmp_path / "out")
    assert main([*argv[:3], str(folder / "a.png"), str(folder / "d.png"), "--out", str(tmp_path / "alone")]) == 0
    alone = _masks(tmp_path / "alone")
    assert all(np.array_equal(readable[name], alone[name]) for name in ("a", "d"))
