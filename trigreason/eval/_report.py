"""``report.html``: one self-contained file (plots embedded as PNG) from the rows and the summary."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from trigreason.services.trigger_evaluator.policies import PolicyRegistry

from ._calibrate import ParamValue
from ._calibration import Calibration
from ._matched import MatchedComparison
from ._rows import Row
from ._summary import Summary

__all__ = ["write_calibration_report", "write_report"]

_ROLE_COLOURS = {"srm": "#2a9d8f", "lrm": "#9b5de5"}
_UNKNOWN_STYLE = ("#adb5bd", "o")  # a policy the registry does not know (an old results file)


class _Look(NamedTuple):
    """What the registry says about drawing each policy: colour and marker, whose runs mix SRM and LRM
    steps (their timelines are drawn), and each trigger kind's one-letter mark."""

    styles: dict[str, tuple[str, str]]
    mixed: frozenset[str]
    marks: dict[str, str]

    def style(self, policy: str) -> tuple[str, str]:
        return self.styles.get(policy, _UNKNOWN_STYLE)


def _look(policies: PolicyRegistry | None) -> _Look:
    registry = policies or PolicyRegistry.from_env()
    marks: dict[str, str] = {}
    for p in registry:
        marks.update(p.trigger_marks())
    return _Look(
        styles={p.name: (p.colour, p.marker) for p in registry},
        mixed=frozenset(p.name for p in registry if p.uses_srm and p.uses_lrm),
        marks=marks,
    )


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
)
_MAX_TIMELINES = 12
_PLOT_FILES = ("accuracy_vs_srm_ratio.png", "latency_cost.png", "triggers.png", "timelines.png")


def write_report(
    path: Path,
    rows: list[Row],
    summary: Summary,
    *,
    plots_dir: Path | None = None,
    policies: PolicyRegistry | None = None,
) -> None:
    """Write the HTML report; with ``plots_dir``, each plot also as a PNG file there (for docs). Colours,
    markers and trigger marks are the registry's (``policies``; from the environment when ``None``)."""
    import matplotlib

    look = _look(policies)
    matplotlib.use("Agg")  # no display: files only
    figures = [
        ("Accuracy against SRM token ratio", _accuracy_vs_ratio(summary, look)),
        ("Edge-cloud latency and API cost per run", _latency_cost(summary)),
        ("Triggers fired", _triggers(summary)),
        ("Step timelines", _timelines(rows, look)),
    ]
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for name, (_title, png) in zip(_PLOT_FILES, figures, strict=True):
            if png is not None:
                (plots_dir / name).write_bytes(base64.b64decode(png))
    body = [
        "<h1>TrigReason evaluation</h1>",
        f"<p>Dataset <b>{html.escape(summary.dataset or '?')}</b>: {summary.problems} problems, "
        f"{summary.runs} runs.</p>",
        _table(summary),
        _matched(summary.trigreason_vs_random),
        *(_matched(m) for m in summary.vs_random.values()),
        _model_note(summary),
    ]
    body += [_figure(title, png) for title, png in figures if png is not None]
    _write_page(path, "TrigReason evaluation", body)


