"""The cuda backend against the NumPy reference, kernel by kernel.

Runs in Numba's CUDA simulator (every CUDA thread a Python thread, so the
shapes are tiny and the thread blocks small) or on a real GPU; see conftest.py.
The launch configuration is shrunk so that each output spans several thread
blocks and several filter groups (FB = 2 < F = 3), which is what exercises the
tiling, the padding of the last filter group and the block-to-block argmax.
"""
import numpy as np
import pytest

from shallowcnn.kernels import BackendUnavailable, get_backend, reference as ref
from shallowcnn.kernels import cuda as kc

pytestmark = pytest.mark.skipif(kc._availability() is not None,
                                reason=f"cuda backend unavailable: {kc._availability()}")

SMALL = kc.LaunchConfig(conv_block_x=8, conv_block_y=4, conv_pixels=2, conv_filters=2,
                        threads=64, reduce_x=16, reduce_y=2)
DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def small_blocks():
    previous = kc.set_launch_config(SMALL)
    yield
    kc.set_launch_config(previous)


def assert_close(actual, expected, dtype):
    """rtol 1e-4 (float32) or 1e-10 (float64), relative to the array's scale."""
    tol = 1e-4 if dtype == np.float32 else 1e-10
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def make(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_forward(dtype):
    rng = np.random.default_rng(0)
    x, W, b = make(rng, (2, 2, 12, 11), dtype), make(rng, (3, 2, 3, 3), dtype), make(rng, 3, dtype)
    assert_close(kc.conv2d_forward(x, W, b), ref.conv2d_forward(x, W, b), dtype)
    # relu=True: the RELU epilogue, against the reference's conv then max(., 0) written here
    assert_close(kc.conv2d_forward(x, W, b, relu=True), np.maximum(ref.conv2d_forward(x, W, b), 0), dtype)


def test_conv2d_forward_k5_chunked_grid(monkeypatch):
    # a grid-z limit of 3 blocks forces one launch per patch (2 filter groups each)
    monkeypatch.setattr(kc, "_MAX_GRID_Z", 3)
    rng = np.random.default_rng(1)
    x, W, b = make(rng, (3, 2, 11, 12), np.float64), make(rng, (3, 2, 5, 5), np.float64), make(rng, 3, np.float64)
    assert_close(kc.conv2d_forward(x, W, b), ref.conv2d_forward(x, W, b), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", [1, 3])
def test_conv_relu_blockmax(dtype, g):
    """Scanning's block max: several thread blocks of outputs, ragged edges dropped."""
    rng = np.random.default_rng(5 + g)
    x, W, b = make(rng, (2, 2, 12, 13), dtype), make(rng, (3, 2, 3, 3), dtype), make(rng, 3, dtype)
    b[1] = -50.0  # this filter's ReLU stays closed: all zeros
    z = ref.conv2d_forward(x, W, b)                        # (2, 3, 10, 11)
    expected = np.zeros((2, 3, 10 // g, 11 // g), dtype)
    for bi in range(10 // g):
        for bj in range(11 // g):
            expected[:, :, bi, bj] = np.maximum(z[:, :, bi * g:bi * g + g, bj * g:bj * g + g].max(axis=(2, 3)), 0)
    got = kc.conv_relu_blockmax(x, W, b, g)
    assert_close(got, expected, dtype)
    assert np.all(got[:, 1] == 0)
    assert_close(got, ref.conv_relu_blockmax(x, W, b, g), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_relu_maxpool_forward(dtype):
    rng = np.random.default_rng(2)
    x, W, b = make(rng, (2, 2, 12, 11), dtype), make(rng, (3, 2, 3, 3), dtype), make(rng, 3, dtype)
    b[1] = -50.0  # this filter's ReLU stays closed: pooled 0, argmax still defined
    pooled, argmax = kc.conv_relu_maxpool_forward(x, W, b)
    pooled_ref, argmax_ref = ref.conv_relu_maxpool_forward(x, W, b)
    assert argmax.dtype == np.int64
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert_close(pooled, pooled_ref, dtype)
    assert np.all(pooled[:, 1] == 0)


def test_fused_forward_ties_go_to_the_first_maximum():
    # Integer data give exact sums in any order, so the maximum is repeated
    # exactly: a period-3 pattern repeats it in many threads and blocks.
    rng = np.random.default_rng(3)
    tile = rng.integers(0, 3, size=(2, 2, 3, 3)).astype(np.float32)
    x = np.tile(tile, (1, 1, 5, 4))[:, :, :14, :12]
    W = rng.integers(-2, 3, size=(3, 2, 3, 3)).astype(np.float32)
    b = np.array([0.0, 1.0, -1.0], np.float32)
    pooled, argmax = kc.conv_relu_maxpool_forward(x, W, b)
    pooled_ref, argmax_ref = ref.conv_relu_maxpool_forward(x, W, b)
    z = ref.conv2d_forward(x, W, b).reshape(2, 3, -1)
    assert np.all((z == z.max(axis=2, keepdims=True)).sum(axis=2) > 1)  # real ties
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(pooled, pooled_ref)
    # a constant map: every position ties, the first one wins
    pooled, argmax = kc.conv_relu_maxpool_forward(np.zeros_like(x), W, b)
    np.testing.assert_array_equal(argmax, np.zeros((2, 3), np.int64))
    np.testing.assert_array_equal(pooled, np.broadcast_to(np.maximum(b, 0), (2, 3)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_backward(dtype):
    rng = np.random.default_rng(4)
    x, W = make(rng, (2, 2, 12, 11), dtype), make(rng, (3, 2, 3, 3), dtype)
    dout = make(rng, (2, 3, 10, 9), dtype)
    for got, want in zip(kc.conv2d_backward(dout, x, W), ref.conv2d_backward(dout, x, W)):
        assert_close(got, want, dtype)
    dx, dW, db = kc.conv2d_backward(dout, x, W, need_dx=False)
    assert dx is None
    assert_close(dW, ref.conv2d_backward(dout, x, W)[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_relu_maxpool_backward(dtype):
    rng = np.random.default_rng(5)
    x, W, b = make(rng, (2, 2, 12, 11), dtype), make(rng, (3, 2, 5, 5), dtype), make(rng, 3, dtype)
    b[2] = -50.0  # closed ReLU: no gradient from this filter
    pooled, argmax = ref.conv_relu_maxpool_forward(x, W, b)
    dpooled = make(rng, (2, 3), dtype)
    got = kc.conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled)
    want = ref.conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled)
    for g, w in zip(got, want):
        assert_close(g, w, dtype)
    dx, dW, db = kc.conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled, need_dx=False)
    assert dx is None
    assert_close(dW, want[1], dtype)
    assert_close(db, want[2], dtype)


def reference_features(x, W1, b1, W2, b2, dpooled):
    """The feature stack composed from the reference kernels, dense backward."""
    a1 = np.maximum(ref.conv2d_forward(x, W1, b1), 0)
    pooled, argmax = ref.conv_relu_maxpool_forward(a1, W2, b2)
    da1, dW2, db2 = ref.conv_relu_maxpool_backward(dpooled, a1, W2, argmax, pooled)
    _, dW1, db1 = ref.conv2d_backward(da1 * (a1 > 0), x, W1, need_dx=False)
    return pooled, argmax, (dW1, db1, dW2, db2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_features_forward_backward(dtype):
    rng = np.random.default_rng(6)
    x = rng.random((2, 1, 12, 11)).astype(dtype)
    W1, b1 = make(rng, (2, 1, 3, 3), dtype), make(rng, 2, dtype) * 0.1
    W2, b2 = make(rng, (3, 2, 3, 3), dtype), make(rng, 3, dtype) * 0.1
    b2[2] = -50.0  # one closed ReLU
    dpooled = make(rng, (2, 3), dtype)
    pooled_ref, argmax_ref, grads_ref = reference_features(x, W1, b1, W2, b2, dpooled)

    pooled, ctx = kc.features_forward(x, W1, b1, W2, b2)
    np.testing.assert_array_equal(ctx["argmax"], argmax_ref)
    assert_close(pooled, pooled_ref, dtype)
    grads = kc.features_backward(dpooled, ctx)
    for g, w in zip(grads, grads_ref):
        assert_close(g, w, dtype)
    # deterministic reductions: the same gradients, bit for bit
    for g, again in zip(grads, kc.features_backward(dpooled, ctx)):
        np.testing.assert_array_equal(g, again)


def test_features_forward_accepts_a_device_array():
    from numba import cuda
    rng = np.random.default_rng(7)
    x = rng.random((1, 1, 12, 11)).astype(np.float32)
    W1, b1 = make(rng, (2, 1, 3, 3), np.float32), np.zeros(2, np.float32)
    W2, b2 = make(rng, (3, 2, 3, 3), np.float32), np.zeros(3, np.float32)
    pooled_host, _ = kc.features_forward(x, W1, b1, W2, b2)
    pooled_dev, _ = kc.features_forward(cuda.to_device(x), W1, b1, W2, b2)
    np.testing.assert_array_equal(pooled_dev, pooled_host)


def test_default_launch_config():
    # the configuration a real GPU uses (8 x 16 threads, 4 pixels, 16 filters)
    kc.set_launch_config(kc.LaunchConfig())
    rng = np.random.default_rng(8)
    x, W, b = make(rng, (1, 2, 12, 11), np.float32), make(rng, (3, 2, 3, 3), np.float32), make(rng, 3, np.float32)
    pooled, argmax = kc.conv_relu_maxpool_forward(x, W, b)
    pooled_ref, argmax_ref = ref.conv_relu_maxpool_forward(x, W, b)
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert_close(pooled, pooled_ref, np.float32)


@pytest.fixture
def wide_simulator_race_window(monkeypatch):
    """The simulator's static shared arrays with their race made likely.

    The simulator creates ``cuda.shared.array((shape), dtype)`` when the first
    thread of a block reaches that line: it looks the line up in a dict and, if
    absent, creates the array and stores it. Two threads that do this at once
    each create their own array, and some threads' values are then never seen
    by the others: the flaky wrong argmax of a CI run. Here every creation
    sleeps between the look-up and the store, so that race happens on nearly
    every launch of a kernel that uses a static shared array. Dynamic shared
    memory (shape 0) is created before the threads start and is left alone.
    """
    if not kc.simulator_enabled():
        pytest.skip("a property of Numba's CUDA simulator")
    import sys
    import time

    from numba.cuda.simulator import kernelapi
    original = kernelapi.FakeCUDAShared.array

    def array(self, shape, dtype, *args, **kwargs):
        if shape == 0:
            return original(self, shape, dtype, *args, **kwargs)
        frame = sys._getframe(1)
        where = (frame.f_code.co_filename, frame.f_lineno)
        found = self._allocations.get(where)
        if found is None:
            time.sleep(0.002)                 # let the other threads get here too
            found = np.zeros(shape, kernelapi.numpy_support.as_dtype(dtype)
                             if not isinstance(dtype, np.dtype) else dtype)
            self._allocations[where] = found
        return found

    monkeypatch.setattr(kernelapi.FakeCUDAShared, "array", array)


@pytest.mark.parametrize("config", ["default", "small"])
def test_block_reductions_do_not_depend_on_thread_timing(wide_simulator_race_window, config):
    """The fused max pool's block reduction and the row sums, with the
    simulator's shared-array race made likely: still the reference's argmax
    and gradients, launch after launch."""
    if config == "default":
        kc.set_launch_config(kc.LaunchConfig())
    rng = np.random.default_rng(10)
    for _ in range(3):
        x, W, b = make(rng, (1, 2, 12, 11), np.float32), make(rng, (3, 2, 3, 3), np.float32), make(rng, 3, np.float32)
        pooled, argmax = kc.conv_relu_maxpool_forward(x, W, b)
        pooled_ref, argmax_ref = ref.conv_relu_maxpool_forward(x, W, b)
        np.testing.assert_array_equal(argmax, argmax_ref)
        assert_close(pooled, pooled_ref, np.float32)
    dout = make(rng, (2, 3, 10, 9), np.float64)
    x, W = make(rng, (2, 2, 12, 11), np.float64), make(rng, (3, 2, 3, 3), np.float64)
    for got, want in zip(kc.conv2d_backward(dout, x, W, need_dx=False)[1:], ref.conv2d_backward(dout, x, W)[1:]):
        assert_close(got, want, np.float64)


def test_shape_errors():
    x = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="channels"):
        kc.conv2d_forward(x, np.zeros((3, 1, 3, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="smaller"):
        kc.conv_relu_maxpool_forward(x, np.zeros((3, 2, 9, 9), np.float32), np.zeros(3, np.float32))


def test_backend_selection():
    assert get_backend("cuda") is kc
    assert get_backend("auto") is kc  # a GPU (or the simulator) is there
    kc.check_available()              # no exception


def test_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kc, "_availability", lambda: "numba.cuda sees no usable GPU.")
    with pytest.raises(BackendUnavailable, match="NUMBA_ENABLE_CUDASIM=1"):
        kc.conv2d_forward(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1))


def test_model_with_the_cuda_backend_matches_numpy():
    # the lead's ShallowCNN routes its feature stack through features_forward/backward
    model_mod = pytest.importorskip("shallowcnn.model")
    rng = np.random.default_rng(9)
    x = rng.random((2, 1, 12, 11)).astype(np.float64)
    kwargs = dict(seed=3, p_drop=0.0, dtype=np.float64, channels=(2, 3), kernel_size=3)
    gpu = model_mod.ShallowCNN(backend="cuda", **kwargs)
    cpu = model_mod.ShallowCNN(backend="numpy", **kwargs)
    assert_close(gpu.forward(x, training=True), cpu.forward(x, training=True), np.float64)
    dlogits = np.array([0.3, -0.7])
    gpu.backward(dlogits)
    cpu.backward(dlogits)
    for name in cpu.grads:
        assert_close(gpu.grads[name], cpu.grads[name], np.float64)
