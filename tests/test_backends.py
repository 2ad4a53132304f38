"""The whole network on each backend gives the reference's numbers."""
import numpy as np
import pytest

from shallowcnn.gradcheck import run_all
from shallowcnn.kernels import BackendUnavailable, cuda_usable, get_backend, resolve_backend_name
from shallowcnn.model import ShallowCNN
from shallowcnn.optim import Adam
from shallowcnn.train import train_step


CONTRACT = ("conv2d_forward", "conv2d_backward", "conv_relu_maxpool_forward", "conv_relu_maxpool_backward",
            "features_forward", "features_backward", "conv_relu_blockmax")


def test_every_backend_module_provides_the_whole_contract():
    """kernels/__init__.py documents these functions; every backend has them (cuda without a GPU too)."""
    import importlib
    for module in ("reference", "cpu", "cuda"):
        kernels = importlib.import_module(f"shallowcnn.kernels.{module}")
        missing = [name for name in CONTRACT if not callable(getattr(kernels, name, None))]
        assert not missing, f"kernels/{module}.py lacks {missing}"


def test_auto_picks_numba_without_a_gpu():
    if cuda_usable():
        pytest.skip("a GPU is present: auto picks cuda")
    assert resolve_backend_name("auto") == "numba"
    assert ShallowCNN(backend="auto").backend == "numba"


def test_cuda_without_gpu_is_a_clear_error():
    if cuda_usable():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailable, match="pip install"):
        get_backend("cuda")


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_numba_model_matches_numpy_reference(dtype, rtol):
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 29, 26)).astype(dtype)
    ref = ShallowCNN(backend="numpy", dtype=dtype, seed=2)                 # textbook dense stack
    fast = ShallowCNN(backend="numba", dtype=dtype, seed=2)                # fused, sparse backward
    assert fast.fused and not ref.fused
    np.testing.assert_allclose(fast.forward(x, training=True), ref.forward(x, training=True), rtol=rtol)
    d = rng.standard_normal(3).astype(dtype)
    ref.backward(d)
    fast.backward(d)
    for k in ref.grads:
        scale = np.abs(ref.grads[k]).max()
        np.testing.assert_allclose(fast.grads[k], ref.grads[k], rtol=rtol, atol=rtol * scale, err_msg=k)


def test_five_adam_steps_numba_equal_numpy():
    rng = np.random.default_rng(1)
    x = rng.random((8, 1, 24, 24))
    y = (np.arange(8) % 2).astype(np.float64)
    models = [ShallowCNN(backend=b, dtype=np.float64, seed=3) for b in ("numpy", "numba")]
    for model in models:
        adam = Adam(model.params, lr=1e-2)
        for step in range(5):
            batch = slice(4 * (step % 2), 4 * (step % 2) + 4)
            train_step(model, adam, x[batch], y[batch])
    for k in models[0].params:
        np.testing.assert_allclose(models[1].params[k], models[0].params[k], rtol=0, atol=1e-9, err_msg=k)
    assert not np.allclose(models[0].params["conv2.W"], ShallowCNN(dtype=np.float64, seed=3).params["conv2.W"])


def test_gradcheck_passes_on_numba():
    rows = run_all("numba", seed=1, max_entries=8)
    assert all(err <= bound for _, _, err, bound in rows), [r for r in rows if r[2] > r[3]]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_non_square_kernels_are_refused(backend):
    kernels = get_backend(backend)
    x = np.zeros((1, 2, 10, 10), np.float32)
    with pytest.raises(ValueError, match="kernels must be square, got 3x5"):
        kernels.conv2d_forward(x, np.zeros((4, 2, 3, 5), np.float32), np.zeros(4, np.float32))


def test_without_a_cuda_driver_auto_does_not_import_numba_cuda():
    """no_cuda_driver(): where no CUDA driver library loads (Linux), cuda_usable() answers
    False without importing numba.cuda (1.4 s of every `shallowcnn scan`); with the
    simulator on it always asks numba.cuda."""
    import os
    import subprocess
    import sys
    code = ("import sys; from shallowcnn.kernels import cuda_usable, no_cuda_driver; "
            "nd = no_cuda_driver(); u = cuda_usable(); print(nd, u, 'numba.cuda' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBA_CUDA_DRIVER")}
    no_driver, usable, imported = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                                 text=True, check=True).stdout.split()
    if no_driver == "True":
        assert usable == "False" and imported == "False"
    sim = subprocess.run([sys.executable, "-c", code], env=dict(env, NUMBA_ENABLE_CUDASIM="1"),
                         capture_output=True, text=True, check=True).stdout.split()
    assert sim[0] == "False"


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_conv2d_forward_relu_is_the_relu_of_the_convolution(name):
    """``relu=True`` is part of every backend's contract (the scan asks for it); it equals
    max(conv, 0) of the same backend's plain convolution, with negative outputs present."""
    kernels = get_backend(name)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 20, 23)).astype(np.float32)
    W = rng.standard_normal((6, 1, 9, 9)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    plain = kernels.conv2d_forward(x, W, b)
    assert (plain < 0).mean() > 0.2                         # the ReLU has work to do
    np.testing.assert_array_equal(kernels.conv2d_forward(x, W, b, relu=True), np.maximum(plain, 0))
