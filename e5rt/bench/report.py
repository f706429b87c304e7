"""What a benchmark run writes: the machine it ran on, a Markdown table, and a plot."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from ..cpu import INT8_FLAGS, cpu_flags, cpu_model
from ..progress import proc_status_mb  # noqa: F401  (re-exported: serve_load and the runner use it)


def machine() -> dict[str, Any]:
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": [f for f in INT8_FLAGS if f in flags],
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def markdown_table(records: list[dict[str, Any]]) -> str:
    head = (
        "engine",
        "variant",
        "texts/s",
        "tokens/s",
        "p50 ms",
        "p99 ms",
        "padding eff.",
        "peak RSS MB",
        "load s",
        "min cos vs ref",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        pe = "" if r.get("padding_efficiency") is None else f"{r['padding_efficiency']:.1%}"
        mc = "" if r.get("min_cos_vs_ref") is None else f"{r['min_cos_vs_ref']:.6f}"
        lines.append(
            f"| {r['engine']} | {r['variant']} | {r['texts_per_s']:,.1f} | {r['tokens_per_s']:,.0f} | "
            f"{r['latency_p50_ms']} | {r['latency_p99_ms']} | {pe} | {r['peak_rss_mb']:,.0f} | "
            f"{r['load_s']:.2f} | {mc} |"
        )
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['engine']}\n{r['variant']}" for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = ["#d62728" if r["engine"] == "e5rt" else "#7f7f7f" for r in records]
    axes[0].barh(labels, [r["texts_per_s"] for r in records], color=colors)
    axes[0].set_xlabel("bulk texts/s (higher is better)")
    axes[1].barh(labels, [r["latency_p50_ms"] for r in records], color=colors)
    axes[1].set_xlabel("single-text p50 latency, ms (lower is better)")
    for ax in axes:
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
