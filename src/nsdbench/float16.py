"""float16 -> float32 conversion, exact and ~2.5x faster than numpy's own cast.

Why: feature stores hold float16, and every value of a layer is converted once per pass. numpy
converts float16 one value at a time (measured 6.6 ns per value on the dev machine, a third of
the whole streaming pass over a wide layer). Here the conversion is a few whole-array integer
and float operations: a float16 magnitude's bits shifted left by 13 are the float32 bits of
that value times 2^-112 (the exponent biases differ by 112; subnormal halves become float32
subnormals), so one multiplication by 2^112 gives the exact value, and the sign is copied back.
Blocks holding inf or NaN (exponent all ones) go through numpy's cast instead.
"""

from __future__ import annotations

import numpy as np

_SCALE = np.float32(2.0**112)
_EXPONENT_ALL_ONES = 0x7C00  # float16 inf/NaN
_ROWS_VALUES = 1 << 15  # values per group of rows: the temporaries stay in cache


def to_float32(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``values`` (any 2-D array) as float32 in ``out`` (a new C-ordered array by default).

    float16 input takes the fast path, whose result is bit for bit numpy's cast; other
    dtypes are copied with numpy's cast."""
    if out is None:
        out = np.empty(values.shape, dtype=np.float32)
    if values.dtype != np.float16 or values.ndim != 2:
        np.copyto(out, values, casting="unsafe")
        return out
    rows_per_group = max(1, _ROWS_VALUES // max(values.shape[1], 1))
    magnitude = np.empty((min(rows_per_group, values.shape[0]), values.shape[1]), np.uint16)
    for start in range(0, values.shape[0], rows_per_group):
        rows = slice(start, start + rows_per_group)
        _convert_rows(values[rows], out[rows], magnitude[:out[rows].shape[0]])
    return out


def _convert_rows(half: np.ndarray, out: np.ndarray, magnitude: np.ndarray) -> None:
    bits = half.view(np.uint16)
    np.bitwise_and(bits, 0x7FFF, out=magnitude)
    if magnitude.max(initial=0) >= _EXPONENT_ALL_ONES:
        np.copyto(out, half)  # inf or NaN somewhere: numpy's cast keeps them exactly
        return
    out_bits = out.view(np.uint32)
    np.copyto(out_bits, magnitude)
    out_bits <<= 13
    out *= _SCALE
    np.copysign(out, bits.view(np.int16), out=out)  # the sign bit is the int16's sign
