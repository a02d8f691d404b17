"""Evaluation and calibration: accuracy, SRM token ratio, latency and API cost, with reports.

Everything ``trigreason eval`` and ``trigreason calibrate`` do lives here, on typed rows (``Row``,
``Summary``, ``Profile``); the CLI only parses flags and prints."""

from ._calibrate import GridPoint, ParamValue, Point, choose, grid, point_slug
from ._calibration import (
    BEATS_RANDOM_RULE,
    Calibration,
    CalibrationPlan,
    CalibrationRuns,
    Profile,
    Progress,
    calibration_profile,
    grid_axes,
    no_progress,
    plan_calibration,
    run_calibration,
)
from ._cost import EdgeCloudModel, edge_cloud
from ._data import DATASETS, Problem, load_problems
from ._evaluate import (
    check_policies,
    check_via,
    default_policies,
    evaluate,
    evaluated_policies,
    open_executor,
    stored_rows,
)
from ._grading import grade, numeric_value
from ._matched import MatchedComparison, matched_comparison, replaced_share
from ._paired import (
    PairedVerdict,
    discordant_pairs_needed,
    mcnemar_exact_p,
    paired_difference_interval,
    paired_verdict,
)
from ._pareto import (
    GridEntry,
    ParetoSummary,
    RandomVerdict,
    beats_random,
    pareto_front,
    pareto_summary,
    random_accuracy_at,
)
from ._report import write_calibration_report, write_report
from ._rows import Row, StepRow, read_rows, write_json
from ._run import (
    Executor,
    GatewayExecutor,
    InProcessExecutor,
    OnProgress,
    Outcome,
    complete_rows,
    run_eval,
    seed_for,
)
from ._summary import EdgeCloudFigures, PolicySummary, Summary, summarize

__all__ = [
    "BEATS_RANDOM_RULE",
    "DATASETS",
    "Calibration",
    "CalibrationPlan",
    "CalibrationRuns",
    "EdgeCloudFigures",
    "EdgeCloudModel",
    "Executor",
    "GatewayExecutor",
    "GridEntry",
    "GridPoint",
    "InProcessExecutor",
    "MatchedComparison",
    "OnProgress",
    "Outcome",
    "PairedVerdict",
    "ParamValue",
    "ParetoSummary",
    "Point",
    "PolicySummary",
    "Problem",
    "Profile",
    "Progress",
    "RandomVerdict",
    "Row",
    "StepRow",
    "Summary",
    "beats_random",
    "calibration_profile",
    "check_policies",
    "check_via",
    "choose",
    "complete_rows",
    "default_policies",
    "discordant_pairs_needed",
    "edge_cloud",
    "evaluate",
    "evaluated_policies",
    "grade",
    "grid",
    "grid_axes",
    "load_problems",
    "matched_comparison",
    "mcnemar_exact_p",
    "no_progress",
    "numeric_value",
    "open_executor",
    "paired_difference_interval",
    "paired_verdict",
    "pareto_front",
    "pareto_summary",
    "plan_calibration",
    "point_slug",
    "random_accuracy_at",
    "read_rows",
    "replaced_share",
    "run_calibration",
    "run_eval",
    "seed_for",
    "stored_rows",
    "summarize",
    "write_calibration_report",
    "write_json",
    "write_report",
]
