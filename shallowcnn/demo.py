"""``shallowcnn demo``: the whole job on the built-in phantom, in one folder.

    phantom/         synthetic mammograms in the INbreast layout (no patient data)
    patches.npz      144 x 144 patches split by patient, augmented and balanced
    patches_*.png    example patches and the four augmentations
    run/             model.npz, history.csv, curves.png, metrics.json, roc.png, mistakes.png
    mine/            model.npz after hard-negative mining (mining.py) with its operating
                     point, mining.json (the validation FROC of every round)
    scan/            a whole phantom mammogram scanned: heatmap overlay, detections
    report.md        what was done, the numbers, and links to every figure

It uses fewer epochs than the paper's 100 so that it finishes in minutes on a
laptop; the report says so.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .data.patches import make_patches
from .data.phantom import DEFAULT_CASES, generate_phantom, summarise
from .evaluate import evaluate
from .mining import DEFAULT_ROUNDS, ROUND_EPOCHS, MiningConfig, mine
from .model import ShallowCNN
from .operating_point import FALLBACK_NMS_PX
from .scan_files import scan_paths
from .storage import atomic_write_text
from .train import TrainConfig, train_run
from .web.bundled import BUNDLED_MODEL_PATH, NEVER_SAW_A_MAMMOGRAM

DEMO_EPOCHS = 12
# The bundled model is the demo's pipeline on a bigger phantom, trained longer: the demo must
# finish in minutes, the model people scan with should be the best the phantom can teach
# (benchmarks/README.md, bench_froc.py: 60 patients find more of the unseen clusters at 1
# false positive per image than the demo's 20, and 100 more than 60).
BUNDLE_CASES = 100
BUNDLE_EPOCHS = 20


def _relative(path: Path, root: Path) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


def _scan_test_images(model, store, phantom_images, out: Path, verbose: bool):
    """Scan the whole mammograms of the test patients (never seen in training)."""
    test_patients = set(np.unique(store.patient[store.indices("test")]).tolist())
    paths = [im.dicom_path for im in phantom_images if im.patient in test_patients] or \
        [im.dicom_path for im in phantom_images[:4]]
    return scan_paths(model, paths, out, verbose=verbose)     # at the model's operating point


def run_demo(out="shallowcnn_demo", cases=None, epochs=DEMO_EPOCHS, seed=0, backend="auto",
             scan=True, verbose=True, size="demo", mine_rounds=DEFAULT_ROUNDS) -> dict:
    """Run phantom -> patches -> train -> mine -> evaluate -> scan into ``out``; returns the
    numbers. ``mine_rounds`` 0 skips hard-negative mining."""
    from .plots import plot_store_figures          # matplotlib loads only when figures are drawn

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases = DEFAULT_CASES if cases is None else cases
    timings, t0 = {}, time.perf_counter()

    def step(name):
        if verbose:
            print(f"\n== {name} ==", flush=True)
        return time.perf_counter()

    t = step(f"1/6 phantom: {cases} synthetic patients")
    images = generate_phantom(out / "phantom", cases=cases, seed=seed, size=size, overwrite=True,
                              verbose=verbose)
    phantom_summary = summarise(images)
    if verbose:
        print(phantom_summary)
    timings["phantom"] = time.perf_counter() - t

    t = step("2/6 patches: 144 x 144, split by patient, augmented x5, balanced")
    store = make_patches(out / "phantom", out / "patches.npz", seed=seed, verbose=verbose)
    plot_store_figures(store, out / "patches.npz")
    timings["patches"] = time.perf_counter() - t

    t = step(f"3/6 train: {epochs} epochs (the paper trains 100)")
    config = TrainConfig(epochs=epochs, seed=seed, backend=backend)
    run_dir = out / "run"
    if (run_dir / "checkpoint.npz").exists():
        (run_dir / "checkpoint.npz").unlink()                      # a demo always starts afresh
    trainer = train_run(store, run_dir, config, verbose=verbose)
    timings["train"] = time.perf_counter() - t
    model_path, mining = run_dir / "model.npz", None
    if mine_rounds:
        t = step(f"4/6 mine hard negatives: up to {mine_rounds} rounds on the training patients' mammograms")
        mining = mine(store, out / "phantom", ShallowCNN.load(model_path, backend=backend), out / "mine",
                      config, MiningConfig(rounds=mine_rounds, round_epochs=min(ROUND_EPOCHS, epochs)),
                      verbose=verbose)
        model_path = out / "mine" / "model.npz"
        timings["mine"] = time.perf_counter() - t

    t = step("5/6 evaluate on the test split (patients never seen in training)")
    best_model = ShallowCNN.load(model_path, backend=backend)   # the kept epoch (after mining)
    metrics = evaluate(best_model, store, "test", run_dir, verbose=verbose)
    timings["evaluate"] = time.perf_counter() - t

    scan_result = None
    if scan:
        t = step("6/6 scan the whole mammograms of the test patients")
        scan_result = _scan_test_images(best_model, store, images, out / "scan", verbose)
        timings["scan"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    results = {"phantom": phantom_summary, "patches": store.counts(),
               "config": asdict(config), "backend": trainer.model.backend,
               "best_epoch": trainer.best["epoch"], "best_val_accuracy": trainer.best["val_accuracy"],
               "test_metrics": metrics, "scan": scan_result, "seconds": timings,
               "mining": mining, "model": str(model_path.relative_to(out))}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    atomic_write_text(out / "report.md", render_report(out, results))
    print(f"\ndone in {timings['total']:.0f} s: test accuracy {metrics['accuracy']:.4f}, "
          f"ROC AUC {metrics['roc_auc']:.4f}; report: {out / 'report.md'}")
    return results


def render_report(out: Path, r: dict) -> str:
    """report.md: the numbers, the settings, and every figure."""
    m = r["test_metrics"]
    cm = m["confusion_matrix"]
    figures = sorted(p for p in out.rglob("*.png") if "phantom" not in p.parts)
    lines = [
        "# shallowcnn demo report", "",
        "Everything here was made from synthetic mammograms (the built-in phantom), not patient data.", "",
        f"- Phantom: {r['phantom']}",
        f"- Training: {r['config']['epochs']} epochs (the paper trains 100; this is a demo), batch "
        f"{r['config']['batch_size']}, Adam lr {r['config']['lr']}, dropout {r['config']['p_drop']}, "
        f"seed {r['config']['seed']}, backend {r['backend']}",
        f"- Best epoch (highest validation accuracy, kept as `run/model.npz`): {r['best_epoch']} "
        f"(validation accuracy {r['best_val_accuracy']:.4f})", "",
        "## Test split (patients never seen in training)", "",
    ] + _froc_lines(m.get("froc"), r.get("mining")) + [
        "| accuracy | sensitivity | specificity | precision | F1 | ROC AUC |",
        "|---|---|---|---|---|---|",
        f"| {m['accuracy']:.4f} | {m['sensitivity']:.4f} | {m['specificity']:.4f} | {m['precision']:.4f} "
        f"| {m['f1']:.4f} | {m['roc_auc']:.4f} |", "",
        f"Confusion matrix at 0.5 ({m['n']} patches): TN {cm['tn']}, FP {cm['fp']}, FN {cm['fn']}, TP {cm['tp']}.", "",
    ]
    scan = r.get("scan")
    if scan:
        lines += ["## Whole mammograms of the test patients", "",
                  f"Every 144 x 144 window at stride {scan['stride']} px, fully convolutional "
                  f"(backend {scan['backend']}); a detection is a local maximum with p >= {scan['threshold']:.4g}.", ""]
        froc = scan.get("froc")
        if froc:
            lines += [f"Over {froc['images']} images with {froc['clusters']} true clusters: sensitivity "
                      f"{froc['sensitivity']:.3f} at {froc['fp_per_image']:.2f} false positives per image "
                      f"(FROC curve: `scan/froc.png`).", ""]
            located = froc.get("localization") or {}
            if located.get("hits"):
                lines += [f"Localization: the {located['hits']} detection(s) that hit a cluster point a median "
                          f"{located['median_mm']:.2f} mm (90th percentile {located['p90_mm']:.2f} mm) from its "
                          f"centre. A detection's position is where the network saw the finding: the centre of "
                          f"the 17 x 17 receptive field of the conv2 maximum that adds most to its window's "
                          f"logit (`evidence` in each `scan/*.detections.json`).", ""]
        lines += ["| image | true clusters | hit | detections | seconds |", "|---|---|---|---|---|"]
        for im in scan["images"]:
            lines.append(f"| {Path(im['image']).name} | {im.get('clusters', '-')} | {im.get('hit', '-')} "
                         f"| {im['detections']} | {im['seconds']:.2f} |")
        lines.append("")
    lines += ["## Time", ""] + [f"- {k}: {v:.1f} s" for k, v in r["seconds"].items()] + ["", "## Figures", ""]
    for path in figures:
        rel = _relative(path, out)
        lines += [f"### {rel}", "", f"![{rel}]({rel})", ""]
    return "\n".join(lines)


def _froc_lines(froc: dict | None, mining: dict | None) -> list:
    """The whole-image headline: clusters found per false positives per image, and the
    operating point chosen on the validation patients (markdown lines)."""
    lines = []
    if froc:
        rates = froc["sensitivity_at_fp_per_image"]
        lines += [f"Whole mammograms of the test patients ({froc['images']} images, {froc['clusters']} clusters; "
                  f"FROC: `run/froc_test.png`):", "",
                  "| false positives per image | " + " | ".join(rates) + " |",
                  "|---|" + "---|" * len(rates),
                  "| clusters found (sensitivity) | " + " | ".join(f"{v:.2f}" for v in rates.values()) + " |", "",
                  f"At the operating point p >= {froc['threshold']:.4f}: sensitivity "
                  f"{froc['operating_point']['sensitivity']:.2f} at {froc['operating_point']['fp_per_image']:.2f} "
                  f"false positives per image.", ""]
    if mining:
        point = mining["operating_point"]
        rounds = ", ".join(f"round {row['round']}: {row['val_sensitivity_at_fp_per_image']['1']:.2f}"
                           for row in mining["rounds"])
        lines += [f"Hard-negative mining (`mine/mining.json`): validation sensitivity at 1 FP/image {rounds}; "
                  f"kept round {mining['best_round']}. Operating point chosen on the validation patients' "
                  f"mammograms for {point['target_fp_per_image']:g} false positive per image: p >= "
                  f"{point['threshold']:.4f} with NMS at {point.get('nms_px', FALLBACK_NMS_PX):g} px "
                  f"(there: sensitivity {point['sensitivity']:.2f} at "
                  f"{point['fp_per_image']:.2f} FP/image).", ""]
    return lines + ["Per 1 cm^2 patch:", ""] if lines else lines



def train_bundled_model(out=BUNDLED_MODEL_PATH, epochs: int | None = None, seed: int = 0,
                        backend: str = "auto", verbose: bool = True, mine_rounds: int = DEFAULT_ROUNDS,
                        keep=None, cases: int | None = None) -> Path:
    """Run the demo pipeline (hard-negative mining included) and keep its best model.

    cases, epochs  phantom patients and training epochs (default :data:`BUNDLE_CASES`,
                   :data:`BUNDLE_EPOCHS`: more than the demo's)

    The model's metadata gains ``training`` (what it was trained on, epochs, best epoch,
    the test-patient metrics per 1 cm^2 patch, the mining rounds, and ``whole_image``: the
    scan of the test patients' whole mammograms -- clusters found, false positives per
    image, localization error), the mined model's ``operating_point`` and
    ``bundled``/``warning``, which the server shows.

    keep  a folder (must not exist yet, or be empty) to run the demo in and leave behind,
          with its report and figures; None: a temporary folder, deleted afterwards
    """
    epochs = BUNDLE_EPOCHS if epochs is None else epochs
    cases = BUNDLE_CASES if cases is None else cases
    if keep is not None:
        keep = Path(keep)
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            raise FileExistsError(f"{keep}: the demo folder to keep must be new or empty")
        return _bundle_from_demo(keep, out, cases, epochs, seed, backend, verbose, mine_rounds)
    with tempfile.TemporaryDirectory(prefix="shallowcnn-bundled-") as work:
        return _bundle_from_demo(Path(work) / "demo", out, cases, epochs, seed, backend, verbose, mine_rounds)


def _bundle_from_demo(demo_dir: Path, out, cases, epochs, seed, backend, verbose, mine_rounds) -> Path:
    """Run the demo into ``demo_dir`` and save its kept model (after mining) to ``out``."""
    results = run_demo(demo_dir, cases=cases, epochs=epochs, seed=seed, backend=backend, scan=True,
                       verbose=verbose, mine_rounds=mine_rounds)
    model = ShallowCNN.load(demo_dir / results["model"])    # after hard-negative mining
    metrics = {k: v for k, v in results["test_metrics"].items() if isinstance(v, (int, float))}
    training = {"data": "shallowcnn phantom (synthetic mammograms, 0.07 mm, INbreast layout), "
                        f"demo size, {cases} patients, patches split by patient",
                "phantom": results["phantom"], "patches": results["patches"],
                "epochs": epochs, "best_epoch": results["best_epoch"],
                "best_val_accuracy": results["best_val_accuracy"], "seed": seed,
                "test_metrics": metrics, "whole_image": whole_image_figures(results.get("scan")),
                "made_by": "shallowcnn bundle"}
    if results.get("mining"):
        training["mining"] = {k: results["mining"][k] for k in ("config", "rounds", "best_round")}
    extra = {"operating_point": model.metadata["operating_point"]} if "operating_point" in model.metadata else {}
    return model.save(out, metadata={"bundled": True, "warning": NEVER_SAW_A_MAMMOGRAM,
                                     "training": training, **extra})


def whole_image_figures(scan: dict | None) -> dict | None:
    """What the page shows per whole mammogram, from :func:`shallowcnn.scan_files.scan_paths`'s
    summary: None when no annotated image was scanned."""
    froc = (scan or {}).get("froc")
    if not froc:
        return None
    return {"images": froc["images"], "clusters": froc["clusters"], "threshold": scan["threshold"],
            "clusters_found": froc["sensitivity"], "fp_per_image": froc["fp_per_image"],
            "localization": froc.get("localization"),
            "definition": "test patients' whole mammograms scanned at stride 16; a cluster is found when "
                          "a detection lies inside its outline, within 1 mm of the convex hull of its "
                          "calcifications or within 5 mm of its centre"}
