// Schemas of the paanet_fast operators. CPU kernels live in csrc/cpu, CUDA kernels in kernels/;
// fake (meta) kernels and autograd are registered from Python (paanet_fast/_compiled.py).
#include <Python.h>
#include <torch/library.h>

#include "cpu/kernels.h"

namespace {
PyObject* cpu_kernels(PyObject*, PyObject*) { return PyUnicode_FromString(paanet::cpu::kernels().name); }

PyMethodDef methods[] = {
    {"cpu_kernels", cpu_kernels, METH_NOARGS,
     "The instruction set whose CPU kernel loops run here: 'default', 'avx2' or 'avx512'."},
    {nullptr, nullptr, 0, nullptr}};
}  // namespace

extern "C" {
// Importing paanet_fast._C runs the static registrations below; the module itself only says which
// CPU kernel loops it runs.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(paanet_fast, m) {
  m.def("mini_decoder(Tensor[] features, Tensor weight, Tensor bias, SymInt[2] size) -> (Tensor, Tensor)");
  m.def("mini_decoder_backward(Tensor grad_logits, Tensor grad_gam, Tensor gam, Tensor[] features, "
        "Tensor weight) -> (Tensor[], Tensor, Tensor)");
  m.def("gam_multiply(Tensor[] features, Tensor gam, bool reverse) -> Tensor[]");
  m.def("gam_multiply_backward(Tensor[] grad_outputs, Tensor[] features, Tensor gam, bool reverse) "
        "-> (Tensor[], Tensor)");
}
