"""`paanet-fast doctor`: what this machine has, and whether every backend computes PAANet right on it.

The first command to run on a new machine. It prints the versions that matter (torch, CUDA runtime
and driver, triton, the compilers, what the extension was built for), each backend's availability
(and why not), then checks every available backend on every device present (the CPU and each GPU)
against the reference backend: forward and backward of both operators on small odd shapes in
float32, float16 and bfloat16 (paanet_fast.compare, the comparison `auto`'s first-use check uses
too), and of a small PAANet in float32; then a short timing of each against reference and
portable. It ends with one PASS/FAIL line per backend and device; any FAIL makes the exit status 1.
Triton on CPU tensors (TRITON_INTERPRET=1, its interpreter) gets the float32 operators on the tiny
case only: the model would take a minute there.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import time
from typing import Any, Callable

import torch

from . import backends
from .compare import SMALL, TINY, OpShapes, compare_backends, mismatch, no_tf32

CHECKED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Whole-model outputs and gradients (eval mode, float32) pass through a dozen operator calls and the
# encoder; the compiled and portable backends differ from the reference by 5e-6 at most on this CPU.
MODEL_TOLERANCE = 1e-4
# The timing case: the model's strides 4 to 32 under a 128 x 128 GAM, 16 channels per scale.
TIMING_SHAPES = OpShapes(2, tuple((16, 128 // s, 128 // s) for s in (4, 8, 16, 32)), (128, 128), (128, 128))


def _command_line(*command: str) -> str | None:
    """The first line `command` prints, or None when it is missing or fails."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return lines[0].strip() if lines else None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _build_info() -> dict[str, Any]:
    """Every upper-case field of paanet_fast._build_info (written by setup.py; fields vary by version)."""
    try:
        info = importlib.import_module("paanet_fast._build_info")
    except ImportError:
        return {"missing": "paanet_fast/_build_info.py not found (the extension was not built by setup.py)"}
    return {k: v for k, v in vars(info).items() if k.isupper()}


def _kernel_abi(build: dict[str, Any]) -> str:
    """Which torch releases the compiled kernels load into, as the build recorded it."""
    if "TORCH_VERSION" not in build:
        return "no build record"
    if "STABLE_ABI" not in build:
        return f"tied to torch {build['TORCH_VERSION']} (a build from before the stable ABI)"
    return (f"stable ABI: load into torch {build['STABLE_ABI']} and newer, Python {build.get('PY_LIMITED_API', '?')} "
            f"and newer (abi3); compiled against torch {build['TORCH_VERSION']}")


