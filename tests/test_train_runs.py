"""Training in-process: every layout trains, the run folder is complete, resume is exact, guards hold."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from fake_datasets import MAKERS, single_thread  # noqa: F401 (fixture)
from paanet_fast.checkpoint import MODEL_KEYS, TRAINING_KEYS, RunError
from paanet_fast.cli import main
from paanet_fast.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = dict(epochs=1, batch_size=4, image_size=64, lr=1e-3, encoder="resnet18", encoder_weights="none",
            workers=0, num_images=10, backend="reference")
TIMING_COLUMNS = {"train_seconds", "train_images_per_second"}


def _config(tmp_path, dataset, **changes):
    data_root = None
    if dataset != "synthetic":
        data_root = tmp_path / "data"
        if not data_root.exists():
            MAKERS[dataset](data_root)
        data_root = str(data_root)
    return TrainConfig(**{**TINY, "dataset": dataset, "data_root": data_root, "out": str(tmp_path / "run"), **changes})


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("dataset", ["synthetic", "dsb2018", "isic2018", "kvasir-instrument"])
def test_each_dataset_trains_one_epoch_and_fills_the_run_folder(tmp_path, dataset):
    config = _config(tmp_path, dataset)
    history = train(config)
    run = tmp_path / "run"
    expected = {"last.pt", "best.pt", "split.json", "config.json", "metrics.csv", "training_curves.png",
                "validation_samples.png", "train.log"}
    assert expected <= {p.name for p in run.iterdir()}
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert len(history) == 1 and 0 <= history[0]["val_dsc"] <= 1
    rows = _rows(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1"] and float(rows[0]["val_dsc"]) == history[0]["val_dsc"]
    assert json.loads((run / "config.json").read_text())["dataset"] == dataset
    split = json.loads((run / "split.json").read_text())
    assert set(split) == {"train", "val", "test"} and all(split.values())
    if dataset == "kvasir-instrument":  # the official test list is the test split
        assert split["test"] == sorted((tmp_path / "data" / "test.txt").read_text().split())
    for name, keys in (("last.pt", {*MODEL_KEYS, *TRAINING_KEYS}), ("best.pt", set(MODEL_KEYS))):
        state = torch.load(run / name, map_location="cpu", weights_only=True)
        assert state["epoch"] == 1 and state["config"]["dataset"] == dataset and state["split"] == split
        assert set(state) == keys, name
    first_line = (run / "train.log").read_text().splitlines()[0]
    assert first_line == "device: cpu | backend: reference | world size: 1"


def test_redirected_output_gets_one_line_per_epoch_and_no_progress_bar(tmp_path, capsys):
    """With stderr not a terminal (a file, a pipe, pytest's capture) the bar's carriage-return updates
    would fill the file (92 KB for one synthetic run): only the log's lines are written."""
    train(_config(tmp_path, "synthetic", epochs=2))
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    assert captured.err == ""
    epochs = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    straight = train(_config(tmp_path / "a", "synthetic", epochs=2))
    train(_config(tmp_path / "b", "synthetic", epochs=1))
    resumed = train(TrainConfig(dataset="synthetic", out=str(tmp_path / "b" / "run")), resume=True,
                    given={"epochs": 2, "out": str(tmp_path / "b" / "run")})
    assert [r["epoch"] for r in resumed] == [1, 2]
    for a, b in zip(straight, resumed):
        assert {k: v for k, v in a.items() if k not in TIMING_COLUMNS} == \
               {k: v for k, v in b.items() if k not in TIMING_COLUMNS}
    state_a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=True)
    state_b = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)
    for key, value in state_a["model"].items():
        assert torch.equal(value, state_b["model"][key]), key
    assert state_b["epoch"] == 2 and state_b["config"]["epochs"] == 2
    assert "resuming" in (tmp_path / "b" / "run" / "train.log").read_text()


def test_run_folder_guards(tmp_path):
    config = _config(tmp_path, "synthetic")
    with pytest.raises(RunError, match="no .*last.pt to resume from"):
        train(config, resume=True, given={})
    train(config)
    with pytest.raises(RunError, match="already holds a run"):
        train(config)
    with pytest.raises(RunError, match="--lr 0.5 differs from the run being resumed"):
        train(config, resume=True, given={"lr": 0.5})
    with pytest.raises(RunError, match="--batch-size must be at least 1"):
        _config(tmp_path, "synthetic", batch_size=0)


def test_encoder_weights_file_that_does_not_exist_is_reported(tmp_path):
    with pytest.raises(RunError, match="nothing.pt does not exist"):
        train(_config(tmp_path, "synthetic", encoder_weights=str(tmp_path / "nothing.pt")))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_on_the_cpu_with_the_compiled_backend(tmp_path, amp):
    """`paanet-fast train --amp` on the CPU with the cpp backend (what "auto" picks there). This test
    once ran the reference backend only, and passed while the cpp backend crashed under autocast."""
    out = tmp_path / "run"
    flags = ["--epochs", "1", "--batch-size", "4", "--image-size", "64", "--lr", "1e-3", "--encoder", "resnet18",
             "--encoder-weights", "none", "--workers", "0", "--num-images", "10", "--device", "cpu"]
    assert main(["train", "--dataset", "synthetic", "--out", str(out), "--amp", amp, "--backend", "cpp", *flags]) == 0
    assert (out / "train.log").read_text().splitlines()[0] == "device: cpu | backend: cpp | world size: 1"
    state = torch.load(out / "last.pt", weights_only=True)
    assert torch.isfinite(torch.tensor(state["history"][0]["train_loss"]))
    assert state["config"]["amp"] == amp
    assert ("scale" in state["scaler"]) == (amp == "fp16")  # the GradScaler runs for float16 only
    assert all(v.dtype != torch.float16 and v.dtype != torch.bfloat16 for v in state["model"].values())
