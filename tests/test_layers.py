"""Each layer against an independent reference and a float64 gradient check."""
import numpy as np
import pytest

from shallowcnn.gradcheck import KINK_BOUND, SMOOTH_BOUND, check_layer, numerical_gradient, rel_error
from shallowcnn.layers import (Conv2D, ConvReLUGlobalMaxPool, Dense, Dropout, GlobalMaxPool2D, ReLU,
                               Sigmoid, sigmoid)


def naive_conv2d(x, W, b):
    """Seven nested loops, the definition itself: out[n,f,i,j] = b[f] + sum W[f,c,p,q] x[n,c,i+p,j+q]."""
    N, C, H, Wd = x.shape
    F, _, K, _ = W.shape
    out = np.zeros((N, F, H - K + 1, Wd - K + 1))
    for n in range(N):
        for f in range(F):
            for i in range(H - K + 1):
                for j in range(Wd - K + 1):
                    s = b[f]
                    for c in range(C):
                        for p in range(K):
                            for q in range(K):
                                s += W[f, c, p, q] * x[n, c, i + p, j + q]
                    out[n, f, i, j] = s
    return out


def naive_conv2d_backward(dout, x, W):
    """The same seven loops, each product sending its gradient to both factors."""
    N, C, H, Wd = x.shape
    F, _, K, _ = W.shape
    dx, dW, db = np.zeros_like(x), np.zeros_like(W), np.zeros(F)
    for n in range(N):
        for f in range(F):
            for i in range(H - K + 1):
                for j in range(Wd - K + 1):
                    g = dout[n, f, i, j]
                    db[f] += g
                    for c in range(C):
                        for p in range(K):
                            for q in range(K):
                                dW[f, c, p, q] += g * x[n, c, i + p, j + q]
                                dx[n, c, i + p, j + q] += g * W[f, c, p, q]
    return dx, dW, db


@pytest.mark.parametrize("shape,F,K", [((2, 3, 9, 8), 4, 3), ((1, 1, 7, 7), 2, 5), ((2, 2, 6, 11), 3, 1)])
def test_conv2d_matches_seven_loops(shape, F, K):
    rng = np.random.default_rng(1)
    conv = Conv2D(shape[1], F, K, rng=rng, dtype=np.float64)
    conv.params["b"][...] = rng.standard_normal(F)
    x = rng.standard_normal(shape)
    out = conv.forward(x)
    np.testing.assert_allclose(out, naive_conv2d(x, conv.params["W"], conv.params["b"]), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx = conv.backward(dout)
    ndx, ndW, ndb = naive_conv2d_backward(dout, x, conv.params["W"])
    np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grads["W"], ndW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grads["b"], ndb, rtol=1e-12, atol=1e-12)


def test_conv2d_hand_example():
    # 1 channel 3x3 input, 2x2 kernel of ones, bias 1: each output is 1 + the window's sum.
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    conv = Conv2D(1, 1, 2, dtype=np.float64)
    conv.params["W"][...] = 1.0
    conv.params["b"][...] = 1.0
    np.testing.assert_array_equal(conv.forward(x)[0, 0], [[1 + 0 + 1 + 3 + 4, 1 + 1 + 2 + 4 + 5],
                                                         [1 + 3 + 4 + 6 + 7, 1 + 4 + 5 + 7 + 8]])


def test_conv2d_keeps_dtype_and_rejects_small_input():
    conv = Conv2D(1, 2, 9)
    assert conv.forward(np.zeros((1, 1, 10, 10), np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="smaller than the 9x9 kernel"):
        conv.forward(np.zeros((1, 1, 8, 20), np.float32))


def test_first_layer_skips_input_gradient():
    conv = Conv2D(1, 2, 3, dtype=np.float64, need_dx=False)
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5))
    assert conv.backward(np.ones_like(conv.forward(x))) is None


def test_glorot_uniform_limits_and_zero_bias():
    conv = Conv2D(6, 16, 9, rng=np.random.default_rng(0))
    limit = np.sqrt(6 / (6 * 81 + 16 * 81))
    W = conv.params["W"]
    assert np.abs(W).max() <= limit and np.abs(W).max() > 0.95 * limit
    assert abs(W.std() - limit / np.sqrt(3)) < 0.02 * limit       # std of U(-a, a) is a / sqrt(3)
    assert not conv.params["b"].any()


def test_relu_and_sigmoid_by_hand():
    x = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(ReLU().forward(x), [[0.0, 0.0, 3.0]])
    np.testing.assert_allclose(sigmoid(np.array([0.0, np.log(3.0), -np.log(3.0)])), [0.5, 0.75, 0.25])
    big = sigmoid(np.array([-1000.0, 1000.0]))                      # no overflow warnings, exact limits
    np.testing.assert_array_equal(big, [0.0, 1.0])


def test_global_max_pool_sends_gradient_to_first_maximum():
    x = np.array([[[[1.0, 5.0], [5.0, 2.0]]]])                     # tie: two maxima at (0,1) and (1,0)
    pool = GlobalMaxPool2D()
    np.testing.assert_array_equal(pool.forward(x), [[5.0]])
    np.testing.assert_array_equal(pool.backward(np.array([[3.0]])), [[[[0.0, 3.0], [0.0, 0.0]]]])


