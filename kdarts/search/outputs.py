"""Files a search writes into its output folder, each rewritten atomically.

- `status.json`: `state` is `complete` or `incomplete`, with the progress a caller needs to decide
  whether to resume. Its fields: `reason` (`starting`, `running`, `time budget`, `step limit` or
  `finished`), `epochs_done`, `epochs`, `step_in_epoch`, `steps_per_epoch`, `global_step`,
  `total_steps`, `checkpoint` (the newest checkpoint's file name, or null once complete),
  `elapsed_seconds` (over all sessions), `session_steps`, `device_settings`, `config` (the
  search settings) and `updated_at` (UTC). A complete search adds `validation_accuracy` and
  `warnings` (the plan report's warnings). A `starting` status has only the epoch counts.
- `metrics.jsonl`: one JSON object per finished epoch: `epoch`, `learning_rate`, `train_loss`,
  `train_accuracy`, `arch_loss`, `arch_accuracy`, `seconds` (time in steps) and
  `images_per_second` (weight and architecture images together);
- `alphas.json`: the current architecture parameters in the plan tools' alphas format;
- `alphas-history.jsonl`: the alphas after every epoch, each with its `epoch`;
- `plan.json`: the derived plan, once the search is complete;
- `report.json`: the plan's per-cell operation histograms, warnings and text summary (complete);
- `curves.png` and `cells.png`: the training curves and the two cells (complete).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from kdarts.fileio import write_json_atomic, write_text_atomic
from kdarts.plan import Plan, PlanReport, format_plan, plan_report

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
ALPHAS_FILE = "alphas.json"
ALPHAS_HISTORY_FILE = "alphas-history.jsonl"
PLAN_FILE = "plan.json"
REPORT_FILE = "report.json"
CURVES_FILE = "curves.png"
CELLS_FILE = "cells.png"

SearchState = Literal["complete", "incomplete"]


def write_status(output: Path, state: SearchState, **progress: Any) -> None:
    """Write `status.json` with the state, the progress fields and the time of writing."""
    status = {"state": state, **progress, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(Path(output) / STATUS_FILE, status)


def read_status(output: Path) -> dict[str, Any] | None:
    """Return the parsed `status.json` of a search output folder, or None when it has none."""
    path = Path(output) / STATUS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_json_lines(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite a JSON-lines file from the full list, so a resumed search never duplicates a line."""
    write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in records))


def write_report(output: Path, plan: Plan, *, max_skip_connections: int) -> PlanReport:
    """Write `report.json`: the plan's operation histograms, its warnings and its text summary."""
    report = plan_report(plan, max_skip_connections=max_skip_connections)
    text = format_plan(plan, max_skip_connections=max_skip_connections)
    write_json_atomic(
        Path(output) / REPORT_FILE,
        {**report.model_dump(mode="json"), "max_skip_connections": max_skip_connections, "text": text},
    )
    return report
