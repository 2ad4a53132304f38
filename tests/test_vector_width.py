"""The vector width of the CPU kernels (kernels/vector_width.py, `shallowcnn tune`'s measurement).

Numba fixes its CPU features when the first function is defined, once per process: every test
that checks what a process compiles runs a new Python process. The kernels' results at 512 bits
are checked against the reference by running a subset of the kernel tests in such a process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

import numba  # noqa: E402

from shallowcnn.cli import main  # noqa: E402
from shallowcnn.commands import tune  # noqa: E402
from shallowcnn.kernels import autotune, autotune_cache, vector_width  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AVX512 = vector_width.has_avx512()
needs_avx512 = pytest.mark.skipif(not AVX512, reason="this CPU has no AVX-512: there is no 512-bit build")

# What a new process reports: the width shallowcnn applied, Numba's feature string, whether a
# small float32 loop compiled to 512-bit (zmm) instructions, and where the file of choices lies.
PROBE = """
import json, numba, numpy as np
from shallowcnn.kernels import autotune_cache, tiles, vector_width
@numba.njit(fastmath={"contract"})
def axpy(a, x, y):
    for i in range(x.size):
        y[i] += a * x[i]
x = np.ones(100, np.float32)
axpy(np.float32(2), x, x)
print(json.dumps({"applied": vector_width.applied(), "features": numba.config.CPU_FEATURES,
                  "zmm": "zmm" in axpy.inspect_asm(axpy.signatures[0]),
                  "cache_path": str(autotune_cache.cache_path()),
                  "kernel_cache": tiles.conv_tile._cache._cache_path}))
