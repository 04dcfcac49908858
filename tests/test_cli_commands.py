"""The paanet-fast command line: entry points, flags and defaults, evaluate, predict, errors."""
from __future__ import annotations

import csv
import importlib.metadata
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fake_datasets import make_kvasir_instrument, one_thread, single_thread  # noqa: F401 (fixture)
from paanet_fast import metrics
from paanet_fast.checkpoint import load_checkpoint, model_from_checkpoint
from paanet_fast.cli import main
from paanet_fast.data import SegmentationDataset, SyntheticSource, default_split, image_to_tensor
from paanet_fast.data.transforms import PairTransform
from paanet_fast.train import PAPER_DEFAULTS, SYNTHETIC_DEFAULTS

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = ["--num-images", "10", "--image-size", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0",
        "--backend", "reference", "--seed", "3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch synthetic run made through the command line."""
    out = tmp_path_factory.mktemp("cli") / "run"
    with one_thread():
        assert main(["train", "--dataset", "synthetic", "--out", str(out), *TINY]) == 0
    return out


def test_console_script_and_python_m_entry_points():
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert [e.value for e in scripts if e.name == "paanet-fast"] == ["paanet_fast.cli:main"]
    result = subprocess.run([sys.executable, "-m", "paanet_fast", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "{doctor,train,evaluate,predict,export}" in result.stdout


@pytest.mark.parametrize("command, flags", [
    ("train", ["--dataset", "--data-root", "--out", "--epochs", "--batch-size", "--image-size", "--lr", "--encoder",
               "--encoder-weights", "--backend", "--seed", "--amp", "--workers", "--split-file", "--resume"]),
    ("evaluate", ["--checkpoint", "--dataset", "--data-root", "--split", "--out"]),
    ("predict", ["--checkpoint", "--onnx", "INPUT", "--out", "--batch-size"]),
    ("export", ["--checkpoint", "--out", "--opset", "--format"]),
    ("doctor", ["--json"]),
])
def test_every_flag_of_the_issue_exists(capsys, command, flags):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert [f for f in flags if f not in text] == []


def _captured_config(monkeypatch, argv):
    captured = {}
    monkeypatch.setattr("paanet_fast.train.train", lambda config, **kwargs: captured.update(config=config, **kwargs))
    assert main(argv) == 0
    return captured["config"]


def test_real_datasets_default_to_the_paper_and_flags_override(monkeypatch, tmp_path):
    config = _captured_config(monkeypatch, ["train", "--dataset", "kvasir-instrument", "--data-root", "d",
                                            "--out", str(tmp_path)])
    assert PAPER_DEFAULTS == {"epochs": 30, "batch_size": 8, "image_size": 256, "lr": 1e-4, "encoder": "resnet50",
                              "encoder_weights": "imagenet"}
    assert {k: getattr(config, k) for k in PAPER_DEFAULTS} == PAPER_DEFAULTS
    assert (config.amp, config.backend, config.seed, config.split_file) == ("none", "auto", 0, None)
    config = _captured_config(monkeypatch, ["train", "--dataset", "dsb2018", "--data-root", "d", "--out", str(tmp_path),
                                            "--epochs", "3", "--lr", "0.01", "--amp", "bf16", "--encoder-weights", "none",
                                            "--backend", "cpp", "--workers", "0", "--split-file", "s.json"])
    assert (config.epochs, config.lr, config.amp, config.encoder_weights, config.backend, config.workers,
            config.split_file, config.batch_size) == (3, 0.01, "bf16", "none", "cpp", 0, "s.json", 8)
    config = _captured_config(monkeypatch, ["train", "--dataset", "synthetic", "--out", str(tmp_path)])
    assert {k: getattr(config, k) for k in SYNTHETIC_DEFAULTS} == SYNTHETIC_DEFAULTS


def test_usage_and_data_errors_exit_2_with_a_message(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--dataset", "dsb2018", "--data-root", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert str(empty / "stage1_train") in capsys.readouterr().err
    assert main(["train", "--dataset", "isic2018", "--out", str(tmp_path / "r")]) == 2
    assert "needs --data-root" in capsys.readouterr().err
    for argv in (["train", "--out", str(tmp_path)], ["train", "--dataset", "synthetic", "--data-root", "x", "--out", "o"],
                 ["train", "--dataset", "synthetic", "--out", "o", "--amp", "fp8"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert not (tmp_path / "r").exists() or not (tmp_path / "r" / "last.pt").exists()


def test_a_corrupt_image_met_during_training_stops_it_naming_the_file(capsys, tmp_path):
    make_kvasir_instrument(tmp_path / "data", count=6, test_count=1)
    victim = sorted((tmp_path / "data" / "images").iterdir())[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[:len(data) * 2 // 3])  # header intact, data cut: found while loading
    argv = ["train", "--dataset", "kvasir-instrument", "--data-root", str(tmp_path / "data"), "--out",
            str(tmp_path / "run"), *TINY[2:], "--workers", "1", "--encoder", "resnet18", "--encoder-weights", "none"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "image file is truncated" in err
    assert (tmp_path / "run" / "train.log").read_text().startswith("device: cpu")  # training had begun


def test_split_file_is_reused(run, tmp_path):
    split = json.loads((run / "split.json").read_text())
    assert split == default_split(SyntheticSource(10, 64, 3), 3)  # seeded: the same split every time
    custom = {"train": split["train"][:4] + split["test"], "val": split["train"][4:], "test": split["val"]}
    (tmp_path / "custom.json").write_text(json.dumps(custom))
    out = tmp_path / "reuse"
    assert main(["train", "--dataset", "synthetic", "--out", str(out), *TINY, "--split-file",
                 str(tmp_path / "custom.json")]) == 0
    assert json.loads((out / "split.json").read_text()) == custom
    assert load_checkpoint(out / "last.pt")["split"] == custom


def _read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_evaluate_writes_consistent_scores_and_per_image_rows(run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--dataset", "synthetic", "--split", "all",
                 "--out", str(out), "--batch-size", "3", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert all(label in printed for label in ("DSC", "mIoU", "Recall", "Precision", "images/s"))
    scores = json.loads((out / "scores.json").read_text())
    keys = ["dsc", "miou", "recall", "precision"]
    assert set(keys + [k + "_std" for k in keys] + ["images_per_second"]) <= set(scores)
    assert scores["images_per_second"] > 0 and "forward" in scores["images_per_second_measures"]
    rows = _read_csv(out / "per_image.csv")
    assert [r["id"] for r in rows] == SyntheticSource(10, 64, 3).ids()
    for key, column in zip(keys, metrics.SCORES):
        values = np.array([float(r[column]) for r in rows])
        assert scores[key] == pytest.approx(values.mean(), abs=1e-12)
        assert scores[key + "_std"] == pytest.approx(values.std(), abs=1e-12)

    # the per-image rows agree with a by-hand computation from the model's own predictions
    state = load_checkpoint(run / "best.pt")
    model = model_from_checkpoint(state, "reference")
    source = SyntheticSource(10, 64, 3)
    dataset = SegmentationDataset(source, source.ids(), PairTransform(64, train=False))
    for row, item in zip(rows[:3], dataset):
        with torch.no_grad():
            predicted = (torch.sigmoid(model(item["image"][None]))[0, 0] > 0.5).numpy()
        truth = item["mask"][0].numpy() > 0.5
        overlap, total = (predicted & truth).sum(), predicted.sum() + truth.sum()
        expected = 2 * overlap / total if total else 1.0
        assert float(row["dsc"]) == pytest.approx(expected, abs=1e-12)


def test_evaluate_defaults_to_the_checkpoints_own_test_split(run, tmp_path):
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path), "--workers", "0"]) == 0
    split = json.loads((run / "split.json").read_text())
    assert [r["id"] for r in _read_csv(tmp_path / "per_image.csv")] == split["test"]
    assert json.loads((tmp_path / "scores.json").read_text())["num_images"] == len(split["test"])


def test_predict_writes_masks_and_overlays_at_each_image_size(run, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "inputs"
    folder.mkdir()
    shapes = {"wide": (37, 61), "tall": (70, 45)}
    for name, shape in shapes.items():
        Image.fromarray(rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    single = tmp_path / "single.jpg"
    Image.fromarray(rng.integers(0, 256, size=(50, 50, 3), dtype=np.uint8)).save(single)
    shapes["single"] = (50, 50)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "best.pt"), str(folder), str(single), "--out", str(out)]) == 0
    model = model_from_checkpoint(load_checkpoint(run / "best.pt"), "reference")
    for name, shape in shapes.items():
        mask = np.asarray(Image.open(out / "masks" / f"{name}.png"))
        overlay = np.asarray(Image.open(out / "overlays" / f"{name}.png"))
        source = np.asarray(Image.open(folder / f"{name}.png" if name != "single" else single).convert("RGB"))
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
        assert overlay.shape == (*shape, 3)
        np.testing.assert_array_equal(overlay[mask == 0], source[mask == 0])
        if name == "tall":  # the mask is the model's logits resized back to the image, thresholded
            resized, _ = PairTransform(64, train=False)(source, np.zeros(shape, bool), 0)
            with torch.no_grad():
                logits = F.interpolate(model(image_to_tensor(resized)[None]), size=shape, mode="bilinear")
            np.testing.assert_array_equal(mask == 255, (torch.sigmoid(logits[0, 0]) > 0.5).numpy())


def test_predict_errors_name_the_input(run, tmp_path, capsys):
    checkpoint = str(run / "best.pt")
    assert main(["predict", "--checkpoint", checkpoint, str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 2
    assert str(tmp_path / "missing.png") in capsys.readouterr().err
    (tmp_path / "no_images").mkdir()
    assert main(["predict", "--checkpoint", checkpoint, str(tmp_path / "no_images"), "--out", str(tmp_path)]) == 2
    assert str(tmp_path / "no_images") in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "fine.png")
    assert main(["predict", "--checkpoint", str(tmp_path / "nope.pt"), str(tmp_path / "fine.png"), "--out",
                 str(tmp_path)]) == 2
    assert "nope.pt" in capsys.readouterr().err
