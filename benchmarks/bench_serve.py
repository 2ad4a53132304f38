"""Benchmark: ``shallowcnn serve`` under a burst of concurrent full-size uploads.

    python benchmarks/bench_serve.py                     # 20 uploads of a 3328 x 4084 DICOM
    python benchmarks/bench_serve.py --uploads 5 --size demo --json out.json

What it does:

1. writes one full-size (3328 x 4084, INbreast's larger size, 27 MB) synthetic DICOM with
   the phantom generator;
2. starts ``python -m shallowcnn serve`` as a separate process on 127.0.0.1 (a free port),
   so that its memory is its own: peak resident memory is the kernel's high-water mark
   (``VmHWM`` in /proc/PID/status) read just before the server is stopped;
3. sends one upload first (JIT compilation and caches; kept out of the figures);
4. sends ``--uploads`` uploads at the same moment (one thread each) and waits for every
   answer, each bounded by ``--timeout`` seconds, the whole burst by ``--deadline``.

Every upload must be answered 200 or 503 (queue full); anything else is a failure and
the script exits 1. Latency is from the start of the request to the end of the answer,
reported as p50 and p95 for the scanned (200) and refused (503) uploads separately.
The server's queue is its defaults (1 scan at a time, 4 waiting) unless ``--workers`` /
``--waiting`` say otherwise. Numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_dicom(folder: Path, size: str, seed: int) -> Path:
    from shallowcnn.data.phantom import parse_size
    from shallowcnn.data.phantom_render import ImagePlan, render_image
    from shallowcnn.data.phantom_files import dicom_bytes
    from shallowcnn.storage import atomic_write_bytes

    width, height = parse_size(size)
    plan = ImagePlan(laterality="L", view="MLO", clusters=2, outline=True, isolated=3,
                     other_finding="Mass", density=0.0)
    pixels, _ = render_image(np.random.default_rng(seed), width, height, plan)
    return atomic_write_bytes(folder / "full.dcm", dicom_bytes(pixels, f"bench:{seed}", "BENCH"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float | None:
    """The process's resident-memory high-water mark (Linux), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def upload(url: str, data: bytes, timeout: float) -> tuple:
    """``(status or error text, seconds)`` for one POST /api/scan."""
    import httpx

    start = time.perf_counter()
    try:
        response = httpx.post(url, files={"file": ("full.dcm", data, "application/dicom")}, timeout=timeout)
        status = response.status_code
    except httpx.HTTPError as e:
        status = f"{type(e).__name__}: {e}"
    return status, time.perf_counter() - start


def percentiles(values) -> dict:
    if not values:
        return {"n": 0}
    v = np.asarray(values)
    return {"n": len(v), "p50_s": round(float(np.percentile(v, 50)), 2),
            "p95_s": round(float(np.percentile(v, 95)), 2), "max_s": round(float(v.max()), 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=20, help="concurrent uploads (default 20)")
    parser.add_argument("--size", default="full", help="WIDTHxHEIGHT, 'demo' or 'full' (default full: 3328x4084)")
    parser.add_argument("--model", default=None, help="model.npz to serve (default: the bundled one)")
    parser.add_argument("--backend", default="numba", help="numpy, numba or cuda (default numba)")
    parser.add_argument("--workers", type=int, default=None, help="server's --workers (default: its own)")
    parser.add_argument("--waiting", type=int, default=None, help="server's --waiting (default: its own)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one upload may take (default 600)")
    parser.add_argument("--deadline", type=float, default=1200, help="seconds the burst may take (default 1200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if not 1 <= args.uploads <= 200:
        parser.error("--uploads must lie in 1..200")

    with tempfile.TemporaryDirectory(prefix="bench_serve-") as work:
        path = write_dicom(Path(work), args.size, args.seed)
        data = path.read_bytes()
        port = free_port()
        command = [sys.executable, "-m", "shallowcnn", "serve", "--port", str(port), "--backend", args.backend]
        command += [args.model] if args.model else []
        command += ["--workers", str(args.workers)] if args.workers else []
        command += ["--waiting", str(args.waiting)] if args.waiting is not None else []
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            import httpx

            started = time.monotonic()
            while True:
                try:
                    model = httpx.get(f"{base}/api/model", timeout=2).json()
                    break
                except httpx.HTTPError:
                    if server.poll() is not None or time.monotonic() - started > 60:
                        print(server.stdout.read() if server.poll() is not None else "", file=sys.stderr)
                        print("ERROR: the server did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.2)
            idle_mb = peak_rss_mb(server.pid)
            print(f"server pid {server.pid} on {base}: model {model['name']}, backend {model['backend']}, "
                  f"{model['limits']['scan_workers']} scan(s) at once, {model['limits']['scans_waiting']} waiting; "
                  f"{os.cpu_count()} CPUs")
            print(f"upload: {path.stat().st_size / 2**20:.1f} MiB DICOM, {args.size}")
            warm_status, warm_s = upload(f"{base}/api/scan", data, args.timeout)
            print(f"warm-up upload: {warm_status} in {warm_s:.1f} s")
            if warm_status != 200:
                print("ERROR: the warm-up upload was not scanned", file=sys.stderr)
                return 1
            warm_mb = peak_rss_mb(server.pid)

            answers = [None] * args.uploads
            gate = threading.Barrier(args.uploads)

            def one(k):
                gate.wait()                           # all start together
                answers[k] = upload(f"{base}/api/scan", data, args.timeout)

            threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(args.uploads)]
            burst_start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=max(0.0, args.deadline - (time.perf_counter() - burst_start)))
            burst_s = time.perf_counter() - burst_start
            peak_mb = peak_rss_mb(server.pid)
            alive = server.poll() is None
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()

    statuses = [a[0] if a else "no answer before the deadline" for a in answers]
    ok = [a[1] for a in answers if a and a[0] == 200]
    busy = [a[1] for a in answers if a and a[0] == 503]
    bad = [s for s in statuses if s not in (200, 503)]
    results = {"uploads": args.uploads, "size": args.size, "upload_mib": round(len(data) / 2**20, 1),
               "backend": model["backend"], "scan_workers": model["limits"]["scan_workers"],
               "scans_waiting": model["limits"]["scans_waiting"], "cpus": os.cpu_count(),
               "warm_up_s": round(warm_s, 2), "burst_s": round(burst_s, 2),
               "scanned_200": percentiles(ok), "refused_503": percentiles(busy),
               "failures": [str(s) for s in bad], "server_alive_after": alive,
               "server_rss_mb": {"idle_peak": idle_mb, "after_warm_up_peak": warm_mb, "peak": peak_mb}}
    print(f"burst of {args.uploads}: {len(ok)} scanned (200), {len(busy)} refused (503), "
          f"{len(bad)} failed, in {burst_s:.1f} s")
    for label, stats in (("scanned", results["scanned_200"]), ("refused", results["refused_503"])):
        if stats["n"]:
            print(f"  {label}: latency p50 {stats['p50_s']:.2f} s, p95 {stats['p95_s']:.2f} s, "
                  f"max {stats['max_s']:.2f} s")
    print(f"server peak resident memory: {peak_mb:.0f} MB (idle {idle_mb:.0f} MB, "
          f"after one scan {warm_mb:.0f} MB)" if peak_mb else "server peak memory: not available")
    if args.json:
        from shallowcnn.storage import atomic_write_text
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    if bad or not alive:
        print(f"ERROR: {len(bad)} upload(s) neither scanned nor refused: {bad[:3]}"
              + ("" if alive else "; the server died"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