"""


def run_python(code, env_changes, timeout=600):
    """Run ``code`` in a new Python process (this checkout's shallowcnn first on the path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fresh(tune_cache_file):
    """An empty file of choices in tmp_path, nothing of it in memory (conftest.py)."""
    return tune_cache_file


# ---------------------------------------------------------------- the override and the rule

@pytest.mark.parametrize("value, expected", [("", "auto"), (" 512 ", "512"), ("LLVM", "llvm"), ("256", "256")])
def test_the_override_values(monkeypatch, value, expected):
    monkeypatch.setenv(vector_width.ENV, value)
    assert vector_width.requested() == expected


@pytest.mark.parametrize("value", ["384", "512bits", "yes"])
def test_a_bad_override_is_refused_by_name(monkeypatch, capsys, value):
    monkeypatch.setenv(vector_width.ENV, value)
    with pytest.raises(ValueError) as e:
        vector_width.requested()
    assert f"SHALLOWCNN_VECTOR_WIDTH={value!r} is not a vector width: use 256 or 512" in str(e.value)
    assert main(["tune", "--show"]) == 2                 # the command line says so before any work
    err = capsys.readouterr().err
    assert f"shallowcnn tune: error: SHALLOWCNN_VECTOR_WIDTH={value!r}" in err and "Traceback" not in err


def test_512_bits_only_where_they_win_clearly_and_lose_nowhere():
    ms256 = {"train 144": 100.0, "infer 144": 50.0, "infer 60": 10.0}
    assert vector_width.decide(ms256, {"train 144": 80.0, "infer 144": 40.0, "infer 60": 10.0}) == 512
    # 10% less in total, but 8% more on one piece (a CPU family where 512 loses at 60)
    assert vector_width.decide(ms256, {"train 144": 85.0, "infer 144": 44.0, "infer 60": 10.8}) == 256
    # 3% less in total: not clear
    assert vector_width.decide(ms256, {"train 144": 97.0, "infer 144": 48.5, "infer 60": 9.7}) == 256
    assert vector_width.decide(ms256, {"train 144": 95.0, "infer 144": 47.5, "infer 60": 9.5}) == 512   # exactly 5%
    assert vector_width.decide(ms256, ms256) == 256


# ---------------------------------------------------------------- the record in the cache file

def test_the_width_round_trips_and_keeps_the_variant_choices(fresh):
    sig = "tile fused float32 C6 F16 K9 Wo128"
    variant = {"variant": "wino", "cpu_ms": {"f4r2": 2.0, "f4r1": 2.1, "f8r1": 2.5, "wino": 1.5}}
    width = {"bits": 512, "cpu_ms": {"256": {"infer 60": 3.0}, "512": {"infer 60": 2.0}}}
    autotune_cache.save_choice(sig, variant)
    autotune_cache.save_vector_width(width)
    autotune_cache.save_choice("another", {"variant": "f4r1", "cpu_ms": {"f4r1": 1.0}})   # keeps the width
    autotune_cache.forget()                                                             # as a new process
    assert autotune_cache.read_vector_width() == width
    assert autotune_cache.read_choices()[sig] == variant
    saved = json.loads(fresh.read_text())
    assert saved["identity"] == autotune.identity() and saved["vector_width"] == width
    assert set(saved["choices"]) == {sig, "another"}


def test_a_file_without_a_width_reads_as_never_measured(fresh):
    autotune_cache.save_choice("s", {"variant": "f4r1", "cpu_ms": {"f4r1": 1.0}})
    autotune_cache.forget()
    assert autotune_cache.read_vector_width() is None and "vector_width" not in json.loads(fresh.read_text())


@pytest.mark.parametrize("width", [{"bits": 384}, {"bits": True}, 512, {"cpu_ms": {}}])
def test_a_malformed_width_is_no_cache_with_a_warning(fresh, capsys, width):
    fresh.write_text(json.dumps({"identity": autotune.identity(), "choices": {}, "vector_width": width}))
    assert autotune_cache.read_vector_width() is None
    err = capsys.readouterr().err
    assert str(fresh) in err and '"vector_width" is not {"bits": 256 or 512' in err


def test_tune_measures_both_widths_saves_and_prints_the_choice(fresh, monkeypatch, capsys):
    """The measurement's plumbing, with fake timings for the two processes."""
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    monkeypatch.setattr(vector_width, "has_avx512", lambda: True)
    fake = {256: {"train 144": 60.0, "infer 144": 30.0, "infer 60": 6.0},
            512: {"train 144": 48.0, "infer 144": 24.0, "infer 60": 6.1}}
    asked = []

    def time_in_child(bits):                  # the second round is slower at 512: the best counts
        asked.append(bits)
        return {k: v * (1.5 if bits == 512 and len(asked) > 2 else 1) for k, v in fake[bits].items()}

    rec = tune.measure_vector_width(time_in_child)
    assert asked == [256, 512] * tune.WIDTH_ROUNDS and rec["bits"] == 512
    assert autotune_cache.read_vector_width() == {"bits": 512, "cpu_ms": {"256": fake[256], "512": fake[512]}}
    out = capsys.readouterr().out
    assert "train 144" in out and "(1.25x)" in out and "-> 512 bits" in out


def test_tune_measures_nothing_without_avx512_or_under_the_users_features(fresh, monkeypatch, capsys):
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    monkeypatch.setattr(vector_width, "has_avx512", lambda: False)
    assert tune.measure_vector_width(lambda bits: pytest.fail("timed")) is None
    assert "no AVX-512" in capsys.readouterr().out
    monkeypatch.setattr(vector_width, "has_avx512", lambda: True)
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx2")
    assert tune.measure_vector_width(lambda bits: pytest.fail("timed")) is None
    assert "NUMBA_CPU_FEATURES is set" in capsys.readouterr().out
    assert not fresh.exists()


# ---------------------------------------------------------------- what a new process compiles

def _host_features():
    from numba.core.codegen import get_host_cpu_features
    return get_host_cpu_features()


# (saved width, environment, expected: applied bits, feature string's end (None: Numba's default),
#  zmm registers in the small loop's assembly (None: LLVM decides, not checked))
CASES = {
    "saved 512": (512, {}, 512, ",-prefer-256-bit", True),
    "saved 256": (256, {}, 256, ",+prefer-256-bit", False),
    "override llvm": (512, {vector_width.ENV: "llvm"}, None, None, None),    # LLVM's: 512 bits on some CPUs
    "override 256": (512, {vector_width.ENV: "256"}, 256, ",+prefer-256-bit", False),
    "user's features": (512, {"NUMBA_CPU_FEATURES": "USER"}, None, "USER", False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_new_process_compiles_for_the_width_it_is_given(case, tmp_path, monkeypatch):
    saved, env, bits, features_end, zmm = CASES[case]
    if saved == 512 and not AVX512 and case != "user's features":
        pytest.skip("this CPU has no AVX-512")
    # the file of choices the new process will find: beside Numba's cache in NUMBA_CACHE_DIR
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune_cache, "_disk", None)
    path = autotune_cache.cache_path()
    autotune_cache.save_vector_width({"bits": saved, "cpu_ms": {}})
    assert path.is_relative_to(tmp_path) and path.exists()
    user = _host_features() + ",+prefer-256-bit"          # what a user might set: 256-bit vectors
    env = {vector_width.ENV: None, "NUMBA_CPU_FEATURES": None, "NUMBA_CACHE_DIR": str(tmp_path),
           **{k: (user if v == "USER" else v) for k, v in env.items()}}
    r = run_python(PROBE, env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["cache_path"] == str(path)                  # found where the parent wrote it, without tiles
    assert got["kernel_cache"] == str(path.parent)         # ... which is where Numba keeps the kernels
    assert got["applied"]["bits"] == bits
    if features_end is None:
        assert got["features"] is None                     # Numba's own: the host's features
    elif features_end == "USER":
        assert got["features"] == user                     # the user's, untouched
    else:
        assert got["features"] == _host_features() + features_end
    if AVX512 and zmm is not None:
        assert got["zmm"] == zmm


@needs_avx512
def test_too_late_is_said_and_changes_nothing(tmp_path):
    """A Numba function defined before the kernels are imported fixes the features already."""
    code = "import numba\n@numba.njit\ndef f(x):\n    return x\n" + PROBE
    r = run_python(code, {vector_width.ENV: "512", "NUMBA_CPU_FEATURES": None, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["applied"]["bits"] is None and got["features"] is None    # Numba's own (the host's)
    assert "cannot take effect: a Numba function was defined before" in r.stderr


# float32 kernel tests, each against the reference: the default tile variant (dense, fused max
# pool and the scan's block max), the few-filter conv1, the Winograd conv2 and conv1, the sparse
# backward and the whole feature stack. Every kernel, shape and dtype costs Numba a compilation
# here (about 40 s in all on 2 busy cores; the other variants' tests took 35 s more).
KERNEL_TESTS_AT_512 = [
    "test_kernels_cpu.py::test_every_tile_variant_matches_the_reference[f4r2-float32]",
    "test_kernels_cpu.py::test_every_small_f_variant_matches_the_reference[g3-float32]",
    "test_kernels_cpu.py::test_sparse_backward_equals_dense_textbook[shape2-float32]",
    "test_kernels_cpu.py::test_feature_stack_equals_layer_by_layer_reference[1-6-16-9-9-24-23-float32]",
    "test_winograd.py::test_wino_matches_the_reference[shape3-float32]",
    "test_winograd.py::test_wino_dense_forward_matches_the_reference[shape1-float32-True]",
]


@needs_avx512
def test_the_kernels_match_the_reference_with_512_bit_vectors():
    """:data:`KERNEL_TESTS_AT_512` in a process whose kernels are built for 512-bit vectors.
    (Numba's cache keeps these builds beside the others: its key includes the features.)"""
    tests = [str(ROOT / "tests" / t) for t in KERNEL_TESTS_AT_512]
    code = ("import sys, pytest\n"
            "from shallowcnn.kernels import tiles, vector_width\n"
            "assert vector_width.applied()['bits'] == 512, vector_width.applied()\n"
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *{tests!r}]))\n")
    r = run_python(code, {vector_width.ENV: "512", "NUMBA_CPU_FEATURES": None}, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"{len(tests)} passed" in r.stdout