def _nvcc() -> str | None:
    """The last line of `nvcc --version` (its release), for the nvcc a build would use."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = os.path.join(home, "bin", "nvcc") if home else shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    try:
        done = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def versions() -> dict[str, Any]:
    """Python, torch, CUDA (runtime, driver, cuDNN), triton, compilers, the build's record, the CPU and GPUs."""
    gpus = [{"name": torch.cuda.get_device_name(i), "capability": "%d.%d" % torch.cuda.get_device_capability(i),
             "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    build = _build_info()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cuda_driver": _command_line("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": _package_version("triton"),
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "cxx": _command_line(os.environ.get("CXX", "c++"), "--version"),
        "nvcc": _nvcc(),
        "torch_cuda_archs": torch.cuda.get_arch_list() if torch.cuda.is_available() else None,
        "build": build,
        "kernels": _kernel_abi(build),
        "cpu": _cpu_name(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "threads": torch.get_num_threads(),
        "gpus": gpus,
    }


def backend_status() -> dict[str, dict[str, Any]]:
    """Each known backend: available here or not, and why not."""
    available = set(backends.available_backends())
    hint = {"cuda": " (no CUDA GPU)", "triton": " (no CUDA GPU; CPU tensors only under TRITON_INTERPRET=1)"}
    return {name: {"available": name in available,
                   "why_not": None if name in available else backends.unavailable_reason(name)
                   or "no device it computes is present" + hint.get(name, "")}
            for name in backends.KNOWN_BACKENDS}


def devices() -> list[torch.device]:
    return [torch.device("cpu")] + [torch.device("cuda", i) for i in range(torch.cuda.device_count())]


def _interpreted(name: str, device: torch.device) -> bool:
    return name == "triton" and device.type == "cpu"  # Triton's interpreter: numpy, slow, no half types


def dtypes_for(name: str, device: torch.device) -> list[torch.dtype]:
    """The dtypes the check covers: float32, and the half types the backend and the card compute."""
    if _interpreted(name, device):
        return [torch.float32]
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        return [torch.float32, torch.float16]  # no bfloat16 arithmetic before sm_80
    return list(CHECKED_DTYPES)


def _model_outputs_and_grads(name: str, device: torch.device, x: torch.Tensor,
                             state: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    from .model import PAANet

    with torch.random.fork_rng(devices=[]):  # the same weights every time, the caller's random state untouched
        torch.manual_seed(0)
        model = PAANet("resnet18", encoder_weights=None, growth=8, backend=name).to(device).eval()
    if state is not None:
        model.load_state_dict(state)
    out = model(x, return_aux=True)
    tensors = {"logits": out.logits, **{f"aux_logits[{i}]": t for i, t in enumerate(out.aux_logits)},
               **{f"gam_logits[{i}]": t for i, t in enumerate(out.gam_logits)}}
    weights = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=weights).to(device)).sum() for t in tensors.values())
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return {**{k: t.detach() for k, t in tensors.items()},
            **{f"grad {n}": g for (n, _), g in zip(model.named_parameters(), grads)},
            "_state": model.state_dict()}


def check_model(name: str, device: torch.device) -> list[str]:
    """A resnet18 PAANet (random weights) with backend `name` against the reference backend in
    float32: every output and every parameter gradient (problems, one per line).

    Eval mode: in train mode the batch norm of 1 x 2 maps at stride 32 turns a 1e-7 difference
    into 1e-4. TF32 is off, so that the reference's convolutions compute in float32 too.
    """
    x = torch.randn(2, 3, 37, 29, generator=torch.Generator().manual_seed(2)).to(device)
    with no_tf32():
        expected = _model_outputs_and_grads("reference", device, x, None)
        state = expected.pop("_state")
        try:
            actual = _model_outputs_and_grads(name, device, x, state)
        except Exception as exc:  # noqa: BLE001  (the failure is the finding)
            return [f"PAANet: {type(exc).__name__}: {str(exc).strip()[:300]}"]
    return [f"PAANet {key} {why}" for key, value in expected.items()
            if (why := mismatch(actual[key], value, torch.float32, MODEL_TOLERANCE))]


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int = 5) -> float:
    """Median seconds of `fn` after one warm-up call."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def time_backend(name: str, device: torch.device) -> float:
    """Median milliseconds of one forward and backward of both operators at TIMING_SHAPES, float32."""
    backend = backends.resolve(name, device)
    shapes = TIMING_SHAPES
    gen = torch.Generator().manual_seed(3)
    features = [torch.randn(shapes.batch, *f, generator=gen).to(device).requires_grad_() for f in shapes.features]
    channels = sum(c for c, _, _ in shapes.features)
    weight = (torch.randn(1, channels, 3, 3, generator=gen) / channels ** 0.5).to(device).requires_grad_()
    bias = torch.zeros(1, device=device, requires_grad=True)

    def step() -> None:
        _, gam = backend.mini_decoder(features, weight, bias, shapes.size)
        products = backend.gam_multiply(features, gam, False)
        torch.autograd.grad(sum(p.sum() for p in products), [*features, weight, bias])
    return 1e3 * _timed(step, device)


def check(name: str, device: torch.device) -> dict[str, Any]:
    """Backend `name` on `device` against the reference: the operators' problems per dtype, the model's."""
    backend, reference = backends.resolve(name, device), backends.resolve("reference", device)
    shapes = (TINY,) if _interpreted(name, device) else SMALL
    result: dict[str, Any] = {"backend": name, "device": str(device), "interpreted": _interpreted(name, device),
                              "operators": {}}
    for dtype in dtypes_for(name, device):
        problems = compare_backends(backend, reference, device, dtype, shapes)
        result["operators"][str(dtype).removeprefix("torch.")] = problems
    # The interpreter would take a minute over the model: its operators are checked above.
    result["model_float32"] = [] if result["interpreted"] else check_model(name, device)
    result["passed"] = not result["model_float32"] and not any(result["operators"].values())
    return result


def _problems(result: dict[str, Any]) -> list[str]:
    return [f"{dtype}: {p}" for dtype, ps in result["operators"].items() for p in ps] + result["model_float32"]


def _runs_on(name: str, device: torch.device) -> bool:
    try:
        backends.resolve(name, device)
    except (RuntimeError, ValueError):  # not available, or computes other devices' tensors
        return False
    return True


def run(emit: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The whole report; `emit` receives its text a section or a check at a time, as they finish."""
    report: dict[str, Any] = {"versions": versions(), "backends": backend_status(), "checks": []}
    emit(format_header(report))
    for device in devices():
        baseline_ms = {name: time_backend(name, device) for name in ("reference", "portable")}
        checks = [{"backend": "reference", "device": str(device), "ms": baseline_ms["reference"], "baseline": True}]
        emit(format_check(checks[0]))
        for name in [n for n in backends.KNOWN_BACKENDS[1:] if _runs_on(n, device)]:
            result = check(name, device)
            if result["passed"] and not result["interpreted"]:
                result["ms"] = baseline_ms.get(name) or time_backend(name, device)
                result["speedup_vs_reference"] = baseline_ms["reference"] / result["ms"]
                if name != "portable":
                    result["speedup_vs_portable"] = baseline_ms["portable"] / result["ms"]
            checks.append(result)
            emit(format_check(result))
        report["checks"] += checks
    report["passed"] = all(c.get("passed", True) for c in report["checks"])
    emit(format_result(report))
    return report


