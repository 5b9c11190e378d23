"""Measure the overhead of session chaining on the local backend.

Runs `kdarts-kernel run search` with a short session limit in a temporary folder and prints, per
session, the wall time from push to finish, the search time the engine reported, the difference
(start-up, resume and outputs), and the time to pull and to publish the checkpoint:

    python tools/measure_chain.py --session-limit 60 --set epochs=2 --set max_steps_per_session=3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--session-limit", default="60", help="session limit in seconds (default 60)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="spec override key=value")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kdarts-chain-") as folder:
        os.environ["KDARTS_HOME"] = str(Path(folder) / "home")
        os.chdir(folder)

        from kdarts.kernel.backends.local import LocalBackend
        from kdarts.kernel.chain import Chain
        from kdarts.kernel.specs import load_spec

        overrides = [
            "layers=3",
            "init_channels=4",
            "nodes=2",
            "batch_size=16",
            "max_train_images=128",
            f"kernel.session_limit={args.session_limit}",
            *args.overrides,
        ]
        spec = load_spec("search", profile="local", overrides=overrides)
        started = time.monotonic()
        final = Chain(spec, LocalBackend(), poll_seconds=0.25).run()
        total = time.monotonic() - started

        print(f"chain {final.state} in {total:.1f} s over {len(final.sessions)} sessions ({' '.join(overrides)})")
        print("session  wall_s  search_s  overhead_s  pull_s  publish_s")
        previous_elapsed = 0.0
        for session in final.sessions:
            status = json.loads((Path(session.output) / "status.json").read_text())
            elapsed = float(status.get("elapsed_seconds") or status.get("search_seconds") or 0.0)
            search = elapsed - previous_elapsed
            previous_elapsed = elapsed
            wall = session.finished_at - session.pushed_at
            pull = session.pulled_at - session.finished_at
            publish = session.published_at - session.pulled_at if session.published_at else 0.0
            print(f"{session.index:7d}  {wall:6.1f}  {search:8.1f}  {wall - search:10.1f}  {pull:6.2f}  {publish:9.2f}")


if __name__ == "__main__":
    main()
