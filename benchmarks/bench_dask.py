"""Throughput on a Dask cluster against local worker processes, side by side.

The same folder (copies of the sample images, as in ``bench_batch.py``) goes
through ``convfilter apply -k vertical --channels gray`` twice per round: with
``--jobs N`` on this machine, and with ``--scheduler`` on a
``distributed.LocalCluster`` of N single-threaded worker processes started by
this script (on 127.0.0.1). Whole client processes are timed (start-up,
planning, progress and summary included); the cluster is started once and
warmed, as a long-running cluster would be. Figures are medians over the
rounds, which alternate which run goes first.

On one machine the cluster can only add cost: the same N processes do the
work, plus a scheduler, task messages and the client's connection. What it
buys is more machines; this measures the price per image.

    python benchmarks/bench_dask.py                       # 100 copies of the 640x427 samples
    python benchmarks/bench_dask.py --size 64x43          # thumbnails: the per-file cost shows
    python benchmarks/bench_dask.py --copies 200 --rounds 5 --workers 2

Needs ``pip install -e '.[dask]'``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_batch import convfilter_command, fresh, make_folder, private_server, timed
from convfilter.system import usable_cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=100, help="images in the folder (default 100)")
    parser.add_argument("--size", help="resize the copies to WxH (default: the samples' 640x427)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each run (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="local --jobs and cluster workers (default 2)")
    args = parser.parse_args()
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        sys.exit("needs Dask: pip install -e '.[dask]'")
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    cpus = usable_cpus()

    # Dask's scratch space and lock files in the run's own folder, not the shared temporary one
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp, dask.config.set({"temporary-directory": tmp}), \
            private_server(Path(tmp)), \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address, set_as_default=False) as client:
        root = Path(tmp)
        folder = root / "images"
        make_folder(folder, args.copies, size)
        shape = size and f"{size[0]}x{size[1]}" or "640x427"
        print(f"{args.copies} JPEGs of {shape}, 7x7 correlation to gray PNG, {cpus} usable CPUs, "
              f"{args.workers} workers each way, medians of {args.rounds} rounds; "
              f"load average before: {os.getloadavg()[0]:.1f}")
        runs = {"local": (args.workers, []), "cluster": (None, ["--scheduler", cluster.scheduler_address])}

        def command(name: str, out: Path) -> list[str]:
            jobs, extra = runs[name]
            return convfilter_command([str(folder)], out, jobs) + extra

        for name in runs:  # Numba's cache, and the workers' imports
            timed(command(name, fresh(root, "warm")))
        times: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(args.rounds):
            for name in (list(runs) if round_ % 2 == 0 else list(reversed(runs))):
                times[name].append(timed(command(name, fresh(root, f"out-{name}"))))
        same = files_of(root / "out-local") == files_of(root / "out-cluster")
        rate = {name: args.copies / statistics.median(t) for name, t in times.items()}
        print("| run | seconds | images/s |\n| --- | --- | --- |")
        print(f"| convfilter --jobs {args.workers} | {statistics.median(times['local']):.2f} | {rate['local']:.1f} |")
        print(f"| convfilter --scheduler (LocalCluster, {len(client.nthreads())} workers) | "
              f"{statistics.median(times['cluster']):.2f} | {rate['cluster']:.1f} |")
        print(f"ratio cluster / local: {rate['cluster'] / rate['local']:.2f}x; "
              f"outputs byte-identical: {'yes' if same else 'NO'}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


if __name__ == "__main__":
    main()
