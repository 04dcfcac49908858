"""Times the fused operators and a PAANet training step per provider and prints a markdown table.

Providers: reference, torch.compile(reference) ("compile"), and the compiled backends of the device
("cuda" and, when importable, "triton" on a GPU; "cpp" on the CPU). Cases, at the issue's sizes
(B=8, four scales of 32 channels at strides 4/8/16/32 of a 256x256 output):
  mini_decoder and gam_multiply, forward (no grad) and forward+backward;
  one training step of PAANet(resnet50) with PAANetLoss and Adam (B=8, 256x256).
Each cell is the median of --repeats timed calls after --warmup calls (CUDA events on a GPU),
with the peak memory allocated during one call. On a GPU it also measures the card's copy
bandwidth (a large device-to-device copy), and each operator case's device time replayed from a
CUDA graph (without host overhead, as benchmarks/gpu_static.py models it) with the kernels it
launches and each one's device time (profiled), and gam_multiply's achieved bandwidth as a fraction
of the copy's; triton's host time with its launches skipped (its Python layers alone); and for each
compiled backend, a profile of the training step: the device's busy time against the wall time, the
operators' share of it, and the costliest kernels.

    python benchmarks/gpu_report.py                  # on a GPU machine (benchmarks/gpu_check.sh runs it)
    python benchmarks/gpu_report.py --device cpu --batch 1 --size 64 --encoder resnet18 --repeats 1
                                                     # a quick run of the script itself on a CPU

The table is printed and, when $OUT (or --out) names a folder, written there as gpu_report.md
with the raw numbers in gpu_report.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paanet_fast  # noqa: E402
from paanet_fast import PAANet, PAANetLoss, ops, reference  # noqa: E402
from paanet_fast.backends import available_backends  # noqa: E402

STRIDES = (4, 8, 16, 32)
MIB = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="output height and width (a multiple of 32)")
    parser.add_argument("--channels", type=int, default=32, help="channels of each of the four scales")
    parser.add_argument("--encoder", default="resnet50", help="encoder of the training step")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--providers", nargs="*", help="subset of the providers (default: all available)")
    parser.add_argument("--skip-model", action="store_true", help="time the operators only")
    parser.add_argument("--skip-compile-model", action="store_true",
                        help="leave torch.compile out of the training step (its compilation takes minutes)")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                        help="folder for gpu_report.md and gpu_report.json (default: $OUT)")
    args = parser.parse_args(argv)
    if args.size % 32:
        parser.error("--size must be a multiple of 32 (the coarsest scale has stride 32)")
    return args


# ---------------------------------------------------------------------------------------------
# Timing


@dataclass
class Measurement:
    ms: float | None = None      # median time of one call
    peak_mib: float | None = None  # peak memory allocated during one call (GPU only)
    host_ms: float | None = None  # median host time to issue one call on an idle stream (GPU only)
    error: str | None = None

    def cell(self, baseline: "Measurement | None") -> str:
        if self.error is not None:
            return f"error: {self.error}"
        text = f"{self.ms:.3f}"
        if baseline is not None and baseline.ms and baseline is not self:
            text += f" ({baseline.ms / self.ms:.1f}x)"
        return text


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> float:
    """Median wall time of fn() in milliseconds, each call synchronised (host overhead included)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mib(fn: Callable[[], object], device: str) -> float | None:
    """Peak memory allocated while fn() runs once (everything live at the time included)."""
    if device != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats()
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated() / MIB


def host_ms(fn: Callable[[], object], device: str, repeats: int) -> float | None:
    """Median host time of fn() in milliseconds, from an idle stream to the call's return: the Python
    and C++ layers and the launches, without waiting for the device (what an eager step pays where
    the device is faster than the host). None on the CPU, where it is the wall time."""
    return issue_ms(fn, device, repeats) if device == "cuda" else None


