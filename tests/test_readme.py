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