def test_dropout_is_inverted_seeded_and_identity_at_inference():
    x = np.ones((2000, 16))
    d = Dropout(p_drop=0.2, rng=np.random.default_rng(0))
    assert d.forward(x, training=False) is x
    out = d.forward(x, training=True)
    kept = out != 0
    assert abs(kept.mean() - 0.8) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.8)                  # survivors scaled by 1/keep
    again = Dropout(p_drop=0.2, rng=np.random.default_rng(0)).forward(x, training=True)
    np.testing.assert_array_equal(out, again)                      # same seed, same mask
    np.testing.assert_array_equal(d.backward(np.ones_like(x)), out)
    with pytest.raises(ValueError):
        Dropout(p_drop=1.0)


def test_dense_by_hand():
    dense = Dense(2, 1, dtype=np.float64)
    dense.params["W"][...] = [[2.0], [-1.0]]
    dense.params["b"][...] = 0.5
    np.testing.assert_array_equal(dense.forward(np.array([[1.0, 3.0]])), [[2 - 3 + 0.5]])
    np.testing.assert_array_equal(dense.backward(np.array([[1.0]])), [[2.0, -1.0]])
    np.testing.assert_array_equal(dense.grads["W"], [[1.0], [3.0]])


# ------------------------------------------------------------ gradient checks
def test_numerical_gradient_of_known_function():
    x = np.array([1.0, -2.0, 0.5])
    g = numerical_gradient(lambda: float(np.sum(x ** 3)), x)
    np.testing.assert_allclose(g, 3 * x ** 2, rtol=1e-9)
    assert rel_error([1.0], [1.0 + 1e-9]) < 1e-9
    with pytest.raises(TypeError):
        numerical_gradient(lambda: 0.0, np.zeros(2, np.float32))


def _relu_input(rng, shape):
    z = rng.standard_normal(shape)
    return np.where(np.abs(z) < 1e-3, 0.5, z)


@pytest.mark.parametrize("make,shape,bound", [
    (lambda rng: Conv2D(2, 3, 3, rng=rng, dtype=np.float64), (2, 2, 7, 6), SMOOTH_BOUND),
    (lambda rng: Conv2D(1, 6, 9, rng=rng, dtype=np.float64), (1, 1, 12, 11), SMOOTH_BOUND),
    (lambda rng: ConvReLUGlobalMaxPool(Conv2D(2, 3, 3, rng=rng, dtype=np.float64)), (2, 2, 7, 6), KINK_BOUND),
    (lambda rng: GlobalMaxPool2D(), (2, 3, 4, 5), KINK_BOUND),
    (lambda rng: Dense(16, 1, rng=rng, dtype=np.float64), (4, 16), SMOOTH_BOUND),
    (lambda rng: Dense(5, 3, rng=rng, dtype=np.float64), (4, 5), SMOOTH_BOUND),
    (lambda rng: Sigmoid(), (4, 3), SMOOTH_BOUND),
])
def test_layer_gradients(make, shape, bound):
    rng = np.random.default_rng(3)
    layer = make(rng)
    for name in layer.params:                                      # non-zero biases exercise db
        if name == "b":
            layer.params["b"][...] = rng.standard_normal(layer.params["b"].shape) * 0.1
    errors = check_layer(layer, rng.standard_normal(shape), seed=3)
    assert errors and max(errors.values()) < bound, errors


def test_relu_gradient():
    rng = np.random.default_rng(4)
    errors = check_layer(ReLU(), _relu_input(rng, (3, 4, 5)), seed=4)
    assert errors["x"] < KINK_BOUND


def test_dropout_gradient_with_fixed_mask():
    d = Dropout(0.2)

    def reset():
        d.rng = np.random.default_rng(7)
    errors = check_layer(d, np.random.default_rng(5).standard_normal((6, 16)), reset=reset)
    assert errors["x"] < SMOOTH_BOUND


def test_fused_layer_equals_textbook_stack():
    rng = np.random.default_rng(6)
    conv = Conv2D(3, 4, 3, rng=rng, dtype=np.float64)
    conv.params["b"][...] = rng.standard_normal(4) * 0.1
    x = rng.standard_normal((2, 3, 8, 9))
    relu, pool = ReLU(), GlobalMaxPool2D()
    dense_out = pool.forward(relu.forward(conv.forward(x)))
    dout = rng.standard_normal(dense_out.shape)
    dx_dense = conv.backward(relu.backward(pool.backward(dout)))
    grads_dense = {k: v.copy() for k, v in conv.grads.items()}
    fused = ConvReLUGlobalMaxPool(conv)
    np.testing.assert_allclose(fused.forward(x), dense_out, rtol=1e-12)
    np.testing.assert_allclose(fused.backward(dout), dx_dense, rtol=1e-12, atol=1e-14)
    for k in grads_dense:
        np.testing.assert_allclose(conv.grads[k], grads_dense[k], rtol=1e-12, atol=1e-14)
