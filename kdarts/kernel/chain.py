"""Chain kernel sessions across the platform's time limit through a checkpoint dataset.

`Chain.run` pushes a kernel, waits for it, pulls its output and reads the engine's `status.json`.
While the engine reports `incomplete` (it stopped at its time budget), the newest checkpoint is
verified against the output's manifest and published as a new version of the chain's checkpoint
dataset. The next session is pushed with that dataset attached, and the notebook verifies the
checkpoint again before it resumes. Once the engine reports `complete`, the chain is done.

The orchestrator's own state lives in `runs/<kernel>/chain.json`, rewritten atomically after
every step. Each step that talks to the backend is recorded before it starts and after it ends,
so a `run` stopped at any moment (Ctrl-C, SIGKILL, a lost network) and started again picks up
where it was: a push or a dataset version that went through before the stop is found on the
backend and adopted instead of being made twice.

A session that fails never replaces the last good checkpoint. It is retried from that
checkpoint up to `max_retries` times, after which the chain stops with the failing cell's error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from kdarts.errors import BackendError, KdartsError
from kdarts.fileio import write_json_atomic
from kdarts.kernel.backends import Backend, KernelStatus
from kdarts.kernel.jobs import (
    PushRecord,
    output_folder,
    pull_kernel,
    push_kernel,
    record_push,
    recorded_versions,
    runs_folder,
    wait_for_kernel,
)
from kdarts.kernel.specs import KernelSpec
from kdarts.runtime import MANIFEST_FILE, verify_manifest, write_manifest

logger = logging.getLogger(__name__)

CHAIN_FILE = "chain.json"
CHECKPOINT_SUFFIX = "-ckpt"
# Test hook: a comma-separated list of step names at which `run` kills itself with SIGKILL, once
# each, to prove that a restart loses nothing. Markers in KDARTS_CHAIN_FAULT_DIR record which fired.
FAULT_VARIABLE = "KDARTS_CHAIN_FAULT"
FAULT_DIR_VARIABLE = "KDARTS_CHAIN_FAULT_DIR"

SessionState = Literal["planned", "pushing", "pushed", "finished", "pulled", "publishing", "done", "failed"]


class Session(BaseModel):
    """One platform session of the chain."""

    index: int
    state: SessionState = "planned"
    checkpoint_in: int | None = Field(None, description="checkpoint dataset version the session resumes from")
    versions_before: int | None = Field(None, description="newest kernel version before this session's push")
    kernel_version: int | None = None
    kernel_state: str | None = None
    error: str | None = None
    output: str | None = None
    epochs_done: int | None = None
    engine_state: str | None = None
    dataset_versions_before: int | None = None
    checkpoint_out: int | None = None
    pushed_at: float | None = None
    finished_at: float | None = None
    pulled_at: float | None = None
    published_at: float | None = None


class ChainState(BaseModel):
    """Everything `run` needs to continue a chain: the sessions so far and the last good checkpoint."""

    kernel: str
    backend: str
    ref: str | None = None
    checkpoint_dataset: str
    profile: str | None = None
    overrides: list[str] = Field(default_factory=list)
    state: Literal["running", "complete", "failed"] = "running"
    sessions: list[Session] = Field(default_factory=list)
    retries: int = 0
    last_good_checkpoint: int | None = None
    last_good_folder: str | None = None
    epochs: int | None = None
    settings: dict[str, Any] = Field(default_factory=dict, description="the spec's kernel settings and parameters")
    final_output: str | None = None
    error: str | None = None


def chain_path(kernel: str, runs_root: Path | None = None) -> Path:
    return runs_folder(kernel, runs_root) / CHAIN_FILE


def load_chain(kernel: str, runs_root: Path | None = None) -> ChainState | None:
    """Return the saved chain of `kernel`, or None when it was never run."""
    path = chain_path(kernel, runs_root)
    if not path.is_file():
        return None
    try:
        return ChainState.model_validate_json(path.read_text())
    except ValueError as error:
        raise KdartsError(f"{path} is not a valid chain state ({error}); move it away to start a new chain") from error


def save_chain(chain: ChainState, runs_root: Path | None = None) -> None:
    write_json_atomic(chain_path(chain.kernel, runs_root), chain.model_dump(mode="json"))


def checkpoint_dataset_ref(spec: KernelSpec, owner: str) -> str:
    """Return the chain's checkpoint dataset, `owner/<kernel slug>-ckpt`."""
    slug = spec.kernel.slug[: 50 - len(CHECKPOINT_SUFFIX)] + CHECKPOINT_SUFFIX
    return f"{owner}/{slug}"


