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
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .data.patches import make_patches
from .data.phantom import DEFAULT_CASES, generate_phantom, parse_size, summarise
from .evaluate import evaluate
from .kernels import BackendUnavailable
from .mining import DEFAULT_ROUNDS, ROUND_EPOCHS, MiningConfig, mine
from .model import ShallowCNN
from .operating_point import model_threshold
from .options import non_negative_int, positive_int, refusing
from .scan_command import scan_paths
from .storage import atomic_write_text
from .train import TrainConfig, TrainingDiverged, train_run

DEMO_EPOCHS = 12


def _relative(path: Path, root: Path) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


def _scan_test_images(model, store, phantom_images, out: Path, verbose: bool):
    """Scan the whole mammograms of the test patients (never seen in training)."""
    test_patients = set(np.unique(store.patient[store.indices("test")]).tolist())
    paths = [im.dicom_path for im in phantom_images if im.patient in test_patients] or \
        [im.dicom_path for im in phantom_images[:4]]
    return scan_paths(model, paths, out, threshold=model_threshold(model), verbose=verbose)


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
                  f"{point['threshold']:.4f} (there: sensitivity {point['sensitivity']:.2f} at "
                  f"{point['fp_per_image']:.2f} FP/image).", ""]
    return lines + ["Per 1 cm^2 patch:", ""] if lines else lines


def add_command(subparsers):
    p = subparsers.add_parser(
        "demo", help="the whole job on the built-in phantom: phantom, patches, train, evaluate, scan",
        description="Generate synthetic mammograms, cut and split patches, train the network, "
                    "evaluate it on the test patients and scan a whole mammogram, all into one "
                    "folder with a report.md that links every figure.")
    p.add_argument("-o", "--output", default="shallowcnn_demo", help="output folder (default ./shallowcnn_demo)")
    p.add_argument("--cases", type=positive_int, default=None, help="phantom patients (default: the phantom's default)")
    p.add_argument("--epochs", type=positive_int, default=DEMO_EPOCHS, help=f"training epochs (default {DEMO_EPOCHS})")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for everything, >= 0 (default 0)")
    p.add_argument("--backend", default="auto", choices=("numpy", "numba", "cuda", "auto"),
                   help="numpy, numba, cuda or auto (default auto)")
    p.add_argument("--size", type=refusing(parse_size), default="demo",
                   help="phantom image size: WIDTHxHEIGHT, demo or full (default demo)")
    p.add_argument("--mine-rounds", type=non_negative_int, default=DEFAULT_ROUNDS,
                   help=f"hard-negative mining rounds, 0 for none (default {DEFAULT_ROUNDS})")
    p.add_argument("--no-scan", action="store_true", help="skip the whole-mammogram scan")
    p.add_argument("--quiet", action="store_true", help="less output")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    try:
        run_demo(args.output, args.cases, args.epochs, args.seed, args.backend, not args.no_scan, not args.quiet,
                 args.size, args.mine_rounds)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileExistsError, OSError, BackendUnavailable) as e:
        print(f"shallowcnn demo: error: {e}", file=sys.stderr)
        return 2
    return 0
