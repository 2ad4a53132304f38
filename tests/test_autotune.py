"""The autotuner (kernels/autotune.py): pins, timing, the cache file, `shallowcnn tune`.

The kernels' variants are tested against the reference in test_kernels_cpu.py; here
fake "kernels" with known costs check that the fastest is chosen and remembered.
"""
from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("numba")

from shallowcnn.kernels import autotune, autotune_cache  # noqa: E402


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """No pin, an empty cache file in tmp_path and no choices in memory."""
    monkeypatch.delenv(autotune.ENV, raising=False)
    path = tmp_path / "choices.json"
    monkeypatch.setattr(autotune_cache, "cache_path", lambda: path)
    autotune.forget_choices()
    return path


def _spin(seconds):
    t = time.process_time()
    while time.process_time() - t < seconds:
        pass


def test_pins(monkeypatch):
    monkeypatch.setenv(autotune.ENV, "default")
    assert autotune.pins() == {fam: names[0] for fam, names in autotune.FAMILIES.items()}
    monkeypatch.setenv(autotune.ENV, "f8r1, g2")        # a tile variant pins the fused kernel too
    assert autotune.pins() == {"tile": "f8r1", "fused": "f8r1", "blockmax": "f8r1", "small_f": "g2"}
    monkeypatch.setenv(autotune.ENV, "wino")             # Winograd: the fused conv2, block max and conv1
    assert autotune.pins() == {"fused": "wino", "blockmax": "wino", "small_f": "wino"}
    monkeypatch.setenv(autotune.ENV, "wino2d")           # 2-D Winograd: the fused conv2, conv1, both in one loop
    assert autotune.pins() == {"fused": "wino2d", "small_f": "wino2d", "stack": "wino2d"}
    monkeypatch.setenv(autotune.ENV, "wino2d,separate")  # ... but as two kernels
    assert autotune.pins() == {"fused": "wino2d", "small_f": "wino2d", "stack": "separate"}
    monkeypatch.setenv(autotune.ENV, "f4r1,zz")
    with pytest.raises(ValueError, match="unknown variant 'zz'"):
        autotune.pins()


def test_a_pin_wins_and_nothing_is_timed(monkeypatch):
    monkeypatch.setenv(autotune.ENV, "f4r1")
    autotune.forget_choices()
    assert autotune.choose("tile", "sig", lambda v: pytest.fail("timed a pinned family")) == "f4r1"


def test_the_fastest_is_chosen_saved_and_reused(fresh):
    cost = {"f4r2": 0.004, "f4r1": 0.012, "f8r1": 0.001}
    calls = []

    def run(v):
        calls.append(v)
        _spin(cost[v])

    assert autotune.choose("tile", "tile fused float32 C6 F16 K9 Wo44", run) == "f8r1"
    assert set(calls) == set(cost) and len(calls) >= 3 * (1 + autotune.REPS)
    saved = json.loads(fresh.read_text())
    assert saved["identity"] == autotune.identity()
    rec = saved["choices"]["tile fused float32 C6 F16 K9 Wo44"]
    assert rec["variant"] == "f8r1" and set(rec["cpu_ms"]) == set(cost)
    # a new process (empty memory) reads the file and times nothing
    autotune.forget_choices()
    assert autotune.choose("tile", "tile fused float32 C6 F16 K9 Wo44", lambda v: pytest.fail("timed")) == "f8r1"
    assert autotune.chosen()["tile fused float32 C6 F16 K9 Wo44"]["how"] == "cached"


def test_a_choice_made_among_other_variants_is_made_again(fresh):
    """A cache file written before a variant existed (here: before "wino") does not
    keep the new variant from being timed."""
    sig = "tile fused float32 C6 F16 K9 Wo128"
    old = {"variant": "f4r2", "cpu_ms": {"f4r2": 0.8, "f4r1": 0.9, "f8r1": 1.2}}
    fresh.write_text(json.dumps({"identity": autotune.identity(), "choices": {sig: old}}))
    assert autotune.choose("fused", sig, lambda v: _spin(0.001 if v == "wino" else 0.003)) == "wino"
    assert set(json.loads(fresh.read_text())["choices"][sig]["cpu_ms"]) == set(autotune.FAMILIES["fused"])


def test_a_file_for_another_machine_or_version_is_ignored(fresh):
    fresh.write_text(json.dumps({"identity": {"cpu": "another"}, "choices": {"s": {"variant": "f4r1"}}}))
    assert autotune.choose("tile", "s", lambda v: _spin(0.001 if v == "f8r1" else 0.003)) == "f8r1"


def test_a_broken_file_is_ignored(fresh):
    fresh.write_text("{not json")
    assert autotune.choose("small_f", "s", lambda v: _spin(0.001 if v == "g2" else 0.003)) == "g2"


def test_context_names_the_machine():
    ctx = autotune.context()
    assert ctx["cpu"] and ctx["llvm_target"] and ctx["numba_threads"] >= 1
    assert isinstance(ctx["isa"], list) and isinstance(ctx["variants"], dict)


def test_cli_tune_times_saves_and_shows(fresh, capsys):
    from shallowcnn.cli import main
    # the width and the threading layer: test_vector_width.py, test_threading_layer.py
    assert main(["tune", "--size", "30", "--no-scan", "--no-width", "--no-threading"]) == 0
    out = capsys.readouterr().out
    assert "small_f dense float32 C1 F6 K9 Wo22" in out and "tile fused float32 C6 F16 K9 Wo14" in out
    assert "stack F16 float32 C1 F6 K9 Wo22" in out        # both layers in one loop, or two kernels
    assert set(json.loads(fresh.read_text())["choices"]) == {
        "small_f dense float32 C1 F6 K9 Wo22", "tile fused float32 C6 F16 K9 Wo14", "stack F16 float32 C1 F6 K9 Wo22"}
    autotune.forget_choices()
    assert main(["tune", "--show"]) == 0
    assert "tile fused float32 C6 F16 K9 Wo14" in capsys.readouterr().out


def test_cli_tune_refuses_a_tiny_size(capsys):
    from shallowcnn.cli import main
    with pytest.raises(SystemExit) as stop:           # refused when the command line is read
        main(["tune", "--size", "10"])
    assert stop.value.code == 2
    assert "argument --size: must be a whole number in 17..512" in capsys.readouterr().err
