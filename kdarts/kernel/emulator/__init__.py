"""A Kaggle-compatible server for tests and offline use: `kdarts-kernel emulate`.

It serves the RPCs the `kaggle` client uses for kernels, datasets and blob uploads, runs pushed
kernels with the local backend, and injects faults (rate limits, server errors, dropped
connections, slow processing, stale statuses) on request. See docs/kaggle.md.
"""

from kdarts.kernel.emulator.faults import Fault, FaultPlan, RequestRecord
from kdarts.kernel.emulator.server import EmulatorSettings, KaggleEmulator

__all__ = ["EmulatorSettings", "Fault", "FaultPlan", "KaggleEmulator", "RequestRecord"]
