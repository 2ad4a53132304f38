"""The checks that every Winograd variant of the fused conv + ReLU + max pool, and of the
dense forward, passes against the float64 reference (tests/test_winograd.py,
tests/test_winograd2d.py).

Its sums are rounded differently from the direct kernel's, so the maxima are compared with
a tolerance in float32, the argmax by the value the reference has there (the position it
names must hold the maximum, whichever of two near-equal positions it picks), and exactly
in float64 (random data has no near-ties at 1e-12).
"""
from __future__ import annotations

import numpy as np

from shallowcnn.kernels import cpu, reference as ref


def random_layer(shape, dtype, seed):
    """x (N, C, H, W), W (F, C, K, K) scaled by 1 / sqrt(C K K), b (F,) of ``shape``
    (N, C, H, W, F, K), standard normal, in ``dtype``."""
    N, C, H, Wd, F, K = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, Wd)).astype(dtype)
    W = (rng.standard_normal((F, C, K, K)) / np.sqrt(C * K * K)).astype(dtype)
    b = (0.1 * rng.standard_normal(F)).astype(dtype)
    return x, W, b


def check_dense_variant(shape, dtype, relu, variant):
    """``cpu.conv2d_forward(variant=...)`` (and its ReLU when relu) on :func:`random_layer`'s
    data against the float64 reference: exact to 1e-12 in float64; in float32 the transforms'
    larger, cancelling terms cost a few units of 1e-6 of the largest value."""
    x, W, b = random_layer(shape, dtype, sum(shape))
    got = cpu.conv2d_forward(x, W, b, relu=relu, variant=variant)
    want = ref.conv2d_forward(*(a.astype(np.float64) for a in (x, W, b)))
    if relu:
        want = np.maximum(want, 0)
    assert got.dtype == dtype and got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=(1e-12 if dtype == np.float64 else 5e-6) * scale)


def check_fused_variant(shape, dtype, variant):
    """Random x, W, b of ``shape`` (N, C, H, W, F, K) in ``dtype``, filter 0 with its ReLU
    shut everywhere; asserts ``variant``'s pooled maxima and argmax against the reference."""
    N, C, H, Wd, F, K = shape
    x, W, b = random_layer(shape, dtype, sum(shape))
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


def check_model_path(monkeypatch, variant, height, width):
    """``features_forward`` (the network's path, training's too) on 3 random patches of
    ``height`` x ``width`` with ``variant`` pinned: the same pooled features as the direct
    default, to float32 rounding, the same argmax (random data: no near-ties) and gradients
    that follow the direct path's."""
    from shallowcnn.kernels import autotune
    rng = np.random.default_rng(3)
    x = rng.random((3, 1, height, width), dtype=np.float32)
    W1 = (rng.standard_normal((6, 1, 9, 9)) / 9).astype(np.float32)
    b1 = np.full(6, 0.01, np.float32)
    W2 = (rng.standard_normal((16, 6, 9, 9)) / 20).astype(np.float32)
    b2 = np.zeros(16, np.float32)
    direct, direct_ctx = cpu.features_forward(x, W1, b1, W2, b2)
    monkeypatch.setenv(autotune.ENV, variant)
    autotune.forget_choices()
    pooled, ctx = cpu.features_forward(x, W1, b1, W2, b2)
    assert any(rec["variant"] == variant for rec in autotune.chosen().values())
    np.testing.assert_allclose(pooled, direct, rtol=0, atol=2e-5)
    np.testing.assert_array_equal(ctx["argmax"], direct_ctx["argmax"])
    for got, want in zip(cpu.features_backward(np.ones_like(pooled), ctx),
                         cpu.features_backward(np.ones_like(direct), direct_ctx)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
