"""What a search writes into its folder, and reads back to resume.

OUT/
  search.json        the settings (seed, space, epochs, backend, which store); a
                     second run must match them to resume
  trials.json        every finished trial: its row and per-epoch history (the truth)
  trials.csv         the same rows as a table, one column per hyperparameter
  models/0007.npz    the best epoch's weights of each trial that finished "ok"
  best/model.npz     a copy of the best trial's model (what evaluate and scan load)
  search.png         validation accuracy against parameter count, coloured by learning rate
  report.md          settings, counts, the best trials next to the paper's choice

Every file is rewritten whole and atomically (shallowcnn.storage) after each
trial, so an interrupted search leaves a consistent folder.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..model import ShallowCNN
from ..storage import StoreError, atomic_write_bytes, atomic_write_text
from .space import PAPER_CHOICE, PARAMETERS, SearchSpace

COLUMNS = ("trial", *PARAMETERS, "seed", "n_params", "epochs", "best_epoch", "val_accuracy",
           "val_loss", "seconds", "status", "message", "worker", "backend")
FINAL_STATUSES = ("ok", "diverged", "failed")   # anything else ("lost") is run again on resume


def model_path(out, trial_id: int) -> Path:
    return Path(out) / "models" / f"{trial_id:04d}.npz"


def read_settings(out) -> dict | None:
    path = Path(out) / "search.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise StoreError(f"{path}: not valid JSON ({e}); remove it or choose another folder") from None


def check_same_settings(out, settings: dict) -> None:
    """Refuse to resume a search made with other settings (their trials would not compare)."""
    old = read_settings(out)
    if old is None:
        return
    for key in ("seed", "space", "epochs", "backend", "store_fingerprint"):
        if old.get(key) != settings[key]:
            raise StoreError(f"{Path(out) / 'search.json'}: this folder holds a search with {key}="
                             f"{json.dumps(old.get(key))}, not {json.dumps(settings[key])}; "
                             f"resume with the same settings or choose another folder")


# The fields a recorded row needs: every row, and those of an "ok" row (ranked, reported).
ROW_FIELDS = ("trial", "status", "seconds")
OK_ROW_FIELDS = (*PARAMETERS, "p_drop", "seed", "n_params", "best_epoch", "val_accuracy", "val_loss")


def _row_problem(row) -> str | None:
    """What makes a recorded row unusable, or None."""
    if not isinstance(row, dict):
        return f"a row is a JSON {type(row).__name__}, not an object"
    needed = ROW_FIELDS + (OK_ROW_FIELDS if row.get("status") == "ok" else ())
    missing = [f for f in needed if f not in row]
    if missing:
        return f"trial {row.get('trial', '?')} has no {', '.join(missing)}"
    numbers = [f for f in needed if f != "status" and not (isinstance(row[f], (int, float))
                                                          and not isinstance(row[f], bool))]
    if numbers or not isinstance(row["status"], str):
        return f"trial {row.get('trial')}: {', '.join(numbers) or 'status'} must be a number (a string for status)"
    return None


def read_trials(out) -> dict:
    """{trial id: {"row": ..., "history": ...}} of the trials recorded in OUT/trials.json;
    :class:`StoreError` naming the file and the trial when a row lacks a field."""
    path = Path(out) / "trials.json"
    if not path.exists():
        return {}
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["trials"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise TypeError("'trials' is not a list of objects")
        for r in records:
            problem = _row_problem(r.get("row"))
            if problem:
                raise StoreError(f"{path}: {problem}; restore the file or choose another folder")
        return {int(r["row"]["trial"]): r for r in records}
    except StoreError:
        raise
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise StoreError(f"{path}: not a trials file of shallowcnn search ({e})") from None


def trial_model_problem(out, row: dict) -> str | None:
    """Why the model file of an "ok" trial cannot be used (missing, truncated, not a model
    of this trial's shape), or None. Uses storage's npz checks via ShallowCNN.load."""
    path = model_path(out, row["trial"])
    if not path.is_file():
        return f"{path}: missing"
    try:
        model = ShallowCNN.load(path, backend="numpy")
    except (StoreError, ValueError, OSError) as e:
        return str(e) if str(path) in str(e) else f"{path}: {e}"
    arch = model.architecture()
    if (tuple(arch["channels"]), arch["kernel_size"]) != ((row["conv1_filters"], row["conv2_filters"]),
                                                          row["kernel_size"]):
        return f"{path}: holds a model of another shape than trial {row['trial']}"
    return None


def _csv_value(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return "" if value is None else value


def write_trials(out, records: dict) -> None:
    """trials.json (rows and histories) and trials.csv (rows), sorted by trial id."""
    ordered = [records[k] for k in sorted(records)]
    text = json.dumps({"columns": list(COLUMNS), "trials": ordered}, indent=1, allow_nan=True)
    atomic_write_text(Path(out) / "trials.json", text)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in ordered:
        writer.writerow([_csv_value(record["row"].get(c)) for c in COLUMNS])
    atomic_write_text(Path(out) / "trials.csv", buffer.getvalue())


def save_trial_model(out, result: dict, search_meta: dict) -> None:
    """Write the best epoch of an "ok" trial as a model file (models/NNNN.npz)."""
    row = result["row"]
    model = ShallowCNN(backend="numpy", seed=row["seed"], p_drop=row["p_drop"],
                       channels=(row["conv1_filters"], row["conv2_filters"]), kernel_size=row["kernel_size"])
    model.set_params(result["params"])
    model.save(model_path(out, row["trial"]), {"search": {**search_meta, "trial": row}})


def ranking(records: dict) -> list:
    """Rows of the "ok" trials, best first: highest validation accuracy, then lowest
    validation loss, then fewer parameters, then lower id (so ties are decided the same way
    every time)."""
    rows = [r["row"] for r in records.values() if r["row"]["status"] == "ok"]
    return sorted(rows, key=lambda r: (-r["val_accuracy"], r["val_loss"], r["n_params"], r["trial"]))


def copy_best_model(out, best_row: dict) -> Path:
    """OUT/best/model.npz: a byte-for-byte copy of the best trial's model file, after
    checking that it loads (a damaged file is never copied)."""
    problem = trial_model_problem(out, best_row)
    if problem:
        raise StoreError(f"the best trial's model cannot be used: {problem}")
    source = model_path(out, best_row["trial"])
    return atomic_write_bytes(Path(out) / "best" / "model.npz", source.read_bytes())


def _markdown_table(rows, columns) -> list:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_format(c, row.get(c)) for c in columns) + " |")
    return lines


def _format(column, value) -> str:
    if value is None or isinstance(value, float) and math.isnan(value):
        return "-"
    if column == "lr":
        return f"{value:.2e}"
    if column in ("p_drop", "val_accuracy", "val_loss"):
        return f"{value:.4f}"
    if column == "n_params":
        return f"{value:,}"
    if column == "seconds":
        return f"{value:.1f}"
    return str(value)


def write_report(out, settings: dict, records: dict, wall_seconds: float | None) -> Path:
    """OUT/report.md: what was searched, how the trials ended, the best ones beside the paper."""
    rows = [r["row"] for r in records.values()]
    ranked = ranking(records)
    counts = {s: sum(r["status"] == s for r in rows) for s in FINAL_STATUSES}
    trial_seconds = sum(r["seconds"] for r in rows)
    lines = ["# Random hyperparameter search", "",
             f"- patch store: `{settings['patches']}` ({settings['n_train']} training and "
             f"{settings['n_val']} validation patches; the test split is never used)",
             f"- {len(rows)} trials of {settings['epochs']} epochs, seed {settings['seed']}, "
             f"backend {settings['backend']}: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
             f"- the trials' own training time adds up to {trial_seconds:.0f} s"
             + (f"; the last run of the search took {wall_seconds:.0f} s of wall time on "
                f"{settings.get('workers_seen', '?')} worker(s)" if wall_seconds is not None else ""),
             "", "## Search space", "", "```", SearchSpace(settings["space"]).describe(), "```", ""]
    columns = ("trial", *PARAMETERS, "n_params", "best_epoch", "val_accuracy", "val_loss", "seconds", "worker")
    if ranked:
        paper = {**PAPER_CHOICE, "trial": "paper (Table 1)", "n_params": 8301}
        lines += ["## Best trials, beside the paper's choice", "",
                  "Ranked by validation accuracy at each trial's best epoch (the paper's rule), then "
                  "validation loss. `best/model.npz` is the first row.", ""]
        lines += _markdown_table(ranked[:5] + [paper], columns)
    else:
        lines += ["No trial finished with status ok."]
    problems = [r for r in rows if r["status"] != "ok"]
    if problems:
        lines += ["", "## Trials that did not finish", ""]
        lines += [f"- trial {r['trial']}: {r['status']}: {r['message']}"
                  for r in sorted(problems, key=lambda r: r['trial'])]
    lines += ["", "Figure: `search.png` (validation accuracy against parameter count, coloured by learning rate)."]
    return atomic_write_text(Path(out) / "report.md", "\n".join(lines) + "\n")
