"""Charts (PNG) and a Markdown table from the JSON that ``bench/http.py --json`` writes.

Two charts, one panel per workload:

- ``http-rps.png``: median req/s of each server as a bar (the whisker spans the rounds'
  min to max), the ceiling's req/s as a solid line, packetron's target as a dotted one;
  a server that had errors under load is hatched and labelled so.
- ``http-cpu.png``: the server's CPU time per request (user + system), the ceiling's as
  a line: the steadiest number on a shared machine.

In the ``pattern`` and ``plugins`` panels the ceiling line is its plain ``GET /api/status``
(the yardstick of those targets); the ``auto`` panel has no ceiling and marks the
JSON_BODY app instead.

Usage (from the repository root)::

    .venv/bin/python bench/charts.py RESULTS.json [--out bench/charts] [--markdown]

``--markdown`` also prints the results as the Markdown tables bench/README.md shows.
Needs matplotlib (in the ``bench`` extra); it draws with the Agg backend, no display.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from typing import Any

PACKETRON_COLOR = "#d9480f"
PEER_COLOR = "#4c6ef5"
CEILING_COLOR = "#212529"
ERROR_COLOR = "#adb5bd"


def _reference(workload: dict[str, Any]) -> tuple[str, str] | None:
    """(label, shown name) of the entry a panel is measured against, drawn as a line:
    the ceiling, else the entry packetron's target names (auto: packetron-json)."""
    summary = workload["summary"]
    if "ceiling" in summary:
        plain = summary["ceiling"].get("reference")
        return "ceiling", "ceiling (plain GET)" if plain else "ceiling"
    target = workload.get("target", "")
    for label in summary:
        if label != "packetron" and f"x {label}" in target:
            return label, label
    return None


def _target_factor(workload: dict[str, Any]) -> float | None:
    """The multiple of the reference packetron must reach, read from the target text."""
    target = workload.get("target", "")
    if target.startswith(">= ") and "x " in target:
        try:
            return float(target[3:].split("x", 1)[0])
        except ValueError:
            return None
    return None


def _panel_grid(count: int) -> tuple[int, int]:
    cols = 2 if count > 1 else 1
    return math.ceil(count / cols), cols


