"""Evaluation and calibration: accuracy, SRM token ratio, latency and API cost, with reports."""

from ._calibrate import GridPoint, choose, grid
from ._cost import EdgeCloudModel, edge_cloud
from ._data import DATASETS, Problem, load_problems
from ._grading import grade, numeric_value
from ._matched import matched_comparison, mcnemar_exact_p, replaced_share
from ._pareto import RandomVerdict, beats_random, pareto_front, pareto_summary, random_accuracy_at
from ._report import write_calibration_report, write_report
from ._run import (
    Executor,
    GatewayExecutor,
    InProcessExecutor,
    Outcome,
    complete_rows,
    read_rows,
    run_eval,
    seed_for,
)
from ._summary import summarize

__all__ = [
    "DATASETS",
    "EdgeCloudModel",
    "Executor",
    "GatewayExecutor",
    "GridPoint",
    "InProcessExecutor",
    "Outcome",
    "Problem",
    "RandomVerdict",
    "beats_random",
    "choose",
    "complete_rows",
    "edge_cloud",
    "grade",
    "grid",
    "load_problems",
    "matched_comparison",
    "mcnemar_exact_p",
    "numeric_value",
    "pareto_front",
    "pareto_summary",
    "random_accuracy_at",
    "read_rows",
    "replaced_share",
    "run_eval",
    "seed_for",
    "summarize",
    "write_calibration_report",
    "write_report",
]
