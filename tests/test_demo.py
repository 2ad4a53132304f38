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
