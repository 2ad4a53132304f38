"""The cuda backend: its kernels are tested in tests/cuda_sim/, in a fresh
Python process, because numba.cuda must be configured before numba is imported
(and this process has already imported it).

* always: in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), tiny shapes;
* when a real GPU is present: the same tests on the GPU.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shallowcnn.kernels import BackendUnavailable

ROOT = Path(__file__).resolve().parent.parent
SIM_TESTS = ROOT / "tests" / "cuda_sim"


def run_cuda_tests(env_changes, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_changes)
    cmd = [sys.executable, "-m", "pytest", str(SIM_TESTS), "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout and " skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


def real_gpu_present() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:
        return False


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="the simulator is on in this process: tests/cuda_sim is collected directly")
def test_cuda_kernels_in_the_simulator():
    pytest.importorskip("numba.cuda")
    run_cuda_tests({"NUMBA_ENABLE_CUDASIM": "1"})


@pytest.mark.skipif(not real_gpu_present(), reason="no CUDA GPU")
def test_cuda_kernels_on_the_gpu():
    run_cuda_tests({"SHALLOWCNN_CUDA_TESTS": "1"}, drop=("NUMBA_ENABLE_CUDASIM",))


def test_asking_for_cuda_without_a_gpu_says_how_to_get_one(monkeypatch):
    from shallowcnn.kernels import cuda as kc, get_backend
    monkeypatch.setattr(kc, "_availability", lambda: "numba.cuda sees no usable GPU.")
    with pytest.raises(BackendUnavailable) as info:
        get_backend("cuda")
    message = str(info.value)
    for hint in ("shallowcnn[cuda]", "numba-cuda", "driver", "NUMBA_ENABLE_CUDASIM=1"):
        assert hint in message
    with pytest.raises(BackendUnavailable):
        kc.features_forward(np.zeros((1, 1, 20, 20)), np.zeros((6, 1, 3, 3)), np.zeros(6),
                            np.zeros((16, 6, 3, 3)), np.zeros(16))