def draw(document: dict[str, Any], metric: str, path: str) -> None:
    """One PNG: a panel per workload of `metric` ("rps" or "cpu_us_per_request")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    workloads = document["workloads"]
    rows, cols = _panel_grid(len(workloads))
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(workloads):]:
        ax.set_visible(False)
    for ax, (name, workload) in zip(axes.flat, workloads.items()):
        summary: dict[str, Any] = workload["summary"]
        reference = _reference(workload)
        ref_value = summary[reference[0]][metric] if reference else None
        # The reference is drawn as a line, everything else as a bar.
        labels = [label for label in summary if not reference or label != reference[0]]
        labels.sort(key=lambda label: summary[label][metric] or 0.0)
        values = [summary[label][metric] or 0.0 for label in labels]
        colors = [
            ERROR_COLOR if summary[label]["unclean_rounds"]
            else PACKETRON_COLOR if label == "packetron"
            else PEER_COLOR
            for label in labels
        ]
        bars = ax.barh(labels, values, color=colors, height=0.6)
        if metric == "rps":
            lows = [v - (summary[label]["rps_min"] or v) for label, v in zip(labels, values)]
            highs = [(summary[label]["rps_max"] or v) - v for label, v in zip(labels, values)]
            ax.errorbar(values, labels, xerr=[lows, highs], fmt="none", ecolor="#495057",
                        capsize=3, linewidth=1)
        for bar, label in zip(bars, labels):
            if summary[label]["unclean_rounds"]:
                bar.set_hatch("//")
        scale = max([*values, ref_value or 0.0]) or 1.0
        if metric == "rps":
            scale = max([scale, *(summary[label]["rps_max"] or 0.0 for label in labels)])
        for bar, label, value in zip(bars, labels, values):
            text = f"{value:,.0f}" if metric == "rps" else f"{value:.1f}"
            if summary[label]["unclean_rounds"]:
                text += " (errors)"
            # Right of the whisker, so the two do not overlap.
            end = max(value, summary[label]["rps_max"] or 0.0) if metric == "rps" else value
            ax.text(end + scale * 0.015, bar.get_y() + bar.get_height() / 2, text,
                    va="center", fontsize=8)
        if len(labels) < 3:
            ax.set_ylim(-1, 2)  # one or two bars stay as thin as in the other panels
        if reference and ref_value:
            shown = f"{ref_value:,.0f}" if metric == "rps" else f"{ref_value:.1f}"
            ax.axvline(ref_value, color=CEILING_COLOR, linewidth=1.5,
                       label=f"{reference[1]}: {shown}")
            factor = _target_factor(workload)
            if metric == "rps" and factor is not None:
                ax.axvline(ref_value * factor, color=CEILING_COLOR, linewidth=1,
                           linestyle=":", label=f"target {factor:g}x")
            ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
        ax.set_xlim(0, scale * 1.3)
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda x, _: f"{x / 1000:g}k" if metric == "rps" and x else f"{x:g}"))
        ax.set_title(textwrap.fill(f"{name}: {workload['title']}", 80), fontsize=8.5,
                     loc="left")
        ax.tick_params(labelsize=8)
        ax.set_xlabel("req/s (median)" if metric == "rps" else "server CPU µs per request",
                      fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    config = document.get("config", {})
    fig.suptitle(
        f"bench/http.py, {config.get('time', '')[:10]}: one server on one CPU, wrk -t1 on "
        f"another; medians of {config.get('rounds', '?')} interleaved rounds of "
        f"{config.get('duration_s', '?')} s",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def markdown(document: dict[str, Any]) -> str:
    """The results as Markdown: one table of all workloads, then the targets."""
    lines = [
        "| workload | server | req/s | p99 | CPU µs/req | peak RSS | / ceiling | "
        "packetron / this | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdict_lines = []
    for name, workload in document["workloads"].items():
        summary = workload["summary"]
        ratios = workload["ratios"]
        for label, entry in summary.items():
            shown = label + (" (plain GET)" if entry.get("reference") else "")
            vs_ceiling = ratios[label].get("ceiling")
            mine = ratios.get("packetron", {}).get(label)
            bold = label == "packetron"
            lines.append(
                f"| {name} | {'**' + shown + '**' if bold else shown} | "
                f"{_cell(entry['rps'], ',.0f')} | {_cell(entry['p99_ms'], '.2f', ' ms')} | "
                f"{_cell(entry['cpu_us_per_request'], '.1f')} | "
                f"{_cell(entry['rss_mib'], '.1f', ' MiB')} | "
                f"{_cell(vs_ceiling, '.2f')} | {_cell(mine, '.2f')} | "
                f"{entry['errors'] or '-'} |"
            )
        for label, reason in workload.get("failed", {}).items():
            lines.append(f"| {name} | {label} | failed | | | | | | "
                         f"{reason.splitlines()[0]} |")
        for verdict in workload.get("verdicts", []):
            mark = {True: "met", False: "**NOT met**", None: "not measured"}[verdict["met"]]
            verdict_lines.append(f"- `{name}`: {verdict['text']} — {mark}")
    return "\n".join(lines) + "\n\nTargets:\n\n" + "\n".join(verdict_lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="JSON written by bench/http.py --json")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "charts"),
                        help="directory for the PNGs (bench/charts)")
    parser.add_argument("--markdown", action="store_true",
                        help="also print the results as Markdown tables")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        document = json.load(f)
    if not document.get("workloads"):
        print(f"{args.results}: no workloads in it", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    for metric, filename in (("rps", "http-rps.png"), ("cpu_us_per_request", "http-cpu.png")):
        path = os.path.join(args.out, filename)
        draw(document, metric, path)
        print(f"wrote {path}")
    if args.markdown:
        print()
        print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
