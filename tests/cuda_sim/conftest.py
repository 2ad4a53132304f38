"""The CUDA kernel tests in this folder need numba.cuda to be set up *before*
numba is imported: the simulator (NUMBA_ENABLE_CUDASIM=1) or a real GPU.

The main test run has already imported numba, so it does not collect them;
``tests/test_kernels_cuda.py`` runs this folder in a fresh subprocess, with
NUMBA_ENABLE_CUDASIM=1 (always) and with SHALLOWCNN_CUDA_TESTS=1 on a real GPU.
Run them by hand with::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda_sim -q
"""
import os
import sys

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # The simulator runs each CUDA thread as a Python thread and polls them;
    # a shorter GIL switch interval makes it several times faster.
    sys.setswitchinterval(5e-4)

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and os.environ.get("SHALLOWCNN_CUDA_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]
