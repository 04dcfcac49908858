// The Python module paanet_fast._C. Importing it loads this library, whose static registrations
// (csrc/ops.cpp, csrc/cpu, kernels/) define the operators; the module itself only tells which CPU
// kernel loops run here (csrc/cpu/kernels.h).
#include <Python.h>

#include "cpu/kernels.h"

namespace {

PyObject* cpu_kernels(PyObject*, PyObject*) { return PyUnicode_FromString(paanet::cpu::kernels().name); }

PyMethodDef methods[] = {
    {"cpu_kernels", cpu_kernels, METH_NOARGS,
     "The instruction set whose CPU kernel loops run here: 'default', 'avx2' or 'avx512'."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
