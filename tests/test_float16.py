"""The fast float16 -> float32 conversion against numpy's cast, on every float16 value."""

import numpy as np
import pytest

from nsdbench.float16 import to_float32


def every_float16(with_nonfinite: bool) -> np.ndarray:
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    if not with_nonfinite:
        bits = bits[(bits & 0x7C00) != 0x7C00]
    return bits.view(np.float16)


@pytest.mark.parametrize("with_nonfinite", [False, True])
@pytest.mark.parametrize("width", [1, 7, 256, 40_000])
def test_every_value_converts_bit_for_bit_as_numpy_does(with_nonfinite, width):
    """Zeros of both signs, subnormals, normals and the largest finite values (and, in blocks
    that hold them, inf and NaN) all convert exactly, in row groups of any width."""
    values = every_float16(with_nonfinite)
    values = np.resize(values, (-(-values.size // width), width))  # whole rows, wrapped round
    ours = to_float32(values)
    np.testing.assert_array_equal(ours.view(np.uint32), values.astype(np.float32).view(np.uint32))


def test_strided_input_and_other_dtypes():
    values = np.random.default_rng(0).standard_normal((50, 300)).astype(np.float16)
    np.testing.assert_array_equal(to_float32(values[:, 10:200:3]),
                                  values[:, 10:200:3].astype(np.float32))
    out = np.empty((50, 300), np.float32)
    assert to_float32(values.astype(np.float64), out=out) is out
    np.testing.assert_array_equal(out, values.astype(np.float32))
