"""Session chaining on the local backend: a search carried across several short sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chain_support import OVERRIDES, assert_same_search, reference  # noqa: F401 - fixture

from kdarts.errors import KdartsError
from kdarts.kernel.backends.local import LocalBackend
from kdarts.kernel.chain import Chain, load_chain
from kdarts.kernel.specs import load_spec

pytestmark = pytest.mark.slow

FAULT_STEPS = ("push", "wait", "pull", "publish")


def test_chain_matches_uninterrupted_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_spec("search", overrides=OVERRIDES)
    backend = LocalBackend()

    final = Chain(spec, backend, poll_seconds=0.5, wait_timeout=600).run()

    assert final.state == "complete"
    done = [session for session in final.sessions if session.state == "done"]
    assert len(done) >= 3
    assert [session.kernel_version for session in final.sessions] == backend.versions(final.ref)
    assert done[-1].engine_state == "complete"
    assert_same_search(Path(final.final_output), reference)


def test_chain_survives_sigkill_at_each_step(tmp_path: Path, reference: Path) -> None:
    environment = dict(os.environ)
    environment["KDARTS_CHAIN_FAULT"] = ",".join(FAULT_STEPS)
    environment["KDARTS_CHAIN_FAULT_DIR"] = str(tmp_path / "faults")
    command = [sys.executable, "-m", "kdarts.kernel.cli", "run", "search"]
    for override in OVERRIDES:
        command += ["--set", override]

    exit_codes = []
    for _ in range(len(FAULT_STEPS) + 2):
        completed = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900)
        exit_codes.append(completed.returncode)
        if completed.returncode == 0:
            break

    assert exit_codes[-1] == 0, completed.stderr[-3000:]
    assert exit_codes[:-1] == [-9] * len(FAULT_STEPS)
    fired = sorted(path.name for path in (tmp_path / "faults").iterdir())
    assert fired == sorted(f"fault-{step}" for step in FAULT_STEPS)

    chain = load_chain("search", tmp_path / "runs")
    assert chain is not None
    assert chain.state == "complete"
    backend = LocalBackend()
    versions = [session.kernel_version for session in chain.sessions]
    assert versions == backend.versions(chain.ref), "a session was pushed twice or lost"
    assert all(session.state == "done" for session in chain.sessions)
    for session in chain.sessions:
        assert (Path(session.output) / "status.json").is_file(), f"session {session.index} lost its output"
    pushes = json.loads((tmp_path / "runs" / "search" / "pushes.json").read_text())
    assert [push["version"] for push in pushes] == versions
    assert_same_search(Path(chain.final_output), reference)


def test_chain_replaces_corrupt_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDARTS_CHAIN_FAULT", "publish")
    monkeypatch.setenv("KDARTS_CHAIN_FAULT_DIR", str(tmp_path / "faults"))
    spec = load_spec("search", overrides=OVERRIDES)
    backend = LocalBackend()
    chain = Chain(spec, backend, poll_seconds=0.5, wait_timeout=600)

    # Stop the chain right after its first checkpoint is published, as a crash would, then
    # corrupt that dataset version the way a broken upload could.
    with pytest.raises(SystemExit):
        _run_until_fault(chain)
    checkpoint = sorted((backend.dataset_path(chain.dataset_ref) / "checkpoints").glob("step-*.pt"))[-1]
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))

    monkeypatch.delenv("KDARTS_CHAIN_FAULT")
    final = Chain(spec, backend, poll_seconds=0.5, wait_timeout=600).run()

    assert final.state == "complete"
    failed = [session for session in final.sessions if session.state == "failed"]
    assert len(failed) == 1
    assert "CheckpointError" in (failed[0].error or "")
    assert_same_search(Path(final.final_output), reference)


def test_chain_stops_after_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kernels").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "failing.ipynb.j2").write_text(
        "#%% markdown\n# A kernel that always fails\n#%% code\nraise ValueError('broken on purpose')\n"
    )
    (tmp_path / "kernels" / "failing.toml").write_text(
        '[kernel]\ntemplate = "failing.ipynb.j2"\nslug = "failing-kernel"\ntitle = "failing kernel"\n'
        'session_limit = "60s"\n'
    )
    spec = load_spec("failing")

    final = Chain(spec, LocalBackend(), max_retries=1, poll_seconds=0.5, wait_timeout=300).run()

    assert final.state == "failed"
    assert [session.state for session in final.sessions] == ["failed", "failed"]
    assert "ValueError" in (final.error or "")
    assert "broken on purpose" in (final.error or "")


def _run_until_fault(chain: Chain) -> None:
    # The fault hook kills its own process with SIGKILL; inside pytest it raises SystemExit instead.
    import kdarts.kernel.chain as chain_module

    def stop() -> None:
        raise SystemExit("stopped at a fault step")

    original = chain_module._kill_self
    chain_module._kill_self = stop
    try:
        chain.run()
    finally:
        chain_module._kill_self = original


def test_chain_refuses_other_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    backend = LocalBackend()
    Chain(load_spec("search", overrides=OVERRIDES), backend)

    with pytest.raises(KdartsError) as raised:
        Chain(load_spec("search", overrides=[*OVERRIDES, "epochs=3"]), backend)

    message = str(raised.value)
    assert "params.epochs: 2 then, 3 now" in message
    assert "--new" in message


def test_chain_new_archives_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    backend = LocalBackend()
    Chain(load_spec("search", overrides=OVERRIDES), backend)

    chain = Chain(load_spec("search", overrides=[*OVERRIDES, "epochs=3"]), backend, new=True)

    assert chain.state.settings["params"]["epochs"] == 3
    archived = list((tmp_path / "runs" / "search").glob("chain-*.json"))
    assert len(archived) == 1
    assert json.loads(archived[0].read_text())["settings"]["params"]["epochs"] == 2
