"""`auto`'s first-use check: a compiled backend that raises or computes a wrong answer costs a warning
and speed, never a crash or a wrong result; the check runs once per (backend, device, dtype), never
for a backend named explicitly, and not at all under PAANET_FAST_VERIFY=0.

The broken backends (tests/broken_backends.py) are registered in place of "cpp" (the name `auto`
tries for CPU tensors) on a copy of the registry that monkeypatch restores after each test.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from broken_backends import nan_gam_multiply, raising_gam_multiply, wrong_gradient_gam_multiply, wrong_mini_decoder
from paanet_fast import PAANet, backends, first_use, ops, portable
from paanet_fast.backends import Backend

CPU = torch.device("cpu")


class Counted:
    """Calls of a backend's functions, so that a test can tell whether `auto` still uses it."""

    def __init__(self) -> None:
        self.calls = 0

    def wrap(self, fn):
        def counted(*args):
            self.calls += 1
            return fn(*args)
        return counted


BROKEN = {
    "raises": (portable.mini_decoder, raising_gam_multiply, r"gam_multiply on .*RuntimeError: CUDA error: no kernel"),
    "wrong answer": (wrong_mini_decoder, portable.gam_multiply, r"mini_decoder on .*: logits relative error"),
    "wrong gradient": (portable.mini_decoder, wrong_gradient_gam_multiply, r"gam_multiply on .*RuntimeError"),
    "NaN": (portable.mini_decoder, nan_gam_multiply, r"gam_multiply on .*: output\[0\] has non-finite values"),
}


@pytest.fixture
def registry(monkeypatch):
    """A private registry, verdict cache and fallback-warning memory, with the check enabled."""
    backends.available_backends()  # imports the providers now, so they cannot overwrite the test's entries
    monkeypatch.setattr(backends, "_registry", dict(backends._registry))
    monkeypatch.setattr(backends, "_warned_fallback", set())
    monkeypatch.setattr(first_use, "_verdicts", {})
    monkeypatch.delenv("PAANET_FAST_VERIFY", raising=False)

    def install(name: str, mini_decoder, gam_multiply) -> Counted:
        counter = Counted()
        backends.register(Backend(name, frozenset({"cpu"}), counter.wrap(mini_decoder), counter.wrap(gam_multiply)))
        return counter
    return install


def build(backend: str) -> PAANet:
    torch.manual_seed(0)
    return PAANet("resnet18", encoder_weights=None, growth=8, backend=backend).eval()


@pytest.mark.parametrize("kind", BROKEN)
def test_auto_falls_back_to_portable_with_one_warning_and_the_reference_output(registry, kind):
    mini_decoder, gam_multiply, problem = BROKEN[kind]
    broken = registry("cpp", mini_decoder, gam_multiply)
    x = torch.randn(1, 3, 45, 38, generator=torch.Generator().manual_seed(1))
    model = build("auto")
    with torch.no_grad():  # the check computes gradients even when the caller does not
        expected = build("reference")(x)
        with pytest.warns(RuntimeWarning, match=r"the cpp backend failed its first-use check on cpu float32 tensors "
                                                r"against the portable backend: " + problem) as record:
            out = model(x)
        assert len([w for w in record if "first-use" in str(w.message)]) == 1
        torch.testing.assert_close(out, expected, rtol=2e-4, atol=2e-5)
        checked = broken.calls
        assert checked > 0
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per process: silent from now on
            torch.testing.assert_close(model(x), expected, rtol=2e-4, atol=2e-5)
    assert broken.calls == checked, "auto used the backend that failed its check"
    assert backends.resolve("auto", CPU, torch.float32).name == "portable"


def test_auto_takes_the_next_compiled_backend(registry, monkeypatch):
    monkeypatch.setitem(backends._AUTO_ORDER, "cpu", ("cpp", "triton"))
    registry("cpp", wrong_mini_decoder, portable.gam_multiply)
    registry("triton", portable.mini_decoder, portable.gam_multiply)
    with pytest.warns(RuntimeWarning, match=r"cpp backend failed its first-use check") as record:
        assert backends.resolve("auto", CPU, torch.float32).name == "triton"
    assert len(record) == 1


def test_the_check_runs_once_per_backend_device_and_dtype(registry, monkeypatch):
    runs = []
    compare = first_use.compare_backends
    monkeypatch.setattr(first_use, "compare_backends", lambda *args: runs.append(args[3]) or compare(*args))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real cpp backend passes
        for dtype in (torch.float32, torch.float32, torch.float64, torch.float32, torch.float64):
            assert backends.resolve("auto", CPU, dtype).name == "cpp"
    assert runs == [torch.float32, torch.float64]


def test_a_float64_failure_leaves_float32_on_the_backend(registry):
    """The verdict is per dtype: a kernel wrong in one dtype only is skipped for that dtype only."""
    def wrong_in_float64(features, weight, bias, size):
        fn = wrong_mini_decoder if features[0].dtype == torch.float64 else portable.mini_decoder
        return fn(features, weight, bias, size)
    registry("cpp", wrong_in_float64, portable.gam_multiply)
    with pytest.warns(RuntimeWarning, match=r"first-use check on cpu float64 tensors"):
        assert backends.resolve("auto", CPU, torch.float64).name == "portable"
    assert backends.resolve("auto", CPU, torch.float32).name == "cpp"


def test_verify_0_turns_the_check_off(registry, monkeypatch):
    monkeypatch.setenv("PAANET_FAST_VERIFY", "0")
    broken = registry("cpp", wrong_mini_decoder, portable.gam_multiply)
    features = [torch.randn(1, 2, 3, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logits, _ = ops.mini_decoder(features, torch.randn(1, 2, 3, 3), torch.randn(1), (7, 9))
    assert broken.calls == 1  # the call itself, no check
    assert first_use._verdicts == {}


def test_an_explicitly_named_backend_is_not_checked(registry):
    broken = registry("cpp", portable.mini_decoder, raising_gam_multiply)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="no kernel image"):  # the user's choice, the user's error
            ops.gam_multiply([torch.randn(1, 2, 3, 5)], torch.rand(1, 1, 6, 10), backend="cpp")
    assert broken.calls == 1
    assert first_use._verdicts == {}


def test_the_check_is_skipped_while_torch_compile_traces(registry):
    """Documented: a model compiled before its first eager call uses auto's first choice unchecked."""
    registry("cpp", wrong_mini_decoder, portable.gam_multiply)
    features, weight, bias = [torch.randn(1, 2, 3, 5)], torch.randn(1, 2, 3, 3), torch.randn(1)
    compiled = torch.compile(lambda f, w, b: ops.mini_decoder(f, w, b, (7, 9))[0], fullgraph=True, backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = wrong_mini_decoder(features, weight, bias, (7, 9))[0]
        torch.testing.assert_close(compiled(features, weight, bias), expected)
    assert first_use._verdicts == {}