def write_calibration_report(
    out_dir: Path, calibration: Calibration, *, policies: PolicyRegistry | None = None
) -> None:
    """``out_dir/pareto.png`` and ``out_dir/report.html`` (the table and the plot) from a profile's
    ``calibration`` block (see ``pareto_summary``)."""
    import matplotlib

    matplotlib.use("Agg")
    png = _pareto(calibration, _look(policies))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pareto.png").write_bytes(base64.b64decode(png))
    c = calibration
    verdict = "is above" if c.beats_random else "is not above"
    body = [
        "<h1>TrigReason calibration</h1>",
        f"<p>Policy <b>{html.escape(c.policy)}</b>; dataset <b>{html.escape(c.dataset)}</b>, "
        f"{c.problems} problems. LRM-only accuracy "
        f"{c.lrm_only_accuracy:.3f}, SRM-only {c.srm_only_accuracy:.3f}. The chosen point "
        f"<b>{html.escape(_slug(c.chosen))}</b> {verdict} the random baseline at its SRM token ratio: "
        f"{c.chosen_entry().accuracy:.3f} against {c.random_accuracy_at_ratio:.3f} "
        f"(margin {c.margin_vs_random:+.3f}). <i>{html.escape(c.beats_random_rule)}.</i></p>",
        *(
            f"<p>Beside it: <b>{html.escape(o.policy)}</b>'s grid from {html.escape(o.source)} (the same "
            "problems, models and decoding), each point against this run's random baseline.</p>"
            for o in c.beside
        ),
        _calibration_table(c),
        _figure("Accuracy against SRM token ratio", png),
    ]
    _write_page(out_dir / "report.html", "TrigReason calibration", body)


def _write_page(path: Path, title: str, body: list[str]) -> None:
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)


def _figure(title: str, png: str) -> str:
    return f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"


