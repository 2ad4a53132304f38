"""The grading of the tutorial exercises (``shallowcnn.grading``).

The key's own solutions (taken from ``tutorials/src``) must pass every check, and planted wrong
answers -- a transposed or flipped kernel, a missing 1/N, Adam without bias correction, and
others -- must fail it with a message that names the likely cause. ``shallowcnn grade`` is run
on student notebooks (untouched, with their check cells deleted, with an endless loop), on the
key, and on files that are not notebooks; and the student notebooks must not import what they
ask for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shallowcnn import grading
from shallowcnn.grading import ExerciseFailed
from shallowcnn.grading.exercises import EXERCISES

ROOT = Path(__file__).resolve().parents[1]




def key_namespace(b, number: str) -> dict:
    """The functions the key (the full notebook ``number``, built from its source) defines, as
    ``shallowcnn grade`` builds them; for the capstone, after those of the keys 02-06."""
    from shallowcnn.grading.notebook import (
        CAPSTONE,
        CAPSTONE_SOURCES,
        definitions,
        execute_definitions,
    )

    namespace = {"__name__": "key"}
    for n in (CAPSTONE_SOURCES + (number,)) if number == CAPSTONE else (number,):
        src = next(s for s in b.sources() if s.name.startswith(n + "_"))
        parts, problems = definitions(b.build(src))
        assert not problems, problems
        assert not execute_definitions(parts, namespace, src.name)
    return namespace


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.id for e in EXERCISES])
def test_the_keys_solution_passes(exercise, tutorial_builder):
    namespace = key_namespace(tutorial_builder, exercise.notebook)
    check = getattr(grading, exercise.check)
    check(*(namespace[f] for f in exercise.functions), exercise=exercise.id)


def test_every_exercise_of_the_sources_is_graded(tutorial_builder):
    b = tutorial_builder
    ids = [ex["id"] for src in b.sources() for ex in b.exercises_in(src.read_text(encoding="utf-8"))]
    assert ids == [e.id for e in EXERCISES] and len(ids) >= 16
    assert {i.split(".")[0] for i in ids} >= {"2", "3", "4", "5", "6", "7", "10"}
    for src in b.sources():                       # each check's function is the one the source defines
        text = src.read_text(encoding="utf-8")
        for e in EXERCISES:
            if src.name.startswith(e.notebook + "_"):
                assert all(f"def {f}(" in text for f in e.functions), e.id


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


# ---------------------------------------------------------------------------------------------
# The holes named in issue 24: each planted wrong answer fails with its cause.


def test_rel_error_over_a_plus_b_is_named():
    _fails(grading.check_rel_error,
           lambda a, b: float(np.max(np.abs(np.subtract(a, b)) / np.maximum(1e-8, np.abs(np.add(a, b))))),
           "|a + b|")


def test_a_numerical_gradient_on_a_copy_is_named_and_not_called_a_factor():
    def on_a_copy(f, x, h=1e-5):
        grad, xc = np.zeros_like(x), x.copy()
        for idx in np.ndindex(x.shape):
            old = xc[idx]
            xc[idx] = old + h
            up = f()
            xc[idx] = old - h
            grad[idx] = (up - f()) / (2 * h)
            xc[idx] = old
        return grad
    message = _fails(grading.check_numerical_gradient, on_a_copy, "copy", "in place")
    assert "times 0" not in message


def test_max_pool_gradient_sent_to_every_position_is_named():
    _fails(grading.check_global_maxpool_backward,
           lambda d, x: np.broadcast_to(d[:, :, None, None], x.shape).copy(), "every position")


def test_the_clipped_textbook_loss_is_named():
    def clipped(z, y):
        p = np.clip(1 / (1 + np.exp(-z)), 1e-7, 1 - 1e-7)
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))), (p - y) / len(z)
    _fails(grading.check_bce_with_logits, clipped, "loss", "clipped", "stable form")


def test_adam_with_t_plus_one_is_named():
    def t_plus_one(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        w -= lr * np.sqrt(1 - beta2 ** (t + 1)) / (1 - beta1 ** (t + 1)) * m / (np.sqrt(v) + eps)
    _fails(grading.check_adam_step, t_plus_one, "t + 1")


def test_dropout_keeping_u_at_least_p_is_named():
    _fails(grading.check_dropout,
           lambda x, p, rng: np.where(rng.random(x.shape) >= p, x / (1 - p), 0.0), "u >= p_drop")


def test_a_training_step_that_updates_before_backward_is_named():
    def step_first(model, opt, loss_fn, xb, yb):
        loss = loss_fn.forward(model.forward(xb, training=True), yb)
        opt.step(model.grads)
        model.backward(loss_fn.backward())
        return loss
    _fails(grading.check_training_step, step_first, "before backward")


# ---------------------------------------------------------------------------------------------
# The capstone's checks


def _capstone(b):
    return key_namespace(b, "10")


def test_the_capstone_oracle_passes_a_centred_difference_check():
    from shallowcnn.grading import capstone

    rng = np.random.default_rng(0)
    x, y = rng.random((4, 1, 9, 9)), np.array([1.0, 0.0, 1.0, 0.0])
    params = capstone.init_params(filters=3, kernel=3, seed=2)
    params["b1"][:] = 0.05
    _, grads = capstone.network_oracle(params, x, y)
    for k, w in params.items():
        for idx in np.ndindex(w.shape):
            old = w[idx]
            w[idx] = old + 1e-6
            up = capstone.network_oracle(params, x, y)[0]
            w[idx] = old - 1e-6
            down = capstone.network_oracle(params, x, y)[0]
            w[idx] = old
            assert abs((up - down) / 2e-6 - grads[k][idx]) < 1e-6 * max(1.0, abs(grads[k][idx])), (k, idx)


def test_a_capstone_network_with_a_summed_loss_or_no_dropout_mask_in_backward_fails(tutorial_builder):
    ns = _capstone(tutorial_builder)
    right = ns["network_loss_and_grads"]

    def summed(params, x, y, p_drop=0.0, rng=None):
        loss, grads = right(params, x, y, p_drop, rng)
        return loss * len(y), {k: g * len(y) for k, g in grads.items()}
    _fails(grading.check_network_gradients, summed, "summed")

    def mask_forgotten(params, x, y, p_drop=0.0, rng=None):        # dropout in the forward pass only
        if p_drop == 0:
            return right(params, x, y)
        loss, _ = right(params, x, y, p_drop, rng)
        return loss, right(params, x, y)[1]
    _fails(grading.check_network_gradients, mask_forgotten, "p_drop = 0.5", "mask")


def test_a_capstone_training_loop_without_moments_or_returning_late_losses_fails(tutorial_builder):
    ns = _capstone(tutorial_builder)
    loss_and_grads = ns["network_loss_and_grads"]

    def after_update(params, x, y, epochs, lr=1e-2, batch_size=32, p_drop=0.2, seed=0):
        losses = []
        for _ in range(epochs):
            _, grads = loss_and_grads(params, x, y)
            for k in params:
                params[k] -= lr * grads[k]
            losses.append(loss_and_grads(params, x, y)[0])         # the loss after the step
        return losses
    _fails(grading.check_network_overfits, after_update, "before each update")


# ---------------------------------------------------------------------------------------------
# `shallowcnn grade`


def _student_copy(tmp_path, stem, edit=None):
    import nbformat

    nb = nbformat.read(ROOT / "tutorials" / "exercises" / f"{stem}.ipynb", as_version=4)
    if edit:
        edit(nb)
    path = tmp_path / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


def _grade(capsys, *argv):
    from shallowcnn.cli import main

    status = main(["grade", *map(str, argv)])
    return status, capsys.readouterr()


def test_grade_fails_every_stub_and_writes_one_csv_row_per_exercise(tmp_path, capsys):
    import csv

    path = _student_copy(tmp_path, "04_dense_sigmoid_bce")
    status, out = _grade(capsys, path, "-o", tmp_path / "g.csv")
    assert status == 1
    rows = list(csv.DictReader((tmp_path / "g.csv").read_text().splitlines()))
    assert [r["exercise"] for r in rows] == ["4.1", "4.2"]
    assert all(r["passed"] == "false" and r["points"] == "0" and "NotImplementedError" in r["message"] for r in rows)
    assert "0 of 2 exercises passed" in out.out


def test_grade_ignores_deleted_check_cells(tmp_path, capsys):
    def no_checks(nb):
        nb.cells = [c for c in nb.cells if "check" not in c.metadata.get("tags", [])]
    path = _student_copy(tmp_path, "04_dense_sigmoid_bce", no_checks)
    status, out = _grade(capsys, path)
    assert status == 1 and out.out.count("FAILED") == 2


def test_grade_passes_the_key_and_a_written_answer_and_names_a_wrong_one(tmp_path, capsys, tutorial_builder):
    import nbformat

    b = tutorial_builder
    key = tmp_path / "key" / "05_gradient_checking.ipynb"
    key.parent.mkdir()
    nbformat.write(b.build(b.SRC / "05_gradient_checking.py"), key)
    status, out = _grade(capsys, key)
    assert status == 0 and "2 of 2 exercises passed" in out.out

    def answer(nb):                                    # 5.1 written with |a + b|; no check cell left
        for c in nb.cells:
            if "def my_rel_error(" in c.source:
                c.source = c.source.split("    # Exercise 5.1")[0] + (
                    "    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a + b))))\n")
        nb.cells = [c for c in nb.cells if "check" not in c.metadata.get("tags", [])]
    status, out = _grade(capsys, _student_copy(tmp_path, "05_gradient_checking", answer))
    assert status == 1 and "|a + b|" in out.out and "1 of 2" not in out.out


def test_grade_reports_an_endless_loop_as_a_timeout(tmp_path, capsys):
    def endless(nb):
        for c in nb.cells:
            if "def dense_backward(" in c.source:
                c.source = c.source.replace("raise NotImplementedError", "while True: pass  #")
    status, out = _grade(capsys, _student_copy(tmp_path, "04_dense_sigmoid_bce", endless), "--timeout", "8")
    assert status == 1 and "timed out after 8 s" in out.out


def test_grade_refuses_what_is_not_a_notebook_by_name(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.ipynb").write_text("{not json")
    (tmp_path / "99_other.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    for name, needle in [("notes.txt", "not a Jupyter notebook"), ("broken.ipynb", "invalid JSON"),
                         ("missing.ipynb", "cannot be read"), ("99_other.ipynb", "no graded exercises")]:
        status, out = _grade(capsys, tmp_path / name, "-o", tmp_path / "g.csv")
        assert status == 1 and name in out.err and needle in out.err, out.err


# ---------------------------------------------------------------------------------------------
# No answers in the student's hands


def _imported_names(nb) -> set:
    import ast

    names = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                names |= {part for a in node.names for part in a.name.split(".")}
            elif isinstance(node, ast.ImportFrom):
                names |= set((node.module or "").split(".")) | {a.name for a in node.names}
    return names


def test_student_notebooks_import_nothing_they_ask_for_and_hold_no_solution():
    import nbformat

    for number in ("02", "03", "04", "05", "06", "07", "10"):
        path = next((ROOT / "tutorials" / "exercises").glob(f"{number}_*.ipynb"))
        nb = nbformat.read(path, as_version=4)
        asked = {name for e in EXERCISES if e.notebook == number for name in e.answers}
        leaked = _imported_names(nb) & asked
        assert not leaked, f"{path.name} imports {sorted(leaked)}, which its exercises ask the student to write"
        text = "\n".join(c.source for c in nb.cells)
        assert f"../{path.name}" not in text and "](../" not in text, f"{path.name} links to the key"
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "np.log1p(np.exp(-np.abs(" not in code and "** t)" not in code, f"{path.name} holds a worked answer"


def test_grade_passes_over_a_tutorial_notebook_without_exercises(capsys):
    status, out = _grade(capsys, ROOT / "tutorials" / "exercises" / "01_data.ipynb")
    assert "a tutorial notebook without exercises" in out.out and not out.err
    assert status == 1 and "0 of 0 exercises passed" in out.out      # nothing graded is not a pass
