// Schemas of the paanet_fast operators. CPU kernels live in csrc/cpu, CUDA kernels in kernels/;
// fake (meta) kernels and autograd are registered from Python (paanet_fast/_compiled.py), and
// csrc/module.cpp makes the library the Python module paanet_fast._C.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(paanet_fast, m) {
  m.def("mini_decoder(Tensor[] features, Tensor weight, Tensor bias, SymInt[2] size) -> (Tensor, Tensor)");
  m.def("mini_decoder_backward(Tensor grad_logits, Tensor grad_gam, Tensor gam, Tensor[] features, "
        "Tensor weight) -> (Tensor[], Tensor, Tensor)");
  m.def("gam_multiply(Tensor[] features, Tensor gam, bool reverse) -> Tensor[]");
  m.def("gam_multiply_backward(Tensor[] grad_outputs, Tensor[] features, Tensor gam, bool reverse) "
        "-> (Tensor[], Tensor)");
}