def _slug(params: Mapping[str, ParamValue]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _table(summary: Summary) -> str:
    cols = ["policy", "accuracy", "± s.e.", "vs LRM", "SRM token ratio", "SRM steps share", "LRM calls/run",
            "wasted SRM tokens", "wall s/run", "backend s/run", "edge latency s", "latency vs LRM",
            "API cost USD", "cost vs LRM", "triggers"]  # fmt: skip

    def f(x: float | None, fmt: str = "{:.3f}") -> str:
        return "-" if x is None else fmt.format(x)

    out = ["<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
    for name, p in summary.policies.items():
        ec = p.edge_cloud
        cells = [
            html.escape(name), f(p.accuracy), f(p.accuracy_stderr), f(p.accuracy_vs_lrm, "{:.2f}x"),
            f(p.srm_token_ratio, "{:.2f}"), f(p.srm_steps_offloaded_ratio, "{:.2f}"),
            f(p.lrm_calls, "{:.1f}"), str(p.srm_wasted_tokens), f(p.wall_s, "{:.1f}"),
            f(p.backend_s, "{:.1f}"), f(ec.latency_s, "{:.1f}"), f(ec.latency_vs_lrm, "{:.2f}x"),
            f(ec.api_cost_usd, "{:.5f}"), f(ec.api_cost_vs_lrm, "{:.2f}x"),
            html.escape(", ".join(f"{k} {v}" for k, v in p.triggers.items()) or "-"),
        ]  # fmt: skip
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def _matched(m: MatchedComparison | None) -> str:
    if m is None:
        return ""
    low, high = m.accuracy_difference_ci95
    name = "TrigReason" if m.policy == "trigreason" else html.escape(m.policy)
    rows = [
        ("pairs (problem, sample) both ran", str(m.pairs)),
        (f"accuracy: {name} / random", f"{m.policy_accuracy:.3f} / {m.random_accuracy:.3f}"),
        (f"SRM steps replaced: {name} / random",
         f"{m.policy_replaced_share:.3f} / {m.random_replaced_share:.3f}"),
        (f"{name} right, random wrong", str(m.policy_right_random_wrong)),
        (f"random right, {name} wrong", str(m.random_right_policy_wrong)),
        ("accuracy difference (exact 95% interval, a description)",
         f"{m.accuracy_difference:+.3f} [{low:+.3f}, {high:+.3f}]"),
        ("exact McNemar p (two-sided)", f"{m.mcnemar_p:.3g}"),
        (f"discordant pairs at this split for p &lt; {m.alpha:g}",
         "-" if m.discordant_pairs_needed is None else str(m.discordant_pairs_needed)),
        ("verdict", html.escape(m.verdict)),
    ]  # fmt: skip
    p = m.random_offload_p
    intro = (
        "<p>The random baseline ran the same problems and seeds, replacing each SRM step with an LRM step "
        f"with probability {'?' if p is None else f'{p:.3f}'} (eval --matched-random gives it the share "
        "of the matched policy; compare the replaced shares above). Paired by "
        f"problem. The verdict follows the {html.escape(m.verdict_rule)}: a side wins only when p &lt; "
        f"{m.alpha:g}. The interval describes the difference "
        f"({html.escape(m.accuracy_difference_ci95_method)}).</p>"
    )
    table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f"<h2>{name} against random at the same replaced share</h2>{intro}<table>{table}</table>"


def _calibration_table(c: Calibration) -> str:
    cols = ["kind", "point", "accuracy", "SRM token ratio", "random at ratio", "margin (descriptive)",
            "on front", "chosen"]  # fmt: skip
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in cols) + "</tr>"]

    def row(cells: list[str]) -> None:
        out.append("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in cells) + "</tr>")

    for g in c.grid:
        row([c.policy, _slug(g.params), f"{g.accuracy:.3f}", f"{g.srm_token_ratio:.3f}",
             f"{g.random_accuracy_at_ratio:.3f}", f"{g.margin_vs_random:+.3f}",
             "yes" if g.on_front else "", "yes" if g.params == c.chosen else ""])  # fmt: skip
    for r in c.random:
        row(["random", _slug(r.params), f"{r.accuracy:.3f}", f"{r.srm_token_ratio:.3f}", "", "", "", ""])
    for name, e in c.end_points.items():
        row([name, "end point", f"{e.accuracy:.3f}", f"{e.srm_token_ratio:.3f}", "", "", "", ""])
    for other in c.beside:  # on front: on its own policy's front
        for g in other.grid:
            row([f"{other.policy} (beside)", _slug(g.params), f"{g.accuracy:.3f}", f"{g.srm_token_ratio:.3f}",
                 f"{g.random_accuracy_at_ratio:.3f}", f"{g.margin_vs_random:+.3f}",
                 "its own" if g.on_front else "", ""])  # fmt: skip
    return "".join(out) + "</table>"


def _model_note(summary: Summary) -> str:
    m = summary.edge_cloud_model
    return (
        "<p><b>Edge-cloud model.</b> The SRM runs locally and the LRM behind a remote API. Latency combines "
        "the <i>measured</i> backend times of both models with a <i>modelled</i> network round trip of "
        f"{m.round_trip_s} s per LRM call. API cost prices LRM input tokens at "
        f"{m.lrm_input_usd_per_m} USD/M ({m.lrm_cached_input_usd_per_m} for the "
        f"cached prefix), LRM output at {m.lrm_output_usd_per_m} USD/M and SRM tokens at "
        f"{m.srm_usd_per_m} USD/M. Figures are means per run.</p>"
    )


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _accuracy_vs_ratio(summary: Summary, look: _Look) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    # Random ran once, at one offload_p, whichever policy it was matched to.
    versus = summary.trigreason_vs_random or next(iter(summary.vs_random.values()), None)
    matched_p = None if versus is None else versus.random_offload_p
    for name, p in summary.policies.items():
        colour, marker = look.style(name)
        label = name
        if name == "random" and matched_p is not None:
            label = f"random (offload_p {matched_p:.2f}, matched)"
        ax.errorbar(
            p.srm_token_ratio, p.accuracy, yerr=p.accuracy_stderr, fmt=marker, color=colour,
            markersize=8, capsize=4, label=label,
        )  # fmt: skip
    _axes(ax)
    ax.legend()
    return _png(fig)


def _axes(ax: Any) -> None:
    ax.set_xlabel("SRM token ratio")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)


