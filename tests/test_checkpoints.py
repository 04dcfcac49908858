"""best.pt (weights and config) and last.pt (everything resume needs); files that are not checkpoints;
resuming a run that has finished."""
from __future__ import annotations

import argparse
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from fake_datasets import one_thread, single_thread  # noqa: F401 (fixture)
from paanet_fast import PAANet
from paanet_fast.checkpoint import MODEL_KEYS, TRAINING_KEYS, RunError, load_checkpoint, model_from_checkpoint
from paanet_fast.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = ["--num-images", "10", "--image-size", "64", "--batch-size", "4", "--workers", "0", "--backend", "cpp",
        "--encoder", "resnet18", "--encoder-weights", "none", "--lr", "1e-3", "--device", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished one-epoch synthetic run (its only epoch is also its best)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    with one_thread():
        assert main(["train", "--dataset", "synthetic", "--out", str(out), "--epochs", "1", *TINY]) == 0
    return out


def test_best_holds_weights_and_config_only_and_last_everything_resume_needs(run):
    best = torch.load(run / "best.pt", weights_only=True)
    last = torch.load(run / "last.pt", weights_only=True)
    assert set(best) == set(MODEL_KEYS)
    assert set(last) == set(MODEL_KEYS) | set(TRAINING_KEYS)
    assert best["epoch"] == last["epoch"] == 1 and best["val_dsc"] == last["history"][0]["val_dsc"]
    assert best["val_scores"] == {k: v for k, v in last["history"][0].items() if k.startswith("val_")}
    assert {"val_dsc", "val_miou", "val_recall", "val_precision"} <= set(best["val_scores"])
    assert best["config"] == last["config"] and best["split"] == last["split"]
    # Adam keeps two moments per weight: the weights-only file is about a third of last.pt.
    assert (run / "best.pt").stat().st_size < 0.4 * (run / "last.pt").stat().st_size


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_evaluate_predict_and_the_model_loader_take_both(run, tmp_path, name):
    checkpoint = run / name
    model = model_from_checkpoint(load_checkpoint(checkpoint), "cpp")
    last = torch.load(run / "last.pt", weights_only=True)
    assert all(torch.equal(v, last["model"][k]) for k, v in model.state_dict().items())
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval"), "--workers", "0",
                 "--backend", "cpp"]) == 0
    assert (tmp_path / "eval" / "scores.json").is_file()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "p"),
                 "--backend", "cpp"]) == 0
    assert (tmp_path / "p" / "masks" / "a.png").is_file()


