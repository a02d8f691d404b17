"""``report.html``: one self-contained file (plots embedded as PNG) from the rows and the summary."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

__all__ = ["write_report"]

_ROLE_COLOURS = {"srm": "#2a9d8f", "lrm": "#9b5de5"}
_TRIGGER_MARKS = {"priming": "P", "offload": "O", "intervention": "I", "judge_reject": "R"}
_MAX_TIMELINES = 12
_PLOT_FILES = ("accuracy_vs_srm_ratio.png", "latency_cost.png", "triggers.png", "timelines.png")


def write_report(
    path: Path, rows: list[dict[str, Any]], summary: dict[str, Any], *, plots_dir: Path | None = None
) -> None:
    """Write the HTML report; with ``plots_dir``, each plot also as a PNG file there (for docs)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    figures = [
        ("Accuracy against SRM token ratio", _accuracy_vs_ratio(summary)),
        ("Edge-cloud latency and API cost per run", _latency_cost(summary)),
        ("Triggers fired", _triggers(summary)),
        ("Step timelines", _timelines(rows)),
    ]
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for name, (_title, png) in zip(_PLOT_FILES, figures, strict=True):
            if png is not None:
                (plots_dir / name).write_bytes(base64.b64decode(png))
    body = [
        "<h1>TrigReason evaluation</h1>",
        f"<p>Dataset <b>{html.escape(str(summary.get('dataset', '?')))}</b>: {summary['problems']} problems, "
        f"{summary['runs']} runs.</p>",
        _table(summary),
        _model_note(summary),
    ]
    for title, png in figures:
        if png is not None:
            body.append(
                f"<h2>{html.escape(title)}</h2>"
                f"<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>TrigReason evaluation</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)


def _table(summary: dict[str, Any]) -> str:
    cols = ["policy", "accuracy", "± s.e.", "vs LRM", "SRM token ratio", "SRM steps share", "LRM calls/run",
            "wasted SRM tokens", "wall s/run", "backend s/run", "edge latency s", "latency vs LRM",
            "API cost USD", "cost vs LRM", "triggers"]  # fmt: skip

    def f(x: Any, fmt: str = "{:.3f}") -> str:
        return "-" if x is None else fmt.format(x)

    out = ["<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
    for name, p in summary["policies"].items():
        ec = p["edge_cloud"]
        cells = [
            html.escape(name), f(p["accuracy"]), f(p["accuracy_stderr"]), f(p["accuracy_vs_lrm"], "{:.2f}x"),
            f(p["srm_token_ratio"], "{:.2f}"), f(p["srm_steps_offloaded_ratio"], "{:.2f}"),
            f(p["lrm_calls"], "{:.1f}"), str(p["srm_wasted_tokens"]), f(p["wall_s"], "{:.1f}"),
            f(p["backend_s"], "{:.1f}"), f(ec["latency_s"], "{:.1f}"), f(ec["latency_vs_lrm"], "{:.2f}x"),
            f(ec["api_cost_usd"], "{:.5f}"), f(ec["api_cost_vs_lrm"], "{:.2f}x"),
            html.escape(", ".join(f"{k} {v}" for k, v in p["triggers"].items()) or "-"),
        ]  # fmt: skip
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def _model_note(summary: dict[str, Any]) -> str:
    m = summary.get("edge_cloud_model", {})
    return (
        "<p><b>Edge-cloud model.</b> The SRM runs locally and the LRM behind a remote API. Latency combines "
        "the <i>measured</i> backend times of both models with a <i>modelled</i> network round trip of "
        f"{m.get('round_trip_s', '?')} s per LRM call. API cost prices LRM input tokens at "
        f"{m.get('lrm_input_usd_per_m', '?')} USD/M ({m.get('lrm_cached_input_usd_per_m', '?')} for the "
        f"cached prefix), LRM output at {m.get('lrm_output_usd_per_m', '?')} USD/M and SRM tokens at "
        f"{m.get('srm_usd_per_m', '?')} USD/M. Figures are means per run.</p>"
    )


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _accuracy_vs_ratio(summary: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, p in summary["policies"].items():
        ax.errorbar(
            p["srm_token_ratio"], p["accuracy"], yerr=p["accuracy_stderr"], fmt="o", capsize=4, label=name
        )
    ax.set_xlabel("SRM token ratio")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _latency_cost(summary: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    names = list(summary["policies"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.bar(names, [summary["policies"][n]["edge_cloud"]["latency_s"] for n in names], color="#457b9d")
    left.set_ylabel("edge-cloud latency per run (s)")
    right.bar(
        names, [summary["policies"][n]["edge_cloud"]["api_cost_usd"] * 1000 for n in names], color="#e76f51"
    )
    right.set_ylabel("API cost per 1,000 runs (USD)")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=20)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _triggers(summary: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    kinds = sorted({k for p in summary["policies"].values() for k in p["triggers"]})
    if not kinds:
        return None
    names = list(summary["policies"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [summary["policies"][n]["triggers"].get(kind, 0) for n in names], width, label=kind)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set_ylabel("count")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _timelines(rows: list[dict[str, Any]]) -> str | None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    mixed = [r for r in rows if r["policy"] in ("trigreason", "specreason") and r["steps"]]
    mixed = mixed[:_MAX_TIMELINES]
    if not mixed:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(mixed) + 1.2))
    for y, row in enumerate(mixed):
        x = 0
        for step in row["steps"]:
            width = max(1, step["tokens"])
            ax.barh(
                y, width, left=x, color=_ROLE_COLOURS.get(step["role"], "grey"), edgecolor="white", height=0.7
            )
            mark = _TRIGGER_MARKS.get(step.get("trigger") or "")
            if mark:
                ax.text(x + 1, y, mark, va="center", fontsize=7, color="white")
            x += width
        ax.text(
            x + 5, y, "✓" if row["correct"] else "✗", va="center", color="green" if row["correct"] else "red"
        )
    ax.set_yticks(range(len(mixed)), [f"{r['problem_id']} {r['policy']}" for r in mixed], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("committed tokens (P priming, O offload, I intervention, R judge reject)")
    ax.legend(
        handles=[Patch(color=c, label=r.upper()) for r, c in _ROLE_COLOURS.items()],
        loc="upper left",
        bbox_to_anchor=(1.04, 1),
    )
    return _png(fig)
