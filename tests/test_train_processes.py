"""Training as separate processes: kill -9 then --resume, and torchrun with two CPU processes (gloo)."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

TINY_FLAGS = ["--dataset", "synthetic", "--num-images", "20", "--image-size", "64", "--batch-size", "4",
              "--encoder", "resnet18", "--encoder-weights", "none", "--backend", "reference", "--workers", "0",
              "--lr", "1e-3", "--device", "cpu"]
# One OpenMP thread per process: the tests share two cores with each other and with other work.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train_command(out, *flags):
    return [sys.executable, "-m", "paanet_fast", "train", "--out", str(out), *flags]


def _epochs(path):
    with open(path) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_kill_9_during_training_then_resume_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(_train_command(out, *TINY_FLAGS, "--epochs", "3"), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "last.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    killed_at = torch.load(out / "last.pt", weights_only=True)
    assert process.returncode == -signal.SIGKILL and killed_at["epoch"] < 3, "the run ended before the kill"
    rows_before = killed_at["history"]

    resumed = subprocess.run(_train_command(out, "--resume"), env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    final = torch.load(out / "last.pt", weights_only=True)
    assert final["epoch"] == 3 and _epochs(out / "metrics.csv") == [1, 2, 3]
    assert final["history"][:len(rows_before)] == rows_before  # continued, not restarted
    assert f"epoch {killed_at['epoch'] + 1}/3" in resumed.stdout and "epoch 1/3" not in resumed.stdout


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_torchrun_two_cpu_processes_train_with_ddp(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "paanet_fast", "train", "--out", str(out), *TINY_FLAGS, "--epochs", "1"]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    # gloo of torch 2.9 prints "[Gloo] Rank 0 is connected to 1 peer ranks..." to stdout itself
    printed = [line for line in result.stdout.splitlines() if not line.startswith("[Gloo] ")]
    assert printed[0] == "device: cpu | backend: reference | world size: 2"
    assert result.stdout.count("world size") == 1  # only rank 0 prints
    assert _epochs(out / "metrics.csv") == [1]
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["model"])
    # the 16 training images are shared out between the two processes, not trained twice
    assert state["history"][0]["train_images"] == 16
