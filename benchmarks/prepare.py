"""Benchmark of ``medsae prepare`` on large phantom CT volumes (512 x 512 x 400, 117 masks).

Prints JSON and writes benchmarks/results/prepare.json:

* ``seconds_per_volume``: wall seconds per volume with one worker;
* ``peak_rss_mb``: the largest resident set of any process of the run (per worker);
* ``slices_per_second``: slices written per wall second, per worker count;
* ``workers``: the worker counts measured, with per-count figures under ``runs``;
* ``cpu_seconds_per_volume``: user + system CPU seconds of the prepare process per volume
  (the robust figure on a shared machine), and ``load_average``: the 1-minute load before
  and after the runs;
* ``phantom_seconds``: time to generate the phantom (null when ``--data`` reused one);
* ``backend``: ``local`` (worker processes) or ``ray`` (one Ray task per volume on a local
  Ray instance started with ``num_cpus`` = the worker count; its start-up is part of the
  wall time, and ``peak_rss_mb`` and the CPU seconds are then sampled from ``/proc`` over
  every process of the run, Ray's own included, because Ray's workers are not children that
  the benchmark waits for).

Targets: <= 30 s per volume on one core, <= 4 GB per worker, near-linear scaling.
``--quick`` uses 256 x 256 x 200 volumes.

Usage::

    python benchmarks/prepare.py [--quick] [--volumes 2] [--workers 1 2] [--data DIR]
                                 [--backend local|ray]

``--data DIR`` keeps the phantom dataset in DIR (it is generated there once, when DIR is
missing or empty, and reused by later runs with the same size and volume count).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUN = """
import sys
from medsae.data import PrepareConfig, prepare
backend, workers = sys.argv[4], int(sys.argv[3])
if backend == "ray":
    import ray
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
cfg = PrepareConfig(source=sys.argv[2], workers=workers, backend=backend)
prepare(sys.argv[1], cfg, force=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256 x 256 x 200 volumes")
    ap.add_argument("--volumes", type=int, default=2, help="CT volumes to prepare")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--data", default=None, help="phantom folder to reuse (generated once when missing)"
    )
    ap.add_argument("--backend", choices=["local", "ray"], default="local")
    ap.add_argument(
        "--out",
        default=None,
        help="results file (default: results/prepare.json, or prepare-ray.json)",
    )
    args = ap.parse_args()
    name = "prepare.json" if args.backend == "local" else f"prepare-{args.backend}.json"
    args.out = args.out or str(Path(__file__).parent / "results" / name)

    from medsae.data import PhantomConfig, make_phantom

    size, n_slices = (256, 200) if args.quick else (512, 400)
    with tempfile.TemporaryDirectory(prefix="medsae-bench-") as tmp:
        root = Path(tmp)
        data = Path(args.data).expanduser().resolve() if args.data else root / "data"
        phantom = PhantomConfig(
            ct_subjects=args.volumes, mri_subjects=0, size_xy=size, n_slices=n_slices, seed=0
        )
        phantom_s = _phantom(data, phantom, make_phantom)
        load_before = os.getloadavg()[0]
        runs = {}
        for w in args.workers:
            usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            before = usage0.ru_maxrss
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    RUN,
                    str(root / f"ws{w}"),
                    str(data / "ct"),
                    str(w),
                    args.backend,
                ],
                env={"MEDSAE_PROGRESS": "0", **_env()},
            )
            sampled, sampled_cpu = _sample_tree(proc)
            seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"prepare failed (exit status {proc.returncode})")
            usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            peak = usage1.ru_maxrss
            cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
            if args.backend == "ray":  # Ray's processes are not waited for: sampled instead
                cpu = max(cpu, sampled_cpu)
            manifest = json.loads((root / f"ws{w}" / "slices" / "manifest.json").read_text())
            n = int(manifest["counts"]["slices"])
            runs[str(w)] = {
                "seconds": round(seconds, 2),
                "seconds_per_volume": round(seconds / args.volumes, 2),
                "cpu_seconds_per_volume": round(
                    cpu / args.volumes, 2
                ),  # robust on a shared machine
                "slices": n,
                "slices_per_second": round(n / seconds, 1),
                "peak_rss_mb": round(max(peak, before, sampled) / 1024.0, 1),
            }
    first = runs[str(args.workers[0])]
    result = {
        "benchmark": "prepare",
        "volume_shape": [size, size, n_slices],
        "masks_per_volume": 117,
        "volumes": args.volumes,
        "backend": args.backend,
        "seconds_per_volume": first["seconds_per_volume"],
        "cpu_seconds_per_volume": first["cpu_seconds_per_volume"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs.values()),
        "slices_per_second": {w: r["slices_per_second"] for w, r in runs.items()},
        "workers": args.workers,
        "runs": runs,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "phantom_seconds": None if phantom_s is None else round(phantom_s, 1),
        "quick": args.quick,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


def _phantom(data: Path, config: Any, make: Any) -> float | None:
    """Generate the phantom into ``data`` unless a matching one is there; its seconds or None."""
    stamp = data / "bench-phantom.json"
    want = config.model_dump(mode="json")
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return None
    if data.exists() and any(data.iterdir()):
        raise SystemExit(
            f"--data {data}: not empty and not a phantom of this benchmark ({want}); "
            "give an empty or missing folder"
        )
    t0 = time.perf_counter()
    make(data, config)
    seconds = time.perf_counter() - t0
    stamp.write_text(json.dumps(want))
    return seconds


def _tree(root: int) -> list[int]:
    """``root`` and every live process descending from it (from ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def _hwm_kb(pid: int) -> int:
    """The peak resident set (VmHWM, KiB) of a live process; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process so far (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sample_tree(proc: subprocess.Popen[bytes], every: float = 0.2) -> tuple[int, float]:
    """Wait for ``proc``; sampled over its process tree: the largest peak RSS of any process
    (KiB) and the CPU seconds of all of them (each process's last sample)."""
    peak, cpu = 0, {}
    while proc.poll() is None:
        if Path("/proc").is_dir():
            for pid in _tree(proc.pid):
                peak = max(peak, _hwm_kb(pid))
                seconds = _cpu_seconds(pid)
                if seconds is not None:
                    cpu[pid] = seconds
        time.sleep(every)
    return peak, float(sum(cpu.values()))


def _env() -> dict[str, str]:
    return dict(os.environ)


if __name__ == "__main__":
    main()
