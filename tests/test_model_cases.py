"""The float32 gradient comparison of the whole-model tests (model_cases.assert_close_but_kinks): it
admits a few elements flipped at a kink and nothing else."""
import pytest
import torch

from model_cases import KINK_BOUND, KINK_FRACTION, assert_close_but_kinks


def _gradient(numel: int) -> torch.Tensor:
    return torch.randn(numel, generator=torch.Generator().manual_seed(numel))


def _check(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert_close_but_kinks(actual, expected, rtol=2e-4, atol=2e-5 + 2e-4 * expected.abs().max().item(), name="w")


def test_rounding_and_a_few_flips_pass():
    expected = _gradient(10368)
    actual = expected * (1 + 1e-6)
    _check(actual, expected)
    flipped = actual.clone()
    flipped[[5, 700, 9000]] += 0.5 * KINK_BOUND * expected.abs().max()
    _check(flipped, expected)


def test_a_flip_beyond_the_bound_fails():
    expected = _gradient(10368)
    actual = expected.clone()
    actual[17] += 2 * KINK_BOUND * expected.abs().max()
    with pytest.raises(AssertionError, match="1 of 10368 elements"):
        _check(actual, expected)


def test_more_flips_than_allowed_fail():
    expected = _gradient(10368)
    actual = expected.clone()
    too_many = int(KINK_FRACTION * expected.numel()) + 1
    actual[:too_many] += 0.5 * KINK_BOUND * expected.abs().max()
    with pytest.raises(AssertionError, match=f"{too_many} of 10368 elements"):
        _check(actual, expected)


def test_a_systematic_error_fails():
    expected = _gradient(10368)
    with pytest.raises(AssertionError, match="elements outside"):
        _check(expected * 1.001, expected)


def test_nan_fails_even_once():
    expected = _gradient(32)  # one element may flip in a small tensor, but not to NaN
    actual = expected.clone()
    actual[3] = float("nan")
    with pytest.raises(AssertionError, match="1 of 32 elements"):
        _check(actual, expected)