def _not_checkpoints(folder, run):
    """name -> (file maker, what the message must say the file is)."""
    last = (run / "last.pt").read_bytes()

    def zip_of_text(path):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")

    return {
        "text.pt": (lambda p: p.write_text("101 is not a checkpoint\n"), r"not a file written by torch\.save"),
        "empty.pt": (lambda p: p.write_bytes(b""), "the file is empty"),
        "image.png": (lambda p: Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p), "not a file written by torch"),
        "truncated.pt": (lambda p: p.write_bytes(last[:len(last) // 2]), "truncated, damaged"),
        "foreign.zip": (zip_of_text, "truncated, damaged, or not written by torch.save"),
        "tensor.pt": (lambda p: torch.save(torch.arange(3.0), p), "torch.save file of a Tensor, not of a dict"),
        "dict.pt": (lambda p: torch.save({"weights": torch.ones(2)}, p), r"lacks \['model', 'model_config'"),
        "unsafe.pt": (lambda p: torch.save({"model": {}, "args": argparse.Namespace(lr=1)}, p),
                      "Python objects other than tensors"),
    }


@pytest.mark.parametrize("name", ["text.pt", "empty.pt", "image.png", "truncated.pt", "foreign.zip", "tensor.pt",
                                  "dict.pt", "unsafe.pt"])
def test_a_file_that_is_not_a_checkpoint_says_what_it_is_not_and_what_a_checkpoint_is(run, tmp_path, capsys, name):
    make, what = _not_checkpoints(tmp_path, run)[name]
    path = tmp_path / name
    make(path)
    with pytest.raises(RunError, match=f"{name} is not a paanet-fast checkpoint: .*{what}.*; a paanet-fast "
                                       r"checkpoint is the best\.pt or last\.pt that `paanet-fast train` writes"):
        load_checkpoint(path)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(path), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert f"{path} is not a paanet-fast checkpoint" in err and "Traceback" not in err


def test_a_run_folder_given_as_checkpoint_points_at_its_files(run):
    with pytest.raises(RunError, match=f"checkpoint {run} is a folder; .*pass {run / 'best.pt'}"):
        load_checkpoint(run)


def test_resuming_from_a_weights_only_file_is_refused(run, tmp_path, capsys):
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "last.pt").write_bytes((run / "best.pt").read_bytes())
    assert main(["train", "--out", str(tmp_path / "copy"), "--resume"]) == 2
    assert "lacks the training state ['optimizer'" in capsys.readouterr().err


def test_resuming_a_finished_run_says_so_and_more_epochs_continue_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--out", str(out), "--epochs", "1", *TINY]) == 0
    finished = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().out
    assert f"nothing left to train: the run in {out} has finished epoch 1, and --epochs is 1" in said
    assert f"paanet-fast train --out {out} --resume --epochs N, with N above 1" in said
    assert (out / "last.pt").read_bytes() == finished
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["epochs"] == 2
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    assert "epoch 2/2" in capsys.readouterr().out


def _masks(folder):
    return {p.name: p.read_bytes() for p in sorted((folder / "masks").iterdir())}


def test_a_run_exported_as_a_pretrained_folder_is_taken_wherever_its_checkpoint_is(run, tmp_path, capsys):
    folder = tmp_path / "shared"
    assert main(["export", "--checkpoint", str(run / "best.pt"), "--format", "pretrained", "--out", str(folder)]) == 0
    assert capsys.readouterr().out == f"wrote {folder}: config.json, model.safetensors, README.md, training.json\n"
    best = torch.load(run / "best.pt", weights_only=True)
    card = (folder / "README.md").read_text()
    assert "## Dataset\n\nsynthetic\n" in card and f"| val_dsc | {best['val_dsc']:.4f} |" in card
    assert f"| val_miou | {best['val_scores']['val_miou']:.4f} |" in card and "| epoch | 1 |" in card
    model = PAANet.from_pretrained(folder, backend="cpp")
    assert all(torch.equal(v, best["model"][k]) for k, v in model.state_dict().items())

    scores = {}
    for name, checkpoint in (("folder", folder), ("best", run / "best.pt")):
        assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / name), "--workers", "0",
                     "--backend", "cpp"]) == 0
        scores[name] = json.loads((tmp_path / name / "scores.json").read_text())
    different = {"checkpoint", "images_per_second"}
    assert {k: v for k, v in scores["folder"].items() if k not in different} == \
        {k: v for k, v in scores["best"].items() if k not in different}
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (41, 53, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    for name, checkpoint in (("folder", folder), ("best", run / "best.pt")):
        assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "a.png"), "--out",
                     str(tmp_path / f"p-{name}"), "--backend", "cpp"]) == 0
    assert _masks(tmp_path / "p-folder") == _masks(tmp_path / "p-best")


def test_a_saved_model_without_its_run_says_what_evaluate_and_predict_need(tmp_path, capsys):
    folder = PAANet("resnet18", encoder_weights=None, growth=8, num_layers=1).eval().save_pretrained(tmp_path / "m")
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["evaluate", "--checkpoint", str(folder), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert (f"{folder} holds a model without the run it was trained in (training.json, which `paanet-fast export "
            "--format pretrained` writes from a run's checkpoint): evaluate needs its dataset") in err
    predict = ["predict", "--checkpoint", str(folder), str(tmp_path / "a.png"), "--out", str(tmp_path / "p")]
    assert main(predict) == 2
    assert "does not record the image size the model was trained at" in capsys.readouterr().err
    assert main([*predict, "--image-size", "32"]) == 0
    assert (tmp_path / "p" / "masks" / "a.png").is_file()
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", str(folder), "--format", "pretrained", "--out", str(tmp_path / "x"),
              "--opset", "17"])
    assert "--opset applies to --format onnx" in capsys.readouterr().err
