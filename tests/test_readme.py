"""The README and `paanet-fast train --help` quote one measured figure for the synthetic run."""
from pathlib import Path

import pytest

from paanet_fast.cli import main
from paanet_fast.options import SYNTHETIC_MINUTES

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_and_train_help_quote_the_same_synthetic_run_length(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert f"a run of about {SYNTHETIC_MINUTES} minutes on 2 CPU cores" in " ".join(capsys.readouterr().out.split())
    [line] = [line for line in README.read_text().splitlines()
              if line.startswith("paanet-fast train --dataset synthetic --out runs/demo")]
    assert line.endswith(f"# built-in data, ~{SYNTHETIC_MINUTES} min on 2 CPU cores")


def _readme_text() -> str:
    return " ".join(README.read_text().split())


def test_readme_says_how_long_setup_takes_what_it_gives_and_how_to_get_a_cpu_torch():
    """Issue 18, point 7: the README's setup facts, held to what scripts/setup.sh and pyproject.toml do."""
    import tomllib

    text = _readme_text()
    root = README.parent
    setup = (root / "scripts" / "setup.sh").read_text()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "The first build takes about 1.5 minutes on 2 cores" in text
    assert "(`.ci/run` after the first command) reuses the build unless its sources, torch or the switches" in text
    assert 'stamp="$venv/.paanet_fast_build"' in setup and "bash scripts/setup.sh" in (root / ".ci" / "run").read_text()
    assert "`source .venv/bin/activate` puts `paanet-fast` and `pytest` on your PATH" in text
    assert "venv=${VENV:-.venv}" in setup and '-e ".[test,' in setup
    assert "paanet-fast" in project["scripts"] and any(r.startswith("pytest") for r in project["optional-dependencies"]["test"])
    assert "The default torch is the CUDA build (about 6 GB in `.venv`); for a CPU-only one set `TORCH_SPEC`" in text
    assert "torch_spec=${TORCH_SPEC:-" in setup
    assert ('`TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu" '
            "bash scripts/setup.sh`") in text


def test_readme_says_what_the_synthetic_masks_hold_and_what_the_gam_columns_show():
    """Issue 18, point 9: a prediction covering a whole green shape was marked wrong (a distractor)."""
    from paanet_fast.data import synthetic
    from paanet_fast.visualize import GAM_CAPTION

    text = _readme_text()
    assert ("In the synthetic set the mask holds the ellipses and wobbly blobs only; rectangles and thick line "
            "segments of the same colours are distractors, never in the mask, and one drawn over a target cuts it "
            "out of the mask.") in text
    described = " ".join(synthetic.__doc__.split())
    assert "ellipses and wobbly blobs" in described and "rectangles and thick line segments" in described
    assert "NOT in the mask" in described and "never in the mask" in synthetic._distractor.__doc__
    assert "a distractor on top of a target cuts it" in (README.parent / "paanet_fast/data/synthetic.py").read_text()
    assert "the columns show G, also for the blocks marked `rev`, which attend with 1 - G" in text
    assert "show G = sigmoid(GAM logits); blocks marked 'rev' attend with 1 - G" in GAM_CAPTION


def test_readme_quotes_the_exit_statuses_and_the_calibration_images():
    from paanet_fast.cli import EXIT_ERROR, EXIT_SKIPPED
    from paanet_fast.train import CALIBRATION_IMAGES

    text = _readme_text()
    assert f"batch-norm statistics are recomputed from {CALIBRATION_IMAGES} training images" in text
    assert f"names and skips image files it cannot read: then its exit status is {EXIT_SKIPPED} (0: all written)" in text
    assert f"Errors are one line on stderr with exit status {EXIT_ERROR}" in text


def test_the_readmes_two_deep_supervision_lines_run_in_an_smp_style_step():
    """The lines of "In your own training loop", executed as written: every head gets smp's DiceLoss."""
    import torch

    smp = pytest.importorskip("segmentation_models_pytorch",
                              reason='needs the "encoders" extra (scripts/setup.sh installs it, so CI runs these)')
    from paanet_fast import PAANet, PAANetLoss

    text = README.read_text()
    block = text[text.index("**In your own training loop.**"):]
    block = block[block.index("```python\n") + len("```python\n"):block.index("```\n", block.index("```python"))]
    assert len(block.splitlines()) == 2
    torch.manual_seed(0)
    model = PAANet("resnet18", encoder_weights=None, growth=8, num_layers=1)
    images, masks = torch.randn(2, 3, 48, 40), (torch.rand(2, 1, 48, 40) > 0.5).float()
    scope = {"model": model, "images": images, "masks": masks, "smp": smp, "PAANetLoss": PAANetLoss}
    exec(block, scope)
    out, dice = scope["out"], smp.losses.DiceLoss("binary")
    expected = sum(dice(z, masks) for z in [out.logits, *out.aux_logits, *out.gam_logits])
    assert torch.allclose(scope["loss"], expected)
