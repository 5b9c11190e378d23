"""Faults the emulator injects on request, so tests can see how a client copes with them.

A fault names what it hits (`target`: an RPC method such as `GetKernelSessionStatus`, `upload`
for blob uploads, `download` for output file downloads, or `*` for every RPC) and how many
requests it hits (`times`). The emulator also keeps a log of the requests it served, which tests
read to check what a client sent.
"""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["rate_limit", "server_error", "drop", "reject_credentials", "stale_status", "slow_processing", "queue", "extra_output"]

FAULT_HELP = {
    "rate_limit": "answer HTTP 429 with a Retry-After of `retry_after` seconds",
    "server_error": "answer HTTP `status` (a 5xx, 500 by default)",
    "drop": "close the connection without an answer (an upload first reads `after_bytes` of its body)",
    "reject_credentials": "answer HTTP 401, as Kaggle does for a credential it no longer accepts",
    "stale_status": "answer an unpinned GetKernelSessionStatus with the previous version's status",
    "slow_processing": "keep the next dataset versions processing for `seconds`",
    "queue": "keep the next pushed kernel versions queued for `seconds` before they run",
    "extra_output": "add an entry `file_name` holding `content` to the next output listings",
}
# Faults that respond to a request in place of the emulator. The others change what the emulator does.
TRANSPORT_KINDS: frozenset[str] = frozenset({"rate_limit", "server_error", "drop", "reject_credentials"})


class Fault(BaseModel):
    """One injected fault and how many more requests it hits."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    target: str = "*"
    times: int = Field(1, ge=1)
    retry_after: float = Field(1.0, ge=0, description="seconds, for rate_limit")
    status: int = Field(500, ge=500, le=599, description="HTTP status, for server_error")
    seconds: float = Field(0.0, ge=0, description="for slow_processing and queue")
    after_bytes: int | None = Field(None, ge=0, description="for drop on upload")
    file_name: str | None = None
    content: str = ""

    def matches(self, target: str) -> bool:
        return self.target == target or (self.target == "*" and target not in ("upload", "download"))


class RequestRecord(BaseModel):
    """One served request, as the request log keeps it."""

    time: float
    method: str
    target: str
    path: str
    status: int | None
    content_range: str | None = None
    version_label: str | None = None
    fault: str | None = None


class FaultPlan:
    """The faults still to inject and the log of served requests; safe to use from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[RequestRecord] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return [fault.model_copy() for fault in self._faults]

    def take(self, target: str, kinds: frozenset[str] | set[str]) -> Fault | None:
        """Use up one hit of the first fault of one of `kinds` that matches `target`."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.matches(target):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault.model_copy()
        return None

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
