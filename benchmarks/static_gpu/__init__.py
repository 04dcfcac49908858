"""The parts of benchmarks/gpu_static.py, the GPU report that needs no GPU (see its docstring)."""
