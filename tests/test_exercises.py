"""The grading of the tutorial exercises (``shallowcnn.grading``).

The key's own solutions (taken from ``tutorials/src``) must pass every check, and planted wrong
answers -- a transposed or flipped kernel, a missing 1/N, Adam without bias correction, and
others -- must fail it with a message that names the likely cause. One student notebook is
also executed with a planted wrong answer (``tests/test_tutorials.py`` runs the others).
"""
from __future__ import annotations


import numpy as np
import pytest

from shallowcnn import grading
from shallowcnn.grading import ExerciseFailed




def solution(b, stem: str, name: str):
    """The function ``name`` as the key (the full notebook ``stem``) defines it."""
    cells = b.parse(b.key_text((b.SRC / f"{stem}.py").read_text(encoding="utf-8")))
    source = next(c.source for c in cells if c.cell_type == "code" and f"def {name}(" in c.source)
    from shallowcnn.layers import sigmoid
    namespace = {"np": np, "sigmoid": sigmoid}
    exec(compile(source, f"{stem}:{name}", "exec"), namespace)
    return namespace[name]


KEY = [("02_convolution_forward", "conv2d_loops", grading.check_conv2d_forward),
       ("02_convolution_forward", "conv2d_shifts", grading.check_conv2d_forward),
       ("02_convolution_forward", "conv2d_im2col", grading.check_conv2d_forward),
       ("03_backward", "conv2d_dW_loops", grading.check_conv2d_dW),
       ("03_backward", "conv2d_dx_loops", grading.check_conv2d_dx),
       ("03_backward", "relu_backward", grading.check_relu_backward),
       ("03_backward", "global_maxpool_backward", grading.check_global_maxpool_backward),
       ("03_backward", "conv_relu_maxpool_backward_sparse", grading.check_sparse_backward),
       ("04_dense_sigmoid_bce", "dense_backward", grading.check_dense_backward),
       ("04_dense_sigmoid_bce", "bce_with_logits", grading.check_bce_with_logits),
       ("05_gradient_checking", "my_rel_error", grading.check_rel_error),
       ("05_gradient_checking", "num_grad", grading.check_numerical_gradient),
       ("06_adam_dropout", "adam_step", grading.check_adam_step),
       ("06_adam_dropout", "inverted_dropout", grading.check_dropout),
       ("07_training", "my_train_step", grading.check_training_step)]


def test_every_exercise_of_the_sources_is_graded_here(tutorial_builder):
    b = tutorial_builder
    ids = [ex["id"] for src in b.sources() for ex in b.exercises_in(src.read_text(encoding="utf-8"))]
    assert len(ids) == len(KEY) >= 14
    assert {i.split(".")[0] for i in ids} >= {"2", "3", "4", "5", "6", "7"}


@pytest.mark.parametrize("stem, name, check", KEY, ids=[k[1] for k in KEY])
def test_the_keys_solution_passes(stem, name, check, tutorial_builder):
    check(solution(tutorial_builder, stem, name))


def _fails(check, fn, *needles):
    with pytest.raises(ExerciseFailed) as err:
        check(fn)
    message = str(err.value)
    assert all(n in message for n in needles), message
    return message


def test_a_transposed_kernel_is_named():
    def transposed(x, W, b):
        return grading.conv2d_oracle(x, W.transpose(0, 1, 3, 2), b)
    message = _fails(grading.check_conv2d_forward, transposed, "transposed", "index", "relative error")
    assert message.startswith("Exercise 2.1 is not right yet.")


def test_a_flipped_kernel_is_named_in_forward_and_in_dx():
    _fails(grading.check_conv2d_forward, lambda x, W, b: grading.conv2d_oracle(x, W[:, :, ::-1, ::-1], b),
           "flipped the kernel")
    _fails(grading.check_conv2d_dx, lambda dout, W, shape: grading.conv2d_dx_oracle(dout, W[:, :, ::-1, ::-1]),
           "flipped")


def test_a_missing_one_over_n_is_named():
    def no_mean(z, y):
        loss = float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))
        return loss, 0.5 * (1 + np.tanh(z / 2)) - y                 # forgot / N
    _fails(grading.check_bce_with_logits, no_mean, "dz", "1/N")


def test_an_unstable_loss_is_told_the_stable_form():
    def naive(z, y):
        p = 1 / (1 + np.exp(-z))
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))), (p - y) / len(z)
    _fails(grading.check_bce_with_logits, naive, "NaN or infinite", "stable form")


def test_adam_without_bias_correction_is_named():
    def no_correction(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        w -= lr * m / (np.sqrt(v) + eps)
    _fails(grading.check_adam_step, no_correction, "bias correction")


def test_adam_that_loses_its_moments_is_told_so():
    def fresh_moments(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
        m = (1 - beta1) * g                                           # new arrays: the caller's stay zero
        v = (1 - beta2) * g * g
        w -= lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t) * m / (np.sqrt(v) + eps)
    _fails(grading.check_adam_step, fresh_moments, "in place")


def test_other_classic_mistakes_are_named():
    _fails(grading.check_conv2d_dW, lambda dout, x, W: (grading.conv2d_dW_oracle(dout, x, 3),
                                                        dout.mean(axis=(0, 2, 3))), "db", "mean")
    _fails(grading.check_relu_backward, lambda dout, z: dout * (z >= 0), "z > 0")
    _fails(grading.check_global_maxpool_backward,
           lambda d, x: (x == x.max(axis=(2, 3), keepdims=True)) * d[:, :, None, None], "first one")
    _fails(grading.check_dense_backward, lambda G, X, W: (G @ W.T, G.T @ X, G.sum(0)), "transpose")
    _fails(grading.check_dropout, lambda x, p, rng: np.where(rng.random(x.shape) < 1 - p, x, 0.0), "not scaled")
    _fails(grading.check_rel_error, lambda a, b: float(np.max(np.abs(np.subtract(a, b)) / np.abs(a))),
           "|a| + |b|")

    def one_sided(f, x, h):
        g, f0 = np.zeros_like(x), f()
        for idx in np.ndindex(x.shape):
            old = x[idx]
            x[idx] = old + h
            g[idx] = (f() - f0) / h
            x[idx] = old
        return g
    _fails(grading.check_numerical_gradient, one_sided, "one-sided")


def test_a_training_step_without_the_update_is_caught():
    def no_step(model, opt, loss_fn, xb, yb):
        loss = loss_fn.forward(model.forward(xb, training=True), yb)
        model.backward(loss_fn.backward())
        return loss
    _fails(grading.check_training_step, no_step, "opt.step")


def test_a_wrong_answer_that_is_a_scaled_right_one_is_told_the_factor():
    _fails(grading.check_conv2d_forward, lambda x, W, b: 2 * grading.conv2d_oracle(x, W, b), "times 2")


def test_a_wrong_shape_and_a_missing_return_are_explained():
    _fails(grading.check_conv2d_forward, lambda x, W, b: grading.conv2d_oracle(x, W, b)[:, :, 1:], "shape")
    _fails(grading.check_relu_backward, lambda dout, z: None, "return")


def test_overfitting_is_judged_on_the_lowest_loss():
    assert grading.check_overfits([0.7, 0.3, 0.04]) == 0.04
    _fails(lambda losses: grading.check_overfits(losses), [0.69, 0.69, 0.69], "does not fall")
