"""The throughput benchmark side by side against an earlier revision, on this machine, in one run.

A git worktree of ``--rev`` (default 208598a, the first wave's main) is made under a temporary folder and
given its own environment (``uv sync --frozen --all-extras``, quick from uv's cache); then
``bench_throughput.py --quick --levels N`` runs ``--runs`` times in each tree, alternating (old, new, old,
new, ...) so that the machine's load falls on both alike. Printed and written: per revision the median
steps/s and the median CPU milliseconds per committed step of each process, and the ratios of this tree
to the revision. CPU per step is the steadier figure on a shared machine: the time it took, not how fast
the machine happened to be.

    uv run --frozen python bench/side_by_side.py [--rev 208598a] [--runs 3] [--sessions 1000]

Writes bench/results/throughput-side-by-side.json. Exits 1 when a run measured nothing. Not a ``bench_*``
script: ``make bench`` and ``make bench-quick`` (CI) leave it out, since it builds a second environment.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import console, exit_if_empty, write_results
from rich.table import Table

NAME = "throughput-side-by-side"
HERE = Path(__file__).resolve().parent.parent


def _uv() -> str:
    return shutil.which("uv") or str(Path.home() / ".local/bin/uv")


def _one_run(tree: Path, sessions: int) -> dict[str, Any] | None:
    """One run's figures, or None when it wrote none (it failed: its output is printed)."""
    started = time.time()
    cmd = [_uv(), "run", "--frozen", "--no-sync", "python", "bench/bench_throughput.py", "--quick"]
    # A missed target exits 1 in older trees: the figures are what count, read from the file it wrote
    # (newer trees write a --quick run under bench/results/quick/, older ones over the file of record).
    done = subprocess.run([*cmd, "--levels", str(sessions)], cwd=tree, capture_output=True, text=True)
    written = [
        f
        for f in (tree / "bench/results/quick/throughput.json", tree / "bench/results/throughput.json")
        if f.exists() and f.stat().st_mtime >= started
    ]
    if not written:
        console.print(f"[red]the run wrote no results (exit {done.returncode}):[/]\n{done.stdout[-3000:]}")
        console.print(done.stderr[-3000:])
        return None
    level = json.loads(written[0].read_text())["levels"][0]
    steps = level["steps_seen"]
    return {
        "steps_per_s": level["steps_per_s"],
        "cpu_ms_per_step": {k: v * 1000 / steps for k, v in level["cpu_s_by_process"].items()}
        if steps
        else {},
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({k for r in runs for k in r["cpu_ms_per_step"]})
    cpu = {n: statistics.median(r["cpu_ms_per_step"].get(n, 0.0) for r in runs) for n in names}
    return {
        "steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
        "steps_per_s_runs": [round(r["steps_per_s"], 1) for r in runs],
        "cpu_ms_per_step": {n: round(v, 4) for n, v in cpu.items()},
        "cpu_ms_per_step_total": round(sum(cpu.values()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="208598a", help="the revision to compare with")
    ap.add_argument("--runs", type=int, default=3, help="runs per tree (alternating)")
    ap.add_argument("--sessions", type=int, default=1000, help="concurrent sessions of 4 steps")
    args = ap.parse_args()
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.rev], cwd=HERE, capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="trig-side-by-side-"))
    old = work / rev
    try:
        console.print(f"worktree of {rev} in {old}, and its environment (uv sync) ...")
        subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=HERE, check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run([_uv(), "sync", "--frozen", "--all-extras", "--quiet"], cwd=old, check=True)
        trees = {rev: old, f"{head} (this tree)": HERE}
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
        failed = dict.fromkeys(trees, 0)
        for i in range(args.runs):
            for label, tree in trees.items():
                console.print(f"run {i + 1}/{args.runs}: {label} ...")
                run = _one_run(tree, args.sessions)
                if run is None:
                    failed[label] += 1
                    continue
                runs[label].append(run)
                console.print(f"  {run['steps_per_s']:,.0f} steps/s")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=HERE, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    if not all(runs.values()):
        console.print(
            f"[bold red]no run of {[k for k, r in runs.items() if not r]} wrote results: failing[/]"
        )
        raise SystemExit(1)
    med = {label: _medians(r) for label, r in runs.items()}
    old_m, new_m = med[rev], med[f"{head} (this tree)"]
    ratios = {
        "steps_per_s": new_m["steps_per_s"] / old_m["steps_per_s"] if old_m["steps_per_s"] else float("nan"),
        "cpu_ms_per_step_total": (
            new_m["cpu_ms_per_step_total"] / old_m["cpu_ms_per_step_total"]
            if old_m["cpu_ms_per_step_total"]
            else float("nan")
        ),
    }
    table = Table(
        title=f"bench_throughput --quick --levels {args.sessions}, medians of {args.runs} alternating runs"
    )
    table.add_column("")
    for label in med:
        table.add_column(label, justify="right")
    table.add_column("ratio", justify="right")
    table.add_row(
        "steps/s", *(f"{m['steps_per_s']:,.0f}" for m in med.values()), f"{ratios['steps_per_s']:.3f}"
    )
    for name in new_m["cpu_ms_per_step"]:
        a, b = old_m["cpu_ms_per_step"].get(name, 0.0), new_m["cpu_ms_per_step"][name]
        table.add_row(f"CPU ms/step {name}", f"{a:.3f}", f"{b:.3f}", f"{b / a:.3f}" if a else "-")
    table.add_row(
        "CPU ms/step, all",
        *(f"{m['cpu_ms_per_step_total']:.3f}" for m in med.values()),
        f"{ratios['cpu_ms_per_step_total']:.3f}",
    )
    console.print(table)
    path = write_results(
        NAME,
        {
            "settings": {"rev": rev, "head": head, "runs": args.runs, "sessions": args.sessions},
            "failed_runs": failed,
            "medians": med,
            "ratios_this_tree_to_rev": ratios,
        },
    )
    console.print(f"wrote {path}")
    exit_if_empty({f"{label} steps/s": m["steps_per_s"] for label, m in med.items()})


if __name__ == "__main__":
    main()
