"""compare_outputs.py BEFORE AFTER: the files of two runs of same_behaviour.sh compared bit for bit,
wall-clock times left out (JSON keys "seconds", history.csv's seconds column, the report's times)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

def no_seconds(obj):
    if isinstance(obj, dict):
        return {k: no_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [no_seconds(v) for v in obj]
    return obj

def text_without_times(path):
    lines = []
    for line in path.read_text().splitlines():
        if re.search(r"\b\d+(\.\d+)? s\b", line):          # "- train: 7.2 s", "done in 14 s", "in 4.2 s"
            line = re.sub(r"\b\d+(\.\d+)? s\b", "<t> s", line)
        if line.startswith("| ") and path.name == "report.md" and ".dcm" in line:
            line = line.rsplit("|", 2)[0]                  # the scan table's last column: seconds
        lines.append(line)
    return lines

def same(b, a):
    if b.suffix == ".npz":
        x, y = np.load(b, allow_pickle=False), np.load(a, allow_pickle=False)
        if sorted(x.files) != sorted(y.files):
            return False
        for k in x.files:
            if k == "__metadata__":
                mx, my = (no_seconds(json.loads(z[k].tobytes().decode())) for z in (x, y))
                if mx != my:
                    return False
            elif not (x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k])):
                return False
        return True
    if b.suffix == ".npy":
        x, y = np.load(b), np.load(a)
        return x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)
    if b.suffix == ".json":
        return no_seconds(json.loads(b.read_text())) == no_seconds(json.loads(a.read_text()))
    if b.name == "history.csv":
        def rows(p):
            return [r.rsplit(",", 1)[0] for r in p.read_text().splitlines()]
        return rows(b) == rows(a)
    if b.suffix in (".txt", ".md"):
        return text_without_times(b) == text_without_times(a)
    return b.read_bytes() == a.read_bytes()

if len(sys.argv) != 3:
    sys.exit(__doc__)
before, after = Path(sys.argv[1]), Path(sys.argv[2])
n_same, n_diff, kinds = 0, 0, {}
for b in sorted(p for p in before.rglob("*") if p.is_file()):
    rel = b.relative_to(before)
    a = after / rel
    ok = a.exists() and same(b, a)
    kinds[b.suffix or b.name] = kinds.get(b.suffix or b.name, 0) + 1
    if ok:
        n_same += 1
    else:
        n_diff += 1
        print("DIFFERS", rel)
print(f"{n_same} files identical, {n_diff} different; by kind: {kinds}")
sys.exit(1 if n_diff else 0)
