"""Load time and peak memory of a training CSV: training.csv_data.read_csv (what the CLI parses with) and
training.data.load_dataset (parse + encode) against plain pandas.read_csv + to_numpy(float32).

    python bench/csv_load.py [--rows 200000] [--columns 50]

Writes a seeded numeric CSV (columns x0.. plus a 0/1 label) to a temporary directory, then loads it once per
reader, each in a fresh process: `seconds` is the load alone (imports done before), `added MB` the process's
peak RSS (ru_maxrss) minus its RSS just before the load, compared with the float32 matrix (rows x columns x 4
bytes); `x pandas` is the median seconds over pandas' median (the target of issue 25: under 2, and added MB,
the largest of the rounds, under 3x the matrix). Rounds run the readers interleaved, each in a fresh process:
single timings on a shared machine vary by 2x (pandas' own 0.3-0.9 s in one evening here).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
READERS = ("pandas", "read_csv", "load_dataset", "one_stream")  # one_stream: read_csv without blocks


def write_csv(path: Path, rows: int, columns: int) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((rows, columns))  # (rows, columns)
    labels = (values[:, 0] + values[:, 1] > 0).astype(np.int64)
    with path.open("w") as handle:
        handle.write(",".join(f"x{i}" for i in range(columns)) + ",label\n")
        np.savetxt(handle, np.column_stack([values, labels]), delimiter=",", fmt=["%.6f"] * columns + ["%d"])


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(reader: str, path: Path) -> dict[str, float]:
    """One load in this process; imports first, so only the load is timed."""
    import pandas as pd

    from training.csv_data import NEVER, CsvOptions, read_csv
    from training.data import load_dataset

    before = _rss_mb()
    started = time.perf_counter()
    if reader == "pandas":
        matrix = pd.read_csv(path).drop(columns=["label"]).to_numpy(np.float32)
        shape = matrix.shape
    elif reader == "read_csv":
        shape = read_csv(path, None).numeric.shape
    elif reader == "one_stream":
        shape = read_csv(path, None, CsvOptions(parallel_bytes=NEVER)).numeric.shape
    else:
        shape = tuple(load_dataset(str(path), "mlp").features.shape)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "before_mb": before, "peak_mb": peak, "rows": shape[0], "columns": shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--columns", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the table shows each reader's median")
    parser.add_argument("--child", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(child(arguments.child, arguments.path)))
        return
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.csv"
        write_csv(path, arguments.rows, arguments.columns)
        matrix_mb = arguments.rows * arguments.columns * 4 / 2**20
        print(f"{path.stat().st_size / 2**20:.1f} MiB CSV, {arguments.rows} x {arguments.columns}; "
              f"float32 matrix {matrix_mb:.1f} MiB; {arguments.repeat} rounds, readers interleaved")  # fmt: skip
        runs: dict[str, list[dict[str, float]]] = {reader: [] for reader in READERS}
        for _ in range(arguments.repeat):  # interleaved: a slow spell of the machine hits every reader alike
            for reader in READERS:
                command = [sys.executable, __file__, "--child", reader, "--path", str(path)]
                output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
                runs[reader].append(json.loads(output))
        _print_table(runs, matrix_mb)


def _print_table(runs: dict[str, list[dict[str, float]]], matrix_mb: float) -> None:
    columns = ("median s", "min s", "max s", "x pandas", "added MB", "x matrix")
    print(f"{'reader':<14}" + "".join(f"{name:>{len(name) + 2}}" for name in columns))
    pandas_median = statistics.median(run["seconds"] for run in runs["pandas"])
    for reader, results in runs.items():
        seconds = [run["seconds"] for run in results]
        added = max(run["peak_mb"] - run["before_mb"] for run in results)
        median = statistics.median(seconds)
        print(
            f"{reader:<14}{median:>10.2f}{min(seconds):>7.2f}{max(seconds):>7.2f}{median / pandas_median:>10.2f}"
            f"{added:>10.0f}{added / matrix_mb:>10.2f}"
        )


if __name__ == "__main__":
    main()
