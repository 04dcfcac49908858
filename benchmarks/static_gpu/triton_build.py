"""The Triton kernels as the host code launches them at the benchmark shapes, compiled for a GPU target
without a GPU (every autotune config, with the argument specialisation of the launch)."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from .compiled import Kernel, SassCounts, cache_dir, resource_usage, sass_of
from .launches import Launch, TritonLaunch


def compile_triton(launch: TritonLaunch, config, sm: int, out: Path) -> tuple[Kernel, Launch]:
    """The kernel as this launch specialises it (argument types, divisibility, constants) under `config`,
    compiled for sm_<sm>; and the launch it makes at the benchmark shapes."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
    fn = launch.kernel.fn if hasattr(launch.kernel, "configs") else launch.kernel
    target = GPUTarget("cuda", sm, 32)
    backend = make_backend(target)
    kwargs = {**launch.constexprs, **config.all_kwargs()}
    bound, specialization, options = create_function_from_signature(fn.signature, fn.params, backend)(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    cubin = cache_dir(out) / f"triton-{compiled.metadata.hash}-sm{sm}.cubin"
    if not cubin.exists():
        cubin.write_bytes(compiled.asm["cubin"])
    usage, sass = _cubin_facts(cubin)
    shown = {k: v for k, v in config.kwargs.items()} | {"warps": config.num_warps}
    shown |= {k: v for k, v in launch.constexprs.items() if k not in ("NUM_SCALES",)}
    instantiation = f"{signature.get(next(n for n in fn.arg_names if n.endswith('_ptr')))} " + \
        " ".join(f"{k}={v}" for k, v in shown.items())
    key = f"{fn.__name__}:{compiled.metadata.hash}"
    # Triton's shared memory is all dynamic (metadata.shared, what its launcher asks for; the cubin reports
    # the same allocation), so none is counted as static.
    # Spills (and registers saved around calls) go to the stack frame, cuobjdump's STACK; its LOCAL
    # stays 0 with them (ptxas -v on the same PTX: "8 bytes stack frame, 4 bytes spill stores").
    kernel = Kernel("triton", sm, fn.__name__, f"{instantiation} #{compiled.metadata.hash[:6]}", key, usage["REG"],
                    usage["STACK"] + usage["LOCAL"], 0, sass, "fp64" not in json.dumps(signature))
    grid = launch.grid({**bound, **kwargs}) if callable(launch.grid) else launch.grid
    grid = tuple(grid) + (1,) * (3 - len(grid))
    return kernel, Launch(key, fn.__name__, grid, config.num_warps * 32, compiled.metadata.shared)


@functools.lru_cache(maxsize=None)
def _cubin_facts(cubin: Path) -> tuple[dict[str, int], SassCounts]:
    """Resource usage and SASS counts of a one-kernel cubin (a launch repeated with another shape reuses them)."""
    return next(iter(resource_usage(cubin).values())), next(iter(sass_of(cubin).values()))


def triton_configs(kernel: Any, quick: bool) -> list:
    import triton
    configs = list(getattr(kernel, "configs", [triton.Config({})]))
    return configs[:1] if quick else configs

