"""Files a search writes into its output folder, each rewritten atomically.

- `status.json`: `state` is `complete` or `incomplete`, with the progress a caller needs to decide
  whether to resume (epochs and steps done, the newest checkpoint, why the session stopped);
- `metrics.jsonl`: one JSON object per finished epoch;
- `alphas.json`: the current architecture parameters in the plan tools' alphas format;
- `alphas-history.jsonl`: the alphas after every epoch;
- `plan.json`: the derived plan, once the search is complete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from kdarts.fileio import write_json_atomic, write_text_atomic

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
ALPHAS_FILE = "alphas.json"
ALPHAS_HISTORY_FILE = "alphas-history.jsonl"
PLAN_FILE = "plan.json"

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
