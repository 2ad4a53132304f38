"""`shallowcnn train` and `shallowcnn evaluate` on the tiny phantom's patch store."""
import json

import numpy as np
import pytest

from shallowcnn.cli import build_parser, main
from shallowcnn.data.patches import open_patches
from shallowcnn.evaluate import evaluate
from shallowcnn.model import ShallowCNN


def test_train_then_evaluate(small_store, tmp_path, capsys):
    path, store = small_store
    run = tmp_path / "run"
    assert main(["train", str(path), "-o", str(run), "--epochs", "2", "--batch-size", "16",
                 "--backend", "numba", "--quiet"]) == 0
    for name in ("model.npz", "checkpoint.npz", "history.csv", "curves.png", "config.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert main(["evaluate", str(run / "model.npz"), str(path), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "sensitivity" in out and "confusion matrix" in out
    metrics = json.loads((run / "metrics.json").read_text())
    # the numbers in metrics.json are those of the model on the test patches
    model = ShallowCNN.load(run / "model.npz")
    idx = store.indices("test")
    pred = model.predict(store.patches[idx][:, None])
    assert metrics["accuracy"] == pytest.approx(np.mean(pred == store.labels[idx]))
    assert metrics["confusion_matrix"]["tp"] == int(np.sum((pred == 1) & (store.labels[idx] == 1)))
    assert (run / "roc.png").exists() and (run / "mistakes.png").exists()
    # a second train into the same folder refuses instead of overwriting
    assert main(["train", str(path), "-o", str(run), "--epochs", "1", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_from_the_command_line(small_store, tmp_path):
    path, _ = small_store
    common = ["--batch-size", "16", "--backend", "numba", "--quiet"]
    assert main(["train", str(path), "-o", str(tmp_path / "a"), "--epochs", "2"] + common) == 0
    assert main(["train", str(path), "-o", str(tmp_path / "b"), "--epochs", "1"] + common) == 0
    assert main(["train", str(path), "-o", str(tmp_path / "b"), "--epochs", "2", "--resume"] + common) == 0
    a, b = ShallowCNN.load(tmp_path / "a" / "model.npz"), ShallowCNN.load(tmp_path / "b" / "model.npz")
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_evaluate_on_a_png_folder(small_store, tmp_path):
    from PIL import Image
    _, store = small_store
    for label in (0, 1):
        (tmp_path / "png" / str(label)).mkdir(parents=True)
    for i in range(6):
        Image.fromarray(store.patches[i]).save(tmp_path / "png" / str(int(store.labels[i])) / f"p{i}_{i}.png")
    model = ShallowCNN(seed=1)
    metrics = evaluate(model, open_patches(tmp_path / "png"), verbose=False)
    assert metrics["n"] == 6 and metrics["split"] == "test"      # a PNG folder is all test
    probs = model.predict_proba(store.patches[:6][:, None])
    assert metrics["accuracy"] == pytest.approx(np.mean((probs >= 0.5) == (store.labels[:6] == 1)))


def test_bad_paths_give_clear_errors(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope.npz"), str(tmp_path / "p.npz")]) == 2
    assert "nope.npz: no such file" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "run"), "--quiet"]) == 2
    assert "missing.npz: no such file" in capsys.readouterr().err


def test_every_option_is_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, cmd in sub.choices.items():
        for action in cmd._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_the_help_listing_needs_no_command_module_and_agrees_with_them():
    """`shallowcnn --help` lists every command from cli.COMMANDS without importing its module;
    those one-line helps are the modules' own, and a command's line builds only its parser."""
    from shallowcnn.cli import COMMANDS, chosen_command

    full = next(a for a in build_parser()._actions if a.dest == "command")
    listed = {c.dest: c.help for c in full._choices_actions}
    assert listed == {name: help_line for name, (_, help_line) in COMMANDS.items()}
    only_scan = next(a for a in build_parser("scan")._actions if a.dest == "command")
    assert {c.dest: c.help for c in only_scan._choices_actions} == listed
    assert "--stride" in only_scan.choices["scan"].format_help()
    assert not only_scan.choices["train"]._actions[1:]           # a stub: its name and help only
    assert chosen_command(["--quiet-not", "scan", "m.npz"]) == "scan" and chosen_command(["-h"]) is None


def test_running_a_command_imports_no_other_command_module():
    import subprocess
    import sys
    code = ("import sys, shallowcnn.cli as c\n"
            "try:\n    c.main(['phantom', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('shallowcnn.commands.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "['shallowcnn.commands.common', 'shallowcnn.commands.phantom']"