def _fault(step: str) -> None:
    requested = [name.strip() for name in os.environ.get(FAULT_VARIABLE, "").split(",") if name.strip()]
    if step not in requested:
        return
    marker_folder = Path(os.environ.get(FAULT_DIR_VARIABLE, "."))
    marker = marker_folder / f"fault-{step}"
    if marker.exists():
        return
    marker_folder.mkdir(parents=True, exist_ok=True)
    marker.write_text("fired\n")
    logger.warning("test fault: killing this process with SIGKILL at step %r", step)
    _kill_self()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Chain:
    """Drive the sessions of one kernel until its engine reports `complete`."""

    def __init__(
        self,
        spec: KernelSpec,
        backend: Backend,
        *,
        runs_root: Path | None = None,
        max_retries: int = 2,
        wait_timeout: float | None = None,
        poll_seconds: float = 2.0,
        on_status: Callable[[Session, KernelStatus], None] | None = None,
        new: bool = False,
    ):
        self.spec = spec
        self.backend = backend
        self.runs_root = runs_root
        self.max_retries = max_retries
        self.wait_timeout = wait_timeout
        self.poll_seconds = poll_seconds
        self.on_status = on_status
        self.new = new
        self.dataset_ref = checkpoint_dataset_ref(spec, backend.owner)
        self.state = self._load_or_create()

    def _settings(self) -> dict[str, Any]:
        return {"kernel": self.spec.kernel.model_dump(mode="json"), "params": self.spec.params}

    def _load_or_create(self) -> ChainState:
        existing = load_chain(self.spec.name, self.runs_root)
        if existing is not None and existing.state == "running" and not self.new:
            if existing.backend != self.backend.name:
                raise KdartsError(
                    f"the chain of {self.spec.name!r} runs on the {existing.backend} backend, not "
                    f"{self.backend.name}; continue it with --backend {existing.backend}, or start a new one with --new"
                )
            changed = _changed_settings(existing.settings, self._settings())
            if changed:
                raise KdartsError(
                    f"the chain of {self.spec.name!r} in progress was started with other settings "
                    f"({'; '.join(changed)}); continue it with the same --profile and --set values, "
                    "or start a new chain with --new"
                )
            logger.info("continuing the chain of %s at session %d", self.spec.name, len(existing.sessions))
            return existing
        if existing is not None:
            archived = chain_path(self.spec.name, self.runs_root).with_name(f"chain-{int(time.time())}.json")
            shutil.move(chain_path(self.spec.name, self.runs_root), archived)
            logger.info("the previous chain of %s (%s) was archived as %s", self.spec.name, existing.state, archived.name)
        state = ChainState(
            kernel=self.spec.name,
            backend=self.backend.name,
            checkpoint_dataset=self.dataset_ref,
            profile=self.spec.profile,
            epochs=self.spec.params.get("epochs"),
            settings=self._settings(),
        )
        save_chain(state, self.runs_root)
        return state

    def _save(self) -> None:
        save_chain(self.state, self.runs_root)

    # The loop -----------------------------------------------------------------------------------

    def run(self) -> ChainState:
        """Advance the chain until it is complete or has failed, and return its final state."""
        while self.state.state == "running":
            session = self._current_session()
            self._advance(session)
        return self.state

    def _current_session(self) -> Session:
        if not self.state.sessions or self.state.sessions[-1].state in ("done", "failed"):
            session = Session(index=len(self.state.sessions) + 1, checkpoint_in=self.state.last_good_checkpoint)
            self.state.sessions.append(session)
            self._save()
        return self.state.sessions[-1]

    def _advance(self, session: Session) -> None:
        steps: dict[str, Callable[[Session], None]] = {
            "planned": self._push,
            "pushing": self._push,
            "pushed": self._wait,
            "finished": self._pull,
            "pulled": self._decide,
            "publishing": self._publish,
        }
        steps[session.state](session)

    def _session_spec(self, session: Session) -> KernelSpec:
        if session.checkpoint_in is None:
            return self.spec
        kernel = self.spec.kernel.model_copy(update={"datasets": [*self.spec.kernel.datasets, self.dataset_ref]})
        params = {**self.spec.params, "resume_dataset_slug": self.dataset_ref.split("/")[1]}
        return self.spec.model_copy(update={"kernel": kernel, "params": params})

    def _push(self, session: Session) -> None:
        spec = self._session_spec(session)
        ref = f"{self.backend.owner}/{spec.kernel.slug}"
        if session.state == "pushing":
            latest = self.backend.latest_version(ref)
            if latest is not None and (session.versions_before is None or latest > session.versions_before):
                # The push went through before this process stopped: adopt it instead of pushing twice.
                logger.info("session %d: adopting version %d of %s pushed before the restart", session.index, latest, ref)
                if latest not in recorded_versions(self.spec.name, self.runs_root):
                    record_push(PushRecord(self.spec.name, self.backend.name, ref, latest, time.time()), self.runs_root)
                self._mark_pushed(session, ref, latest)
                return

        session.versions_before = self.backend.latest_version(ref)
        session.state = "pushing"
        self._save()
        record = push_kernel(spec, self.backend, runs_root=self.runs_root)
        _fault("push")
        logger.info("session %d: pushed %s version %d", session.index, record.ref, record.version)
        self._mark_pushed(session, record.ref, record.version)

    def _mark_pushed(self, session: Session, ref: str, version: int) -> None:
        self.state.ref = ref
        session.kernel_version = version
        session.pushed_at = time.time()
        session.state = "pushed"
        self._save()

    def _wait(self, session: Session) -> None:
        assert self.state.ref is not None and session.kernel_version is not None
        fired = False

        def report(status: KernelStatus) -> None:
            nonlocal fired
            if self.on_status is not None:
                self.on_status(session, status)
            if not fired:
                fired = True
                _fault("wait")

        status = wait_for_kernel(
            self.backend,
            self.state.ref,
            session.kernel_version,
            timeout=self.wait_timeout,
            poll_seconds=self.poll_seconds,
            on_status=report,
            kernel_name=self.spec.name,
        )
        session.kernel_state = status.state
        session.error = None if status.state == "complete" else status.describe()
        session.finished_at = time.time()
        session.state = "finished"
        self._save()

    def _pull(self, session: Session) -> None:
        assert self.state.ref is not None and session.kernel_version is not None
        record = PushRecord(self.spec.name, self.backend.name, self.state.ref, session.kernel_version, time.time())
        target = output_folder(record, self.runs_root)
        try:
            pull_kernel(self.backend, record, target, runs_root=self.runs_root)
        except BackendError as error:
            if session.kernel_state == "complete":
                raise
            logger.warning("session %d: the output of the failed session could not be verified: %s", session.index, error)
        _fault("pull")
        session.output = str(target.resolve())
        session.pulled_at = time.time()
        session.state = "pulled"
        self._save()

    def _decide(self, session: Session) -> None:
        output = Path(session.output or "")
        engine_status = _read_engine_status(output)
        session.engine_state = engine_status.get("state") if engine_status else None
        session.epochs_done = engine_status.get("epochs_done") if engine_status else None

        if session.kernel_state != "complete" or engine_status is None:
            self._session_failed(session, session.error or f"the session wrote no status.json into {output}")
            return
        if session.engine_state == "complete":
            session.state = "done"
            self.state.state = "complete"
            self.state.final_output = str(output)
            self._save()
            logger.info("chain of %s complete after %d session(s); results in %s", self.spec.name, session.index, output)
            return

        try:
            self._stage_checkpoint(session, output)
        except KdartsError as error:
            self._session_failed(session, f"its checkpoint is unusable: {error}")
            return
        session.dataset_versions_before = self.backend.latest_dataset_version(self.dataset_ref)
        session.state = "publishing"
        self._save()

    def _stage_checkpoint(self, session: Session, output: Path) -> Path:
        """Copy the newest checkpoint and the engine status into a folder with its own manifest."""
        verify_manifest(output)
        checkpoints = sorted((output / "checkpoints").glob("step-*.pt"))
        if not checkpoints:
            raise KdartsError(f"{output / 'checkpoints'} contains no checkpoint")
        newest = checkpoints[-1]
        staging = runs_folder(self.spec.name, self.runs_root) / "chain" / f"checkpoint-s{session.index}"
        if staging.exists():
            shutil.rmtree(staging)
        (staging / "checkpoints").mkdir(parents=True)
        for path in (newest, newest.with_name(newest.name + ".sha256")):
            shutil.copy2(path, staging / "checkpoints" / path.name)
        shutil.copy2(output / "status.json", staging / "status.json")
        write_manifest(staging)
        return staging

    def _publish(self, session: Session) -> None:
        staging = runs_folder(self.spec.name, self.runs_root) / "chain" / f"checkpoint-s{session.index}"
        latest = self.backend.latest_dataset_version(self.dataset_ref)
        before = session.dataset_versions_before
        if latest is not None and (before is None or latest > before):
            logger.info("session %d: adopting checkpoint version %d published before the restart", session.index, latest)
            version = latest
        else:
            verify_manifest(staging)
            title = f"{self.spec.kernel.slug} checkpoints"[:50]
            published = self.backend.publish_dataset(
                self.dataset_ref, staging, title=title, message=f"session {session.index}, {session.epochs_done} epochs"
            )
            _fault("publish")
            version = published.version
        self.backend.wait_dataset_ready(self.dataset_ref, version)

        session.checkpoint_out = version
        session.published_at = time.time()
        session.state = "done"
        self.state.last_good_checkpoint = version
        self.state.last_good_folder = str(staging.resolve())
        self.state.retries = 0
        self._save()
        logger.info("session %d: checkpoint published as %s version %d", session.index, self.dataset_ref, version)

    def _session_failed(self, session: Session, reason: str) -> None:
        session.state = "failed"
        session.error = reason
        self.state.retries += 1
        if self.state.retries > self.max_retries:
            self.state.state = "failed"
            self.state.error = f"session {session.index} failed and {self.max_retries} retries are used up: {reason}"
            logger.error("chain of %s stopped: %s", self.spec.name, self.state.error)
        else:
            logger.warning(
                "session %d failed (%s); retry %d of %d from checkpoint version %s",
                session.index,
                reason,
                self.state.retries,
                self.max_retries,
                self.state.last_good_checkpoint,
            )
            self._republish_last_good_if_needed(session)
        self._save()

    def _republish_last_good_if_needed(self, session: Session) -> None:
        # A session that failed while verifying its input checkpoint points at a bad dataset
        # version, so the retry gets a fresh copy of the last good checkpoint.
        if self.state.last_good_folder is None or "CheckpointError" not in (session.error or ""):
            return
        staging = Path(self.state.last_good_folder)
        verify_manifest(staging)
        published = self.backend.publish_dataset(
            self.dataset_ref, staging, title=f"{self.spec.kernel.slug} checkpoints"[:50], message="republished after a failed session"
        )
        self.backend.wait_dataset_ready(self.dataset_ref, published.version)
        self.state.last_good_checkpoint = published.version


