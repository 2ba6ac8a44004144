"""Exact (erf) GELU in numpy, for the local BERT encoder.

numpy has no erf, and the tanh approximation of GELU is off by up to ~1e-3,
which would move the vectors visibly away from sentence-transformers'.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

# GELU only needs the normal tail q(u) = Phi(-u) = erfc(u / sqrt 2) / 2 for u >= 0:
#     gelu(x) = x * Phi(x) = max(x, 0) - |x| * q(|x|)
# which has no cancellation for negative x. q is computed as
#     q(u) = t * exp(P(t) - u^2 / 2),  t = 1 / (1 + A u)
# where P is a degree-9 polynomial in t, fitted for llmos (Lawson's iteratively
# reweighted least squares towards the minimax fit of log q(u) + u^2/2 - log t
# on u in [0, 14], against math.erfc in float64). Its relative error on q is
# below 2e-8 everywhere, so erf is within 4e-8 of math.erf; evaluated in
# float32 the result is within float32 rounding of the exact GELU.
_TAIL_A = 0.33
_TAIL_POLY = (
    -2.0276327243523546,
    1.0009817738997189,
    0.37837367836936525,
    0.2066168239052678,
    -0.4461422400037845,
    0.9957721782108796,
    -2.0613940393365033,
    2.047951860596993,
    -0.9677365943871619,
    0.18006212013508166,
)


def _normal_tail(u: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Phi(-u) for u >= 0, in u's float dtype."""
    dtype = u.dtype.type
    t = u * dtype(_TAIL_A)
    t += dtype(1.0)
    np.reciprocal(t, out=t)
    acc = t * dtype(_TAIL_POLY[-1])
    for coef in reversed(_TAIL_POLY[1:-1]):
        acc += dtype(coef)
        acc *= t
    acc += dtype(_TAIL_POLY[0])
    half_sq = u * u
    half_sq *= dtype(0.5)
    acc -= half_sq
    np.exp(acc, out=acc)
    acc *= t
    return acc


def erf(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """erf in float64 from the same approximation; used to test it against math.erf."""
    xs = np.asarray(x, dtype=np.float64)
    return np.sign(xs) * (1.0 - 2.0 * _normal_tail(np.abs(xs) * math.sqrt(2.0)))


def gelu_inplace(x: npt.NDArray[Any], chunk_rows: int = 128) -> npt.NDArray[Any]:
    """Exact GELU on a 2-D float array, overwriting it; returns it."""
    # ~30 elementwise passes per element: doing them on cache-sized row blocks
    # rather than the whole (tokens, 1536) array is about twice as fast.
    for start in range(0, x.shape[0], chunk_rows):
        block = x[start : start + chunk_rows]
        magnitude = np.abs(block)
        tail = _normal_tail(magnitude)
        tail *= magnitude
        np.maximum(block, 0, out=block)
        block -= tail
    return x


def gelu(x: npt.ArrayLike) -> npt.NDArray[Any]:
    """Exact GELU, x * Phi(x), on a copy of x (float32 stays float32)."""
    arr = np.array(x, dtype=np.result_type(np.asarray(x).dtype, np.float32), copy=True)
    flat = arr.reshape(1, -1) if arr.ndim < 2 else arr.reshape(-1, arr.shape[-1])
    gelu_inplace(flat)
    return arr
