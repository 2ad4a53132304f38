"""`shallowcnn demo` end to end, on a very small phantom."""
import json

from shallowcnn.cli import main


def test_demo_writes_every_output(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--cases", "6", "--size", "480x560", "--epochs", "1",
                 "--mine-rounds", "1", "--backend", "numba", "--quiet"]) == 0
    for name in ("patches.npz", "run/model.npz", "mine/model.npz", "mine/mining.json", "run/froc_test.json",
                 "run/froc_test.png", "run/curves.png", "run/metrics.json", "run/roc.png",
                 "run/history.csv", "scan/froc.json", "scan/scan_summary.json", "report.md", "results.json"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert results["test_metrics"]["accuracy"] == metrics["accuracy"]
    report = (out / "report.md").read_text()
    assert f"{metrics['accuracy']:.4f}" in report and "1 epochs (the paper trains 100" in report
    for png in out.rglob("*.png"):                                 # every figure is linked from the report
        if "phantom" not in png.parts:
            assert png.relative_to(out).as_posix() in report
    assert "test accuracy" in capsys.readouterr().out
    # the whole-image headline and the operating point chosen on the validation patients
    froc = results["test_metrics"]["froc"]
    assert set(froc["sensitivity_at_fp_per_image"]) == {"0.5", "1", "2", "4"}
    assert "| clusters found (sensitivity) |" in report and "Operating point chosen on the validation" in report
    assert froc["threshold"] == results["mining"]["operating_point"]["threshold"]
    assert json.loads((out / "scan" / "scan_summary.json").read_text())["threshold"] == froc["threshold"]
    # evaluate's headline scans the same test patients at the same operating point as the scan step:
    # the localization errors of its hits are the scan's (two paths through the library)
    assert froc["localization"] == results["scan"]["froc"]["localization"]
    written = json.loads((out / "run" / "froc_test.json").read_text())["localization"]
    assert written["hits"] == froc["localization"]["hits"]
    # the localization error of the hits, in froc.json, the scan's summary and the report
    froc = json.loads((out / "scan" / "froc.json").read_text())
    located = results["scan"]["froc"]["localization"]
    assert {k: froc["localization"][k] for k in ("hits", "median_mm", "p90_mm")} == located
    if located["hits"]:
        assert f"point a median {located['median_mm']:.2f} mm (90th percentile {located['p90_mm']:.2f} mm)" in report


def test_report_gives_the_localization_error_of_the_hits(tmp_path):
    from shallowcnn.demo import render_report

    metrics = {k: 0.5 for k in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")}
    metrics.update(n=4, confusion_matrix={"tn": 1, "fp": 1, "fn": 1, "tp": 1})
    froc = {"images": 3, "clusters": 4, "sensitivity": 0.75, "fp_per_image": 1.0,
            "localization": {"hits": 5, "median_mm": 1.234, "p90_mm": 2.5}}
    results = {"phantom": "p", "config": {"epochs": 1, "batch_size": 64, "lr": 0.001, "p_drop": 0.2, "seed": 0},
               "backend": "numpy", "best_epoch": 1, "best_val_accuracy": 0.5, "test_metrics": metrics,
               "scan": {"stride": 16, "backend": "numpy", "threshold": 0.5, "froc": froc, "images": []},
               "seconds": {"total": 1.0}}
    report = render_report(tmp_path, results)
    assert "the 5 detection(s) that hit a cluster point a median 1.23 mm (90th percentile 2.50 mm)" in report


def test_bundle_keeps_the_demo_folder_and_the_mined_models_operating_point(tmp_path, monkeypatch, capsys):
    """``shallowcnn bundle --keep DIR``: the demo runs in DIR and stays there; the bundled model is
    the demo's kept (mined) model with its operating point, mining record and whole-image figures.
    The demo itself is replaced by a stand-in that writes what run_demo writes (a real one trains)."""
    import shallowcnn.demo as demo
    from shallowcnn.model import ShallowCNN

    calls = []
    froc = {"images": 2, "clusters": 3, "sensitivity": 2 / 3, "fp_per_image": 0.5,
            "localization": {"hits": 2, "median_mm": 1.0, "p90_mm": 2.0}}

    def fake_run_demo(out, cases, epochs, seed, backend, scan, verbose, mine_rounds):
        calls.append({"out": out, "cases": cases, "epochs": epochs, "mine_rounds": mine_rounds, "scan": scan})
        ShallowCNN(backend="numpy", seed=4).save(out / "mine" / "model.npz", metadata={
            "operating_point": {"threshold": 0.375}})
        (out / "report.md").write_text("# report\n")
        mining = {"config": {"rounds": mine_rounds}, "rounds": [{"round": 0}], "best_round": 0,
                  "operating_point": {"threshold": 0.375}}
        return {"phantom": "p", "patches": {}, "best_epoch": 1, "best_val_accuracy": 0.5,
                "test_metrics": {"accuracy": 0.75, "froc": None}, "scan": {"threshold": 0.375, "froc": froc},
                "mining": mining, "model": "mine/model.npz"}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    keep, out = tmp_path / "kept", tmp_path / "bundled.npz"
    assert main(["bundle", "-o", str(out), "--keep", str(keep), "--mine-rounds", "2", "--cases", "7"]) == 0
    assert calls == [{"out": keep, "cases": 7, "epochs": demo.BUNDLE_EPOCHS, "mine_rounds": 2, "scan": True}]
    assert (keep / "report.md").exists() and (keep / "mine" / "model.npz").exists()
    meta = ShallowCNN.load(out, backend="numpy").metadata
    assert meta["operating_point"] == {"threshold": 0.375} and meta["bundled"] is True
    assert meta["training"]["mining"]["config"] == {"rounds": 2}
    assert meta["training"]["whole_image"]["clusters_found"] == 2 / 3
    assert meta["training"]["test_metrics"] == {"accuracy": 0.75}
    assert str(keep) in capsys.readouterr().out
    # a folder that already holds something is refused before any work, naming it
    assert main(["bundle", "-o", str(tmp_path / "other.npz"), "--keep", str(keep)]) == 2
    assert str(keep) in capsys.readouterr().err and len(calls) == 1 and not (tmp_path / "other.npz").exists()
