"""The check that every Winograd variant of the fused conv + ReLU + max pool passes
against the float64 reference (tests/test_winograd.py, tests/test_winograd2d.py).

Its sums are rounded differently from the direct kernel's, so the maxima are compared with
a tolerance in float32, the argmax by the value the reference has there (the position it
names must hold the maximum, whichever of two near-equal positions it picks), and exactly
in float64 (random data has no near-ties at 1e-12).
"""
from __future__ import annotations

import numpy as np

from shallowcnn.kernels import cpu, reference as ref


def check_fused_variant(shape, dtype, variant):
    """Random x, W, b of ``shape`` (N, C, H, W, F, K) in ``dtype``, filter 0 with its ReLU
    shut everywhere; asserts ``variant``'s pooled maxima and argmax against the reference."""
    N, C, H, Wd, F, K = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((N, C, H, Wd)).astype(dtype)
    W = (rng.standard_normal((F, C, K, K)) / np.sqrt(C * K * K)).astype(dtype)
    b = (0.1 * rng.standard_normal(F)).astype(dtype)
    b[0] = -50.0                                      # a filter whose ReLU stays shut
    pooled, argmax = cpu.conv_relu_maxpool_forward(x, W, b, variant=variant)
    x64, W64, b64 = (a.astype(np.float64) for a in (x, W, b))
    z = ref.conv2d_forward(x64, W64, b64).reshape(N, F, -1)
    rp, ra = ref.conv_relu_maxpool_forward(x64, W64, b64)
    atol = 1e-12 if dtype == np.float64 else 2e-5
    assert pooled.dtype == dtype and argmax.dtype == np.int64
    assert pooled[:, 0].max() == 0
    np.testing.assert_allclose(pooled, rp, rtol=0, atol=atol)
    np.testing.assert_allclose(np.take_along_axis(z, argmax[:, :, None], 2)[:, :, 0], z.max(axis=2),
                               rtol=0, atol=2 * atol)
    if dtype == np.float64:
        np.testing.assert_array_equal(argmax, ra)
