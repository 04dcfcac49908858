"""torch.export of a whole PAANet on every backend, with dynamic batch, height and width.

The compiled backends must stay in the exported program as their paanet_fast operators (their
fake kernels let export trace them), and the program must compute what the model computes on
inputs of other sizes than the one it was exported with, sizes that are not multiples of 32
included (the model pads and crops inside).
"""
import pytest
import torch

from paanet_fast import PAANet
from paanet_fast.backends import KNOWN_BACKENDS, available_backends
from paanet_fast.export import dynamic_image_shapes

# The operators each backend leaves in the exported graph (plain-PyTorch backends leave ATen ops only).
KEPT_OPERATORS = {
    "cpp": {"paanet_fast.mini_decoder.default", "paanet_fast.gam_multiply.default"},
    "cuda": {"paanet_fast.mini_decoder.default", "paanet_fast.gam_multiply.default"},
    "triton": {"paanet_fast.triton_mini_decoder.default", "paanet_fast.triton_gam_multiply.default"},
}
EXAMPLE = (2, 3, 64, 96)
# Batch, height and width other than the example's, not multiples of 32. The Triton interpreter
# takes seconds per forward: one shape that changes all three at once.
CHECKED_SHAPES = {"triton": [(1, 3, 40, 45)]}
DEFAULT_SHAPES = [EXAMPLE, (1, 3, 70, 45), (3, 3, 33, 64)]


def _device(backend: str) -> torch.device:
    # Triton computes CPU tensors only in its interpreter, which tests/conftest.py turns on without a GPU.
    on_gpu = backend == "cuda" or (backend == "triton" and torch.cuda.is_available())
    return torch.device("cuda" if on_gpu else "cpu")


def _model(backend: str) -> PAANet:
    torch.manual_seed(0)
    # Two blocks of one layer: both operators, in a forward and a reverse block.
    model = PAANet("resnet18", encoder_weights=None, num_blocks=2, num_layers=1, growth=8, backend="cpp").double()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        model.train()(torch.randn(4, 3, 64, 64, dtype=torch.float64))
    model.backend = backend
    return model.eval().to(_device(backend))


def _paanet_operators(program: torch.export.ExportedProgram) -> set[str]:
    return {str(node.target) for node in program.graph.nodes
            if node.op == "call_function" and str(node.target).startswith("paanet_fast.")}


@pytest.mark.parametrize("backend", KNOWN_BACKENDS)
def test_exported_program_keeps_the_operators_and_matches_the_model(backend):
    if backend not in available_backends():
        assert backend == "cuda" and not torch.cuda.is_available(), f"backend {backend} should be available"
        pytest.skip("no CUDA device on this machine")
    model = _model(backend)
    device = _device(backend)
    gen = torch.Generator().manual_seed(1)
    example = torch.randn(EXAMPLE, generator=gen, dtype=torch.float64).to(device)
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_image_shapes())
    assert _paanet_operators(program) == KEPT_OPERATORS.get(backend, set())
    exported = program.module()
    for shape in CHECKED_SHAPES.get(backend, DEFAULT_SHAPES):
        x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
        with torch.no_grad():
            expected = model(x)
            got = exported(x)
        assert got.shape == (shape[0], 1, *shape[2:])
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=lambda m: f"input {shape}: {m}")



def test_a_batch_of_one_gets_an_error_that_says_what_the_example_must_be():
    """Issue 18: the README's snippet with one image failed inside torch.export ("specialized it to be
    a constant (1)"). The helper says what to pass, and the README's way for one image exports a
    program that runs that image as the model does."""
    image = torch.randn(1, 3, 70, 45, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for bad in (image, image[:, :, :32].repeat(2, 1, 1, 1), image[0]):
        with pytest.raises(ValueError, match=r"B >= 2 and H, W >= 33, got .*x.repeat\(2, 1, 1, 1\)"):
            dynamic_image_shapes(bad)
    model = _model("portable")
    x = image.repeat(2, 1, 1, 1)
    program = torch.export.export(model, (x,), dynamic_shapes=dynamic_image_shapes(x))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(image), model(image), rtol=1e-12, atol=1e-12)
