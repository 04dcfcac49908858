"""What `pip install .` must bring, and what `import paanet_fast` must not need.

The command line (train, evaluate, predict) is installed as a console script by a plain install,
so every package it imports is a dependency of the package; the package itself, the operators,
the model, the loss, the metrics and checkpoint loading import none of the command line's packages.
"""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "paanet_fast"
# Imported lazily, where used, by features behind an extra (or, for triton, by torch's own dependency).
OPTIONAL = {"segmentation_models_pytorch": "encoders", "timm": "encoders", "huggingface_hub": "hub",
            "onnx": "export", "onnxscript": "export", "onnxruntime": "export", "triton": "torch"}
COMMAND_LINE_ONLY = ("tqdm", "matplotlib", "albumentations", "cv2")


def _canonical(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_level_modules() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"paanet_fast", "__future__"}


def test_every_package_the_code_imports_is_a_dependency_or_behind_an_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = {_canonical(r) for r in project["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level_modules() - set(OPTIONAL)):
        names = {_canonical(d) for d in distributions.get(module, [module])}
        if not names & dependencies:
            missing[module] = sorted(names)
    assert missing == {}, f"imported by paanet_fast but not in project.dependencies: {missing}"
    extras = project["optional-dependencies"]
    assert "segmentation-models-pytorch" in {_canonical(r) for r in extras["encoders"]}
    assert {"onnx", "onnxscript", "onnxruntime"} <= {_canonical(r) for r in extras["export"]}
    assert "huggingface-hub" in {_canonical(r) for r in extras["hub"]}


def test_importing_the_package_and_the_model_imports_neither_safetensors_nor_huggingface_hub():
    """Both are imported where a model is saved or loaded (huggingface_hub only for a Hub id)."""
    script = ("import sys, paanet_fast; from paanet_fast import PAANet, PAANetLoss; "
              "print(sorted(m for m in ('safetensors', 'huggingface_hub') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_license_is_an_spdx_expression_with_its_file():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert [(ROOT / f).read_text().splitlines()[0] for f in project["license-files"]] == ["MIT License"]


def test_setup_py_with_an_old_setuptools_stops_with_the_fix():
    """A fresh venv has setuptools 65, which rejects the SPDX license string with no hint of the fix."""
    script = 'import runpy, setuptools; setuptools.__version__ = "65.5.0"; runpy.run_path("setup.py", run_name="__main__")'
    result = subprocess.run([sys.executable, "-c", script, "--version"], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 1
    assert 'needs setuptools >= 77 to build, found 65.5.0: run `pip install "setuptools>=77"` first' in result.stderr


def test_the_library_imports_none_of_the_command_lines_packages():
    """In a fresh interpreter where those packages cannot be imported, the library still works:
    the model on the compiled backend forward and backward, the loss, the metrics, checkpoint loading."""
    script = textwrap.dedent("""
        import sys
        BLOCKED = sys.argv[1].split(",")
        for name in BLOCKED:  # importing these now fails as if they were not installed
            sys.modules[name] = None

        import torch
        import paanet_fast
        from paanet_fast import PAANet, PAANetLoss, metrics, ops
        from paanet_fast.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: F401

        torch.manual_seed(0)
        net = PAANet("resnet18", encoder_weights=None, backend="cpp", growth=8)
        x, target = torch.randn(1, 3, 37, 45), (torch.rand(1, 1, 37, 45) > 0.5).float()
        out = net(x, return_aux=True)
        PAANetLoss()(out, target).backward()
        metrics.summarize(metrics.per_image_scores(out.logits.detach(), target))
        print("imported:", sorted(m for m in BLOCKED if sys.modules[m] is not None))
    """)
    blocked = ",".join((*COMMAND_LINE_ONLY, *OPTIONAL.keys() - {"triton"}))
    result = subprocess.run([sys.executable, "-c", script, blocked], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "imported: []"