def _changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    changed = []
    for table in ("kernel", "params"):
        before, now = saved.get(table, {}), current.get(table, {})
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key):
                changed.append(f"{table}.{key}: {json.dumps(before.get(key))} then, {json.dumps(now.get(key))} now")
    return changed


def _read_engine_status(output: Path) -> dict[str, Any] | None:
    path = output / "status.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def describe_chain(chain: ChainState) -> str:
    """Return the chain as text: one line per session and an estimate of the sessions left."""
    state = "in progress" if chain.state == "running" else chain.state
    lines = [f"chain of {chain.kernel} on {chain.backend}: {state}" + (f" ({chain.error})" if chain.error else "")]
    if chain.state == "running":
        lines.append(f"  (if `kdarts-kernel run {chain.kernel}` is not running, run it again to continue)")
    for session in chain.sessions:
        duration = ""
        if session.pushed_at and session.finished_at:
            duration = f", {session.finished_at - session.pushed_at:.0f} s"
        epochs = ""
        if session.epochs_done is not None:
            epochs = f", {session.epochs_done} epoch{'s' if session.epochs_done != 1 else ''} done"
        checkpoint_in = f", from checkpoint v{session.checkpoint_in}" if session.checkpoint_in else ""
        checkpoint_out = f", checkpoint v{session.checkpoint_out}" if session.checkpoint_out else ""
        version = f"kernel v{session.kernel_version}" if session.kernel_version else "not pushed yet"
        lines.append(
            f"  session {session.index}: {session.state} ({version}{duration}{epochs}{checkpoint_in}{checkpoint_out})"
        )
        if session.error and session.state == "failed":
            lines.append(f"    error: {session.error}")
    remaining = estimate_remaining_sessions(chain)
    if chain.state == "running" and remaining is not None:
        lines.append(f"  estimated sessions left: {remaining}")
    return "\n".join(lines)


def estimate_remaining_sessions(chain: ChainState) -> int | None:
    """Estimate the sessions still needed from the epochs the finished sessions managed on average."""
    done = [session for session in chain.sessions if session.state == "done" and session.epochs_done is not None]
    if not done or not chain.epochs:
        return None
    epochs_done = max(session.epochs_done or 0 for session in done)
    per_session = epochs_done / len(done)
    if per_session <= 0:
        return None
    remaining_epochs = max(chain.epochs - epochs_done, 0)
    return int(-(-remaining_epochs // per_session))
