"""Charts of a benchmark run: ``plot.py RESULTS.json OUTDIR`` writes ``perf-*.png``.

Runs with the bench virtualenv's Python (matplotlib lives there, not in the project's venv).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "ws4redis": "#c0392b",
    "ws4redis-2w": "#e67e22",
    "channels-uvicorn": "#2980b9",
    "channels-daphne": "#8e44ad",
    "ceiling": "#7f8c8d",
}


def style(system: str) -> dict:
    return {
        "color": COLORS.get(system, "black"),
        "marker": "o",
        "linestyle": "--" if system == "ceiling" else "-",
        "label": "ceiling (Node ws)" if system == "ceiling" else system,
    }


def fanout(results: list[dict], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for r in results:
        sizes = [s for s in r.get("sizes", []) if s["fanout"]["time_to_all_ms_median"]]
        if not sizes:
            continue
        n = [s["open"] for s in sizes]
        axes[0].plot(n, [s["fanout"]["time_to_all_ms_median"] for s in sizes], **style(r["system"]))
        axes[1].plot(
            n,
            [s["fanout"]["p50_ms"] for s in sizes],
            alpha=0.5,
            **{**style(r["system"]), "label": None, "linestyle": ":"},
        )
        axes[1].plot(n, [s["fanout"]["p99_ms"] for s in sizes], **style(r["system"]))
    axes[0].set_title("One publish: time until every client has it (median of 20)")
    axes[1].set_title("Per-client latency: p99 (solid), p50 (dotted)")
    for ax in axes:
        ax.set_xlabel("connected WebSockets")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.savefig(out / "perf-fanout.png", dpi=110)
    plt.close(fig)


def throughput(results: list[dict], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for r in results:
        steps = r.get("sweep", {}).get("steps", [])
        if not steps:
            continue
        offered = [s["offered_deliveries_per_s"] for s in steps]
        axes[0].plot(offered, [s["deliveries_per_s"] for s in steps], **style(r["system"]))
        axes[1].plot(offered, [s["p99_ms"] or float("nan") for s in steps], **style(r["system"]))
    axes[0].set_title("Deliveries/s achieved vs offered (N = 1000)")
    axes[1].set_title("p99 latency vs offered deliveries/s (N = 1000)")
    axes[1].axhline(100, color="black", linewidth=0.8, linestyle=":")
    for ax in axes:
        ax.set_xlabel("offered deliveries/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("deliveries/s")
    axes[1].set_ylabel("ms")
    axes[0].legend(fontsize=8)
    fig.savefig(out / "perf-throughput.png", dpi=110)
    plt.close(fig)


def resources(results: list[dict], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    names, rss, rate = [], [], []
    for r in results:
        if not r.get("sizes"):
            continue
        big = r["sizes"][-1]
        names.append(f"{r['system']}\nN={big['open']}")
        rss.append(big["rss_per_connection_kib"])
        rate.append(big["connect"]["rate"])
    colors = [COLORS.get(n.split("\n")[0], "black") for n in names]
    axes[0].bar(names, rss, color=colors)
    axes[0].set_title("RSS per idle connection (KiB)")
    axes[1].bar(names, rate, color=colors)
    axes[1].set_title("Connect rate (handshakes/s)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7, labelrotation=15)
        ax.grid(True, axis="y", alpha=0.3)
    fig.savefig(out / "perf-resources.png", dpi=110)
    plt.close(fig)


def main() -> None:
    report = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    results = report["results"]
    fanout(results, out)
    throughput(results, out)
    resources(results, out)
    print(f"charts written to {out}/perf-*.png", file=sys.stderr)


if __name__ == "__main__":
    main()
