"""Every command-line error is one line on stderr, and a run refused before training leaves no run
folder (issue 18: `--device cuda` without a GPU printed a traceback; refused runs left a folder)."""
from __future__ import annotations

import pytest
import torch

from fake_datasets import single_thread  # noqa: F401 (fixture)
from paanet_fast.cli import EXIT_ERROR, main

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = ["--num-images", "10", "--image-size", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0",
        "--encoder-weights", "none"]


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_cuda_without_a_gpu_is_one_line_and_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, on any machine
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--out", str(out), "--device", "cuda", *TINY]) == EXIT_ERROR
    assert _one_error_line(capsys) == "paanet-fast train: error: --device cuda: CUDA is not available on this machine"
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "synthetic", "--backend", "cuda", "--device", "cpu"],
     "--backend cuda: backend 'cuda' computes ['cuda'] tensors, but the inputs are on cpu"),
    (["--dataset", "kvasir-instrument", "--data-root", "{tmp}/missing"], "{tmp}/missing"),
    (["--dataset", "synthetic", "--split-file", "{tmp}/split.json"], "{tmp}/split.json"),
])
def test_runs_refused_before_training_leave_no_run_folder(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert main(["train", "--out", str(out), *TINY, *flags]) == EXIT_ERROR
    assert message.format(tmp=tmp_path) in _one_error_line(capsys)
    assert not out.exists()


def test_an_unexpected_error_is_one_line_naming_its_type_unless_the_traceback_is_asked_for(tmp_path, capsys,
                                                                                          monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr("paanet_fast.evaluate.evaluate", fail)
    argv = ["evaluate", "--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path / "scores")]
    assert main(argv) == EXIT_ERROR
    assert _one_error_line(capsys) == ("paanet-fast evaluate: error: RuntimeError: something inside broke "
                                       "(PAANET_FAST_TRACEBACK=1 shows the traceback)")
    monkeypatch.setenv("PAANET_FAST_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="something inside broke"):
        main(argv)