def _pareto(c: Calibration, look: _Look) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, grid, front, note in (
        *((b.policy, b.grid, b.front, " (beside)") for b in c.beside),
        (c.policy, c.grid, c.front, ""),
    ):
        colour, marker = look.style(policy)
        who = "TrigReason" if policy == "trigreason" else policy
        ax.scatter(
            [g.srm_token_ratio for g in grid], [g.accuracy for g in grid], color=colour,
            marker=marker, alpha=0.35, label=f"{who} grid points{note}",
        )  # fmt: skip
        ax.step(
            [f.srm_token_ratio for f in front], [f.accuracy for f in front], where="pre", color=colour,
            marker=marker, label=f"{who} Pareto front{note}",
        )  # fmt: skip
    ends = c.end_points
    line = sorted([ends["lrm-only"], *c.random, ends["srm-only"]], key=lambda e: e.srm_token_ratio)
    colour, marker = look.style("random")
    ax.plot(
        [e.srm_token_ratio for e in line], [e.accuracy for e in line], color=colour, linestyle="--",
        label="random baseline (interpolated)",
    )  # fmt: skip
    ax.scatter(
        [r.srm_token_ratio for r in c.random], [r.accuracy for r in c.random], color=colour,
        marker=marker, s=60, zorder=3, label="random, measured",
    )  # fmt: skip
    for r in c.random:
        ax.annotate(
            f"p={r.params.get('offload_p')}", (r.srm_token_ratio, r.accuracy), fontsize=7,
            textcoords="offset points", xytext=(4, -10),
        )  # fmt: skip
    for name, e in ends.items():
        colour, marker = look.style(name)
        ax.scatter(e.srm_token_ratio, e.accuracy, color=colour, marker=marker, s=80, zorder=3, label=name)
    chosen = c.chosen_entry()
    ax.scatter(
        chosen.srm_token_ratio, chosen.accuracy, s=260, facecolors="none", edgecolors="black",
        linewidths=2, zorder=4, label=f"chosen: {_slug(chosen.params)}",
    )  # fmt: skip
    _axes(ax)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _png(fig)


def _latency_cost(summary: Summary) -> str:
    import matplotlib.pyplot as plt

    names = list(summary.policies)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.bar(names, [summary.policies[n].edge_cloud.latency_s for n in names], color="#457b9d")
    left.set_ylabel("edge-cloud latency per run (s)")
    right.bar(names, [summary.policies[n].edge_cloud.api_cost_usd * 1000 for n in names], color="#e76f51")
    right.set_ylabel("API cost per 1,000 runs (USD)")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=20)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _triggers(summary: Summary) -> str | None:
    import matplotlib.pyplot as plt

    kinds = sorted({k for p in summary.policies.values() for k in p.triggers})
    if not kinds:
        return None
    names = list(summary.policies)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [summary.policies[n].triggers.get(kind, 0) for n in names], width, label=kind)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set_ylabel("count")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _timelines(rows: list[Row], look: _Look) -> str | None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    mixed = [r for r in rows if r.policy in look.mixed and r.steps]
    mixed = mixed[:_MAX_TIMELINES]
    if not mixed:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(mixed) + 1.2))
    for y, row in enumerate(mixed):
        x = 0
        for step in row.steps:
            width = max(1, step.tokens)
            ax.barh(
                y, width, left=x, color=_ROLE_COLOURS.get(step.role, "grey"), edgecolor="white", height=0.7
            )
            mark = look.marks.get(step.trigger or "")
            if mark:
                ax.text(x + 1, y, mark, va="center", fontsize=7, color="white")
            x += width
        ax.text(x + 5, y, "✓" if row.correct else "✗", va="center", color="green" if row.correct else "red")
    ax.set_yticks(range(len(mixed)), [f"{r.problem_id} {r.policy}" for r in mixed], fontsize=7)
    ax.invert_yaxis()
    legend = ", ".join(f"{mark} {kind.replace('_', ' ')}" for kind, mark in look.marks.items())
    ax.set_xlabel(f"committed tokens ({legend})")
    ax.legend(
        handles=[Patch(color=c, label=r.upper()) for r, c in _ROLE_COLOURS.items()],
        loc="upper left",
        bbox_to_anchor=(1.04, 1),
    )
    return _png(fig)