def issue_ms(fn: Callable[[], object], device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    synchronize(device)
    return statistics.median(times)


def measure(fn: Callable[[], object], args: argparse.Namespace) -> Measurement:
    try:
        ms = median_ms(fn, args.device, args.warmup, args.repeats)
        return Measurement(ms=ms, peak_mib=peak_mib(fn, args.device), host_ms=host_ms(fn, args.device, args.repeats))
    except Exception as exc:  # one provider failing must not lose the others' numbers
        traceback.print_exc()
        return Measurement(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")


# ---------------------------------------------------------------------------------------------
# Problems and providers


@dataclass
class OpProblem:
    features: list[torch.Tensor]
    weight: torch.Tensor
    bias: torch.Tensor
    gam: torch.Tensor
    size: tuple[int, int]
    grad_logits: torch.Tensor
    grad_gam: torch.Tensor
    grad_attended: list[torch.Tensor] = field(default_factory=list)


def op_problem(args: argparse.Namespace) -> OpProblem:
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(args.device)

    features = [rand(args.batch, args.channels, args.size // s, args.size // s) for s in STRIDES]
    size = (args.size, args.size)
    return OpProblem(features=features, weight=rand(1, args.channels * len(STRIDES), 3, 3) * 0.1, bias=rand(1),
                     gam=torch.rand(args.batch, 1, *size, generator=gen).to(args.device), size=size,
                     grad_logits=rand(args.batch, 1, *size), grad_gam=rand(args.batch, 1, *size),
                     grad_attended=[rand(*f.shape) for f in features])


def providers(args: argparse.Namespace) -> list[str]:
    compiled = {"cuda": ["cuda", "triton"], "cpu": ["cpp"]}[args.device]
    names = ["reference", "compile"] + [p for p in compiled if p in available_backends()]
    if args.providers:
        names = [p for p in names if p in args.providers]
    return names


def operator_functions(provider: str):
    """(mini_decoder, gam_multiply) callables with the signature of paanet_fast.ops."""
    if provider == "compile":
        return torch.compile(reference.mini_decoder), torch.compile(reference.gam_multiply)
    return (lambda f, w, b, s: ops.mini_decoder(f, w, b, s, backend=provider),
            lambda f, g, r: ops.gam_multiply(f, g, r, backend=provider))


def operator_cases(p: OpProblem, provider: str) -> dict[str, Callable[[], object]]:
    mini_decoder, gam_multiply = operator_functions(provider)
    leaves = [t.detach().clone().requires_grad_() for t in (*p.features, p.weight, p.bias, p.gam)]
    features, weight, bias, gam = leaves[:4], leaves[4], leaves[5], leaves[6]

    def decoder_forward():
        with torch.no_grad():
            return mini_decoder(p.features, p.weight, p.bias, p.size)

    def decoder_forward_backward():
        outputs = mini_decoder(features, weight, bias, p.size)
        return torch.autograd.grad(outputs, [*features, weight, bias], [p.grad_logits, p.grad_gam])

    def gam_forward():
        with torch.no_grad():
            return gam_multiply(p.features, p.gam, False)

    def gam_forward_backward():
        outputs = gam_multiply(features, gam, False)
        return torch.autograd.grad(outputs, [*features, gam], p.grad_attended)

    return {"mini_decoder forward": decoder_forward, "mini_decoder forward+backward": decoder_forward_backward,
            "gam_multiply forward": gam_forward, "gam_multiply forward+backward": gam_forward_backward}


def training_step(args: argparse.Namespace, provider: str) -> Callable[[], object]:
    """One step of forward, PAANetLoss, backward and Adam; `provider` picks the operator backend."""
    torch.manual_seed(0)
    backend = "reference" if provider == "compile" else provider
    model = PAANet(encoder_name=args.encoder, encoder_weights=None, backend=backend).to(args.device).train()
    forward = torch.compile(model) if provider == "compile" else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = PAANetLoss()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(args.device)
    target = (torch.rand(args.batch, 1, args.size, args.size, generator=gen) > 0.5).float().to(args.device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(x, return_aux=True), target)
        loss.backward()
        optimizer.step()
        return loss

    return step


# ---------------------------------------------------------------------------------------------
# Bandwidth


def copy_bandwidth_gbs(device: str) -> float:
    """Bytes read plus bytes written per second by a 1 GiB device-to-device copy, in GB/s."""
    src = torch.empty(1 << 28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, warmup=3, repeats=10)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def graph_ms(fn: Callable[[], object], calls: int = 20, repeats: int = 10) -> float:
    """Device time of one fn() replayed from a CUDA graph of `calls` calls (no host overhead)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return median_ms(graph.replay, "cuda", warmup=2, repeats=repeats) / calls


def kernel_boundary_us(elements: int, launches: int = 200) -> float:
    """Device time one kernel adds in a CUDA graph of back-to-back elementwise kernels on `elements`
    float32 values: at one block, the boundary between two kernels alone (launch latency, drain and
    fill), which benchmarks/gpu_static.py charges every launch at an assumed 2 us (static_gpu/cards.py)."""
    t = torch.zeros(elements, device="cuda")
    return graph_ms(lambda: t.add_(1.0), calls=launches) * 1e3


def short_kernel_name(name: str) -> str:
    """A profiled kernel's name without its return type, namespaces and parameters:
    `void paanet::cuda::(anonymous namespace)::rows_kernel<float, float>(...)` -> `rows_kernel<float, float>`."""
    head = name.removeprefix("void ").replace("(anonymous namespace)::", "").split(" (", 1)[0].split("(", 1)[0]
    depth, start = 0, 0
    for i, char in enumerate(head):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if depth == 0 and head.startswith("::", i):
            start = i + 2
    return head[start:].strip() or name


def gpu_activities(fn: Callable[[], object], calls: int = 5) -> tuple[int, dict[str, float]]:
    """GPU activities (kernels, memsets, copies) of one fn(), profiled over `calls` calls after a
    warm-up: how many a call, and each activity's mean device time a call in us, by short name, in
    the order of their first launch."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    work = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                  key=lambda e: e.time_range.start)
    times: dict[str, float] = {}
    for e in work:
        name = short_kernel_name(e.name)
        times[name] = times.get(name, 0.0) + e.device_time_total / calls
    return len(work) // calls, times


def graph_rows(p: OpProblem, names: list[str], copy_gbs: float) -> list[str]:
    """Each operator case's device time replayed from a CUDA graph (what benchmarks/gpu_static.py
    models: no host overhead), its GPU activities a call and each one's device time (the profiler's,
    from eager calls: what to set beside each kernel's modelled time); gam_multiply forward's minimal
    bytes (read F, write P, read G once) over its time, against the copy bandwidth."""
    moved = sum(2 * f.numel() * f.element_size() for f in p.features) + p.gam.numel() * p.gam.element_size()
    rows = []
    for name in names:
        if name == "compile":
            continue
        for case, fn in operator_cases(p, name).items():
            try:
                ms = graph_ms(fn)
                count, kernels = gpu_activities(fn)
                each = ", ".join(f"{kernel} {us:.1f}" for kernel, us in kernels.items())
                cell = f"| {case} | {name} | {ms * 1e3:.1f} | {count} | {each} |"
                if case == "gam_multiply forward":
                    gbs = moved / (ms * 1e-3) / 1e9
                    cell += f" {gbs:.0f} GB/s, {100 * gbs / copy_gbs:.0f}% of copy |"
                else:
                    cell += " |"
                rows.append(cell)
            except Exception as exc:
                traceback.print_exc()
                rows.append(f"| {case} | {name} | error: {type(exc).__name__} | | | |")
    return rows


def triton_host_without_launches(p: OpProblem, args: argparse.Namespace) -> list[str]:
    """The triton backend's host time a call with its launches recorded, not run (what
    benchmarks/gpu_static.py counts launches with): its Python layers alone, so that the host time
    above splits into these and Triton's launcher. The kernels' outputs are left unwritten."""
    from static_gpu.launches import recorded_triton_launches

    cells = []
    with recorded_triton_launches() as recorded:
        for case, fn in operator_cases(p, "triton").items():
            try:
                ms = issue_ms(lambda: (fn(), recorded.clear()), args.device, args.repeats)
                cells.append(f"{case} {ms:.3f}")
            except Exception as exc:
                traceback.print_exc()
                cells.append(f"{case} error: {type(exc).__name__}")
    return ["triton's host time with its launches recorded, not run (ms a call; the rest of the host time "
            "above is Triton's launcher): " + ", ".join(cells) + "."]


def outermost(events: list, prefix: str) -> list:
    """The profiler events named `prefix`... that run inside no other such event."""
    def nested(e) -> bool:
        parent = e.cpu_parent
        while parent is not None:
            if parent.name.startswith(prefix):
                return True
            parent = parent.cpu_parent
        return False
    return [e for e in events if e.name.startswith(prefix) and not nested(e)]


def step_breakdown(step: Callable[[], object], device: str, steps: int = 3, top: int = 8) -> list[str]:
    """Where a training step's time goes, from torch.profiler over `steps` steps after one: its wall
    time, the device's busy time (kernels, copies and memsets; on the CPU, the wall time), the part
    of it in paanet_fast's operators (their kernels on a GPU, their CPU time on the CPU), and the
    costliest kernels (ATen ops on the CPU) by total time: whether the operators still matter to a
    step, and whether the step waits on the host or on the device."""
    cuda = device == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    step()
    synchronize(device)
    with torch.profiler.profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    events = prof.events()
    ours = outermost(events, "paanet_fast::")
    if cuda:
        work = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_ms = sum(e.device_time_total for e in work) / 1e3 / steps
        ours_ms = sum(e.device_time_total for e in ours) / 1e3 / steps
        what = "kernel"
    else:
        work = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and e.name.startswith("aten::")]
        busy_ms = wall_ms
        ours_ms = sum(e.cpu_time_total for e in ours) / 1e3 / steps
        what = "ATen op (self CPU time)"
    totals: dict[str, float] = {}
    for e in work:
        duration = e.device_time_total if cuda else e.self_cpu_time_total
        name = short_kernel_name(e.name) if cuda else e.name
        totals[name] = totals.get(name, 0.0) + duration / 1e3 / steps
    lines = [f"A training step, profiled ({steps} steps after one): {wall_ms:.1f} ms of wall time a step; "
             f"{'the device busy' if cuda else 'the host busy (no device)'} {busy_ms:.1f} ms "
             f"({100 * busy_ms / wall_ms:.0f}% of it), paanet_fast's operators {ours_ms:.2f} ms "
             f"({100 * ours_ms / busy_ms:.1f}% of the busy time; {len(ours) // steps} calls a step).", "",
             f"| {what} | ms a step | share of busy |", "|---|---:|---:|"]
    for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        short = name if len(name) <= 90 else name[:87] + "..."
        lines.append(f"| `{short.replace('|', '/')}` | {ms:.2f} | {100 * ms / busy_ms:.1f}% |")
    return lines


# ---------------------------------------------------------------------------------------------
# Report


def machine_line(device: str) -> str:
    parts = [f"torch {torch.__version__}", f"paanet_fast {paanet_fast.__version__}", f"Python {platform.python_version()}"]
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        parts.insert(0, f"{props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB), "
                        f"CUDA {torch.version.cuda}")
    else:
        parts.insert(0, f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores")
    return ", ".join(parts)


def table(title: str, results: dict[str, dict[str, Measurement]], names: list[str], memory: bool,
          host: bool = False) -> list[str]:
    lines = [f"| {title} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for case, row in results.items():
        base = row.get("reference")
        if memory:
            cells = [f"{row[n].peak_mib:.0f}" if n in row and row[n].peak_mib is not None else "-" for n in names]
        elif host:
            cells = [f"{row[n].host_ms:.3f}" if n in row and row[n].host_ms is not None else "-" for n in names]
        else:
            cells = [row[n].cell(base) if n in row else "-" for n in names]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_report: no CUDA device (use --device cpu for a quick run of the script)", file=sys.stderr)
        return 2
    os.environ.pop("PAANET_FAST_POISON", None)  # the tests' NaN poisoning would be timed too
    names = providers(args)
    problem = op_problem(args)
    results: dict[str, dict[str, Measurement]] = {}
    for name in names:
        for case, fn in operator_cases(problem, name).items():
            results.setdefault(case, {})[name] = measure(fn, args)
            print(f"{case:32s} {name:10s} {results[case][name].cell(None)} ms", file=sys.stderr)
    breakdowns: dict[str, list[str]] = {}
    if not args.skip_model:
        case = f"training step {args.encoder}"
        for name in names:
            if name == "compile" and args.skip_compile_model:
                continue
            try:
                step = training_step(args, name)
            except Exception as exc:
                traceback.print_exc()
                results.setdefault(case, {})[name] = Measurement(error=f"{type(exc).__name__}: {exc}"[:120])
                continue
            results.setdefault(case, {})[name] = measure(step, args)
            print(f"{case:32s} {name:10s} {results[case][name].cell(None)} ms", file=sys.stderr)
            if name not in ("reference", "compile"):
                try:
                    breakdowns[name] = step_breakdown(step, args.device)
                except Exception as exc:  # the timings above are kept
                    traceback.print_exc()
                    breakdowns[name] = [f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"]
            del step
            if args.device == "cuda":
                torch.cuda.empty_cache()

    lines = [f"## paanet_fast on {machine_line(args.device)}", "",
             f"B={args.batch}, four scales of {args.channels} channels at strides {'/'.join(map(str, STRIDES))}, "
             f"output {args.size}x{args.size}; median of {args.repeats} calls after {args.warmup} warm-up calls, "
             "each synchronised (host overhead included); speed-up over reference in brackets.", ""]
    lines += table("time (ms)", results, names, memory=False) + [""]
    if args.device == "cuda":
        lines += table("peak memory (MiB)", results, names, memory=True) + [""]
        lines += ["Host time to issue one call from an idle stream (Python, C++ and launches; not waiting for "
                  "the device):", ""]
        lines += table("host time (ms)", results, names, memory=False, host=True) + [""]
        if "triton" in names:
            lines += triton_host_without_launches(problem, args) + [""]
        copy_gbs = copy_bandwidth_gbs(args.device)
        boundaries = {elements: kernel_boundary_us(elements) for elements in (1, 1 << 18)}
        lines += [f"Device-to-device copy: {copy_gbs:.0f} GB/s (bytes read + written, 1 GiB copy).",
                  "Kernel boundary (200 back-to-back `add_` kernels replayed from a CUDA graph, device time a "
                  f"kernel): {boundaries[1]:.2f} us at 1 element (one block), {boundaries[1 << 18]:.2f} us at "
                  "2^18 (1024 blocks, 1 MiB read and 1 MiB written); gpu_static.py's model assumes 2 us.", "",
                  "| graph replay | provider | device time (us) | GPU activities a call | each, profiled eager (us a call) "
                  "| bandwidth |", "|---|---|---|---|---|---|", *graph_rows(problem, names, copy_gbs), ""]
    for name, breakdown in breakdowns.items():
        lines += [f"### Where a {args.encoder} training step's time goes, {name}", "", *breakdown, ""]
    report = "\n".join(lines)
    print(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_report.md").write_text(report + "\n")
        raw = {case: {n: vars(m) for n, m in row.items()} for case, row in results.items()}
        (args.out / "gpu_report.json").write_text(json.dumps({"machine": machine_line(args.device), "args": {
            k: str(v) for k, v in vars(args).items()}, "results": raw}, indent=2) + "\n")
    return 1 if any(m.error for row in results.values() for m in row.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