def format_header(report: dict[str, Any]) -> str:
    lines = ["== versions"]
    for key, value in report["versions"].items():
        if isinstance(value, dict):
            lines += [f"{key}:"] + [f"  {k} = {v!r}" for k, v in value.items()]
        elif isinstance(value, list):
            lines += [f"{key}: {'none' if not value else ''}"] + [f"  {v}" for v in value]
        else:
            lines.append(f"{key}: {value}")
    lines.append("== backends")
    for name, s in report["backends"].items():
        lines.append(f"{name:10s} {'available' if s['available'] else 'unavailable: ' + s['why_not']}")
    lines.append("== each backend against the reference (problems listed), and the time of both operators, "
                 f"forward + backward, float32, {TIMING_SHAPES.describe()}")
    return "\n".join(lines)


def format_check(c: dict[str, Any]) -> str:
    timing = f"{c['ms']:9.2f} ms" if "ms" in c else "        -   "
    if c.get("baseline"):
        return f"{c['backend']:10s} {c['device']:8s} {timing}"
    speed = ", ".join(f"x{c[key]:.2f} vs {key.removeprefix('speedup_vs_')}"
                      for key in ("speedup_vs_reference", "speedup_vs_portable") if key in c)
    checked = ", ".join(c["operators"]) + " operators; " + \
        ("Triton interpreter: no PAANet, not timed" if c["interpreted"] else "float32 PAANet")
    return "\n".join([f"{c['backend']:10s} {c['device']:8s} {timing}  {speed}  [{checked}]"]
                     + [f"    {p}" for p in _problems(c)])


def format_result(report: dict[str, Any]) -> str:
    lines = ["== result"]
    for c in report["checks"]:
        if not c.get("baseline"):
            problems = _problems(c)
            lines.append(f"{'PASS' if c['passed'] else 'FAIL'} {c['backend']} on {c['device']}"
                         + ("" if c["passed"] else f": {len(problems)} problem(s), first: {problems[0]}"))
    return "\n".join(lines)


def main(json_path: str | None = None) -> int:
    """Run the checks, printing the text report as it goes, and write the JSON report to
    `json_path` ("-": on stdout, instead of the text). Returns 0 when every backend passed on
    every device, else 1."""
    quiet = json_path == "-"
    report = run(emit=(lambda text: None) if quiet else (lambda text: print(text, flush=True)))
    if json_path == "-":
        print(json.dumps(report, indent=2, default=str))
    elif json_path is not None:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return 0 if report["passed"] else 1
