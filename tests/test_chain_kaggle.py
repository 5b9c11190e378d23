"""Session chaining through the Kaggle backend, against the Kaggle-compatible local server."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain_support import OVERRIDES, assert_same_search, reference  # noqa: F401 - fixture
from kaggle_support import FAST_RETRY, Emulator, emulator, kaggle_env  # noqa: F401 - fixtures
from kdarts.kernel.backends.kaggle import KaggleBackend
from kdarts.kernel.chain import Chain
from kdarts.kernel.specs import load_spec

pytestmark = pytest.mark.slow


def test_chain_through_kaggle_matches_uninterrupted(
    emulator: Emulator, kaggle_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_spec("search", profile="local", overrides=OVERRIDES)
    backend = KaggleBackend(retry=FAST_RETRY, dataset_timeout=60.0)

    final = Chain(spec, backend, poll_seconds=0.5, wait_timeout=600).run()

    assert final.state == "complete"
    done = [session for session in final.sessions if session.state == "done"]
    assert len(done) >= 3
    versions = [session.kernel_version for session in final.sessions]
    assert versions == list(range(1, len(versions) + 1))
    checkpoint_versions = [session.checkpoint_out for session in done[:-1]]
    assert checkpoint_versions == sorted(set(checkpoint_versions))
    assert [session.checkpoint_in for session in done[1:]] == checkpoint_versions
    assert_same_search(Path(final.final_output), reference)
