"""Compile every Triton kernel of the backend to a CUDA binary without a GPU.

The interpreter runs kernels as Python, so it cannot catch what only the compiler rejects (types,
constexpr misuse, unsupported operations). Run in a process without TRITON_INTERPRET:

    python tests/triton_compile_check.py [compute capability, default 90]

Prints one line per kernel variant and exits non-zero on the first failure: every kernel in every
dtype with four scales, and in float32 with one scale too.
"""
from __future__ import annotations

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from paanet_fast.triton import gam_kernels, host, mini_decoder_kernels

# (input dtype, accumulation dtype) as Triton names them
DTYPES = [("fp32", "fp32"), ("fp16", "fp32"), ("bf16", "fp32"), ("fp64", "fp64")]


def compile_kernel(kernel, target: GPUTarget, pointers: dict[str, str], constexprs: dict, ones: bool,
                   scalars: dict[str, str] | None = None) -> None:
    """Compile `kernel` with pointer element types `pointers`; every other argument is an int32 (or
    the type `scalars` gives it), and with `ones` also the constant 1 (Triton specializes integer
    arguments equal to 1)."""
    fn = kernel.fn if hasattr(kernel, "configs") else kernel  # unwrap the autotuner
    all_ones = {name: 1 for name in fn.arg_names if name not in pointers and name not in constexprs}
    for extra in ([{}, all_ones] if ones else [{}]):
        fixed = {**constexprs, **extra}
        signature = {name: "constexpr" if name in fixed else
                     ("*" + pointers[name] if name in pointers else (scalars or {}).get(name, "i32"))
                     for name in fn.arg_names}
        triton.compile(ASTSource(fn, signature, fixed), target=target)
        print(f"ok  {fn.__name__} {next(iter(pointers.values()))} {fixed}")


def compile_all(target: GPUTarget, dtype: str, acc: str, num_scales: int, ones: bool) -> None:
    md = mini_decoder_kernels
    scales = range(4)
    compile_kernel(md.reduce_kernel, target, {"weight_ptr": dtype, **{f"f{v}_ptr": dtype for v in scales},
                                              **{f"r{v}_ptr": acc for v in scales}},
                   {"NUM_SCALES": num_scales, **md.REDUCE_CONFIG.kwargs}, ones)
    outputs = {"bias_ptr": dtype, "logits_ptr": dtype, "gam_ptr": dtype}
    # Separable with PAANet's windows (strides 4 to 32 of a 256-row map, host._source_rows), and per pixel.
    for spans in ([host._source_rows(256 // stride, 256, 16) for stride in (4, 8, 16, 32)], [0] * 4):
        compile_kernel(md.forward_kernel, target, {**{f"r{v}_ptr": acc for v in scales}, **outputs},
                       {"NUM_SCALES": num_scales, **{f"SPAN{v}": span for v, span in enumerate(spans)},
                        **md._TILE_CONFIGS[0].kwargs}, ones)
    compile_kernel(md.rows_kernel, target, {"grad_logits_ptr": dtype, "grad_gam_ptr": dtype, "gam_ptr": dtype,
                                            **{f"out{v}_ptr": acc for v in scales}},
                   {"NUM_SCALES": num_scales, "BLOCK_I": 8, "BLOCK_M": 32}, ones)
    compile_kernel(md.columns_kernel, target,
                   {"weight_ptr": dtype, "bias_share_ptr": acc,
                    **{f"{name}{v}_ptr": kind for v in scales
                       for name, kind in (("rows", acc), ("f", dtype), ("gf", dtype), ("share", acc))}},
                   {"NUM_SCALES": num_scales, **md.COLUMNS_CONFIG.kwargs}, ones)
    compile_kernel(md.sum_kernel, target, {**{f"share{v}_ptr": acc for v in scales}, "bias_share_ptr": acc,
                                           "grad_weight_ptr": dtype, "grad_bias_ptr": dtype},
                   {"NUM_SCALES": num_scales, **md.SUM_CONFIG.kwargs}, ones)
    gam_pointers = {"gam_ptr": dtype}
    for v in scales:
        gam_pointers.update({f"f{v}_ptr": dtype, f"out{v}_ptr": dtype, f"g{v}_ptr": dtype, f"gf{v}_ptr": dtype,
                             f"gp{v}_ptr": acc})
    for reverse in (False, True):
        constexprs = {"NUM_SCALES": num_scales, "REVERSE": reverse, **gam_kernels.PIXEL_CONFIG.kwargs}
        compile_kernel(gam_kernels.forward_kernel, target, gam_pointers, constexprs, ones)
        compile_kernel(gam_kernels.backward_kernel, target, gam_pointers, constexprs, ones)
        # The region kernel at PAANet's windows (strides 4 to 32), forward and backward.
        windows = [(4, 4), (8, 8), (16, 16), (32, 32)][:num_scales]
        region = host._region(windows)
        region_pointers = {"gam_ptr": dtype, "grad_gam_ptr": dtype,
                           **{f"{name}{v}_ptr": dtype for v in scales for name in ("x", "f", "y")}}
        for backward in (False, True):
            compile_kernel(gam_kernels.region_kernel, target, region_pointers,
                           {"NUM_SCALES": num_scales, "BACKWARD": backward, "REVERSE": reverse, "RY": region[0],
                            "RX": region[1], **host._region_constexprs(windows, region)}, ones)
    # A divider's magic number of 2^31 or more arrives as an int64.
    for magic in ("i32", "i64"):
        compile_kernel(gam_kernels.gam_grad_kernel, target, {**{f"gp{v}_ptr": acc for v in scales}, "out_ptr": dtype},
                       {"NUM_SCALES": num_scales, **gam_kernels.ROW_CONFIG.kwargs}, ones,
                       {f"m{v}": magic for v in scales})


def main(capability: int) -> None:
    target = GPUTarget("cuda", capability, 32)
    for dtype, acc in DTYPES:
        compile_all(target, dtype, acc, 4, ones=dtype == "fp32")
    # One scale takes other code in the kernels (no scale to pick among).
    compile_all(target, "fp32", "fp32", 1, ones=False)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
