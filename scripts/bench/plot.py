#!/usr/bin/env python3
"""Plot a bench-e2e workers × partitions sweep: instances/s (end to end, group join
included) and the middle-80 % rate, per mode, one line per worker count.

    python3 -m venv .var/venv-plot && .var/venv-plot/bin/pip install matplotlib==3.9.2
    .var/venv-plot/bin/python scripts/bench/plot.py OUT.png RESULTS.tsv [RESULTS.tsv ...]

Reads the results.tsv files scripts/bench/e2e.sh writes (header line: column names).
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, paths = sys.argv[1], sys.argv[2:]
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [r for r in csv.DictReader(f, delimiter="\t") if r.get("rate_limit", "-") == "-"]
    if not rows:
        print("no backlog rows in the inputs", file=sys.stderr)
        return 1
    panels = sorted({(r["broker"], r["dataset"], r["mode"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (brk, dataset, mode) in zip(axes[0], panels):
        series = defaultdict(list)
        for r in rows:
            if (r["broker"], r["dataset"], r["mode"]) != (brk, dataset, mode):
                continue
            series[int(r["workers"])].append(
                (int(r["partitions"]), float(r["instances_per_s"]), float(r["mid80_per_s"]))
            )
        n = {r["N"] for r in rows if (r["broker"], r["dataset"], r["mode"]) == (brk, dataset, mode)}
        for workers, points in sorted(series.items()):
            points.sort()
            parts = [p for p, _, _ in points]
            line = ax.plot(parts, [e for _, e, _ in points], marker="o", label=f"{workers} worker(s), end to end")
            ax.plot(
                parts,
                [m for _, _, m in points],
                marker="x",
                linestyle="--",
                color=line[0].get_color(),
                label=f"{workers} worker(s), middle 80 %",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("partitions")
        ax.set_ylabel("instances / s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{mode}, {dataset}, {brk}, N={'/'.join(sorted(n))}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("dicom-pipeline end to end on one 2-core machine (broker and ClickHouse on it too)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
