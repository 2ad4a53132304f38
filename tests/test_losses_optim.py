"""Binary cross-entropy (plain and fused) and Adam against hand-worked numbers."""
import numpy as np
import pytest

from shallowcnn.gradcheck import SMOOTH_BOUND, check_loss
from shallowcnn.losses import BinaryCrossEntropy, BinaryCrossEntropyWithLogits
from shallowcnn.optim import Adam


def test_bce_by_hand():
    # -(log 0.8 + log(1 - 0.4)) / 2 = -(ln 0.8 + ln 0.6) / 2
    loss = BinaryCrossEntropy().forward(np.array([0.8, 0.4]), np.array([1.0, 0.0]))
    assert loss == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2, rel=1e-12)


def test_fused_bce_equals_plain_bce_and_is_stable():
    z = np.array([-3.0, -0.5, 0.0, 2.0, 4.0])
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    p = 1 / (1 + np.exp(-z))
    assert BinaryCrossEntropyWithLogits().forward(z, y) == pytest.approx(BinaryCrossEntropy().forward(p, y), rel=1e-12)
    fused = BinaryCrossEntropyWithLogits()
    # logit +-100 with the wrong label costs exactly |z| each; no NaN, no inf
    loss = fused.forward(np.array([100.0, -100.0, 100.0, -100.0]), np.array([0.0, 1.0, 1.0, 0.0]))
    assert loss == pytest.approx((100 + 100 + 0 + 0) / 4, rel=1e-12)
    grad = fused.backward()
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [0.25, -0.25, 0.0, 0.0], atol=1e-15)
    for dtype in (np.float32, np.float64):
        logits, labels = np.array([1e4, -1e4], dtype), np.array([0, 1], dtype)
        assert np.isfinite(BinaryCrossEntropyWithLogits().forward(logits, labels))


def test_loss_gradients():
    rng = np.random.default_rng(0)
    y = (rng.random(8) < 0.5).astype(np.float64)
    assert check_loss(BinaryCrossEntropy(), rng.uniform(0.05, 0.95, 8), y) < SMOOTH_BOUND
    assert check_loss(BinaryCrossEntropyWithLogits(), rng.standard_normal(8) * 5, y) < SMOOTH_BOUND


def test_loss_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        BinaryCrossEntropyWithLogits().forward(np.zeros(3), np.zeros(4))


def test_adam_three_steps_by_hand():
    # lr 0.1, Keras defaults; gradients 0.5, 0.1, -0.3 on w = 1.
    # step 1: m = 0.05, v = 0.00025, lr_1 = 0.1 sqrt(0.001) / 0.1 = 0.0316228;
    #         Adam's first step is lr * sign(g) (less a hair for eps): w = 0.9000006
    # step 2: m = 0.055, v = 0.00025975, lr_2 = 0.1 sqrt(0.001999) / 0.19 = 0.0235317 -> 0.8196970
    # step 3: m = 0.0195, v = 0.00034949025, lr_3 = 0.0202011 -> 0.7986259
    w = np.array([1.0])
    adam = Adam({"w": w}, lr=0.1)
    expected = [0.9000006324515321, 0.819697032869824, 0.7986258503439517]
    for g, want in zip([0.5, 0.1, -0.3], expected):
        adam.step({"w": np.array([g])})
        assert w[0] == pytest.approx(want, abs=1e-12)
    assert adam.t == 3
    assert adam.m["w"][0] == pytest.approx(0.0195, abs=1e-15)
    assert adam.v["w"][0] == pytest.approx(0.00034949025, abs=1e-15)


def test_adam_updates_in_place_and_state_round_trips():
    w = np.ones((2, 2), np.float32)
    adam = Adam({"w": w})
    adam.step({"w": np.full((2, 2), 2.0, np.float32)})
    assert w.dtype == np.float32 and np.allclose(w, 1 - 1e-3, atol=1e-6)
    state = adam.state_dict()
    other = Adam({"w": w.copy()})
    other.load_state_dict(state)
    assert other.t == 1 and np.array_equal(other.m["w"], adam.m["w"])
