"""`kdarts-kernel emulate`: run the emulator in the foreground until it is interrupted."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
from pathlib import Path
from types import FrameType

from kdarts.errors import KdartsError
from kdarts.fileio import write_json_atomic
from kdarts.kernel.backends.local import default_home
from kdarts.kernel.emulator.server import EmulatorSettings, KaggleEmulator

logger = logging.getLogger(__name__)

CREDENTIAL_VARIABLES = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")


def load_credentials(path: Path, user: str) -> dict[str, str]:
    """Read the kaggle.json the emulator accepts; create it with a random key when it is missing."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump({"username": user, "key": secrets.token_hex(16)}, file)
        logger.info("created emulator credentials for user %s in %s", user, path)
    try:
        data = json.loads(path.read_text())
        return {str(data["username"]): str(data["key"])}
    except (ValueError, KeyError, TypeError) as error:
        raise KdartsError(f"{path} is not a kaggle.json with 'username' and 'key': {error}") from error


def serve(
    *, port: int, root: Path | None, credentials: Path | None, user: str, processing_seconds: float, ready_file: Path | None
) -> None:
    """Start the emulator, print how to point clients at it, and serve until SIGINT or SIGTERM."""
    # Kaggle runs a kernel without its owner's API credentials; kernels started here inherit this
    # process's environment, so credentials set in the shell are dropped first.
    for name in CREDENTIAL_VARIABLES:
        if os.environ.pop(name, None) is not None:
            logger.info("%s is not passed on to emulated kernels", name)
    root = (root or default_home() / "emulator").resolve()
    credentials = (credentials or root / "client" / "kaggle.json").resolve()
    users = load_credentials(credentials, user)
    try:
        emulator = KaggleEmulator(EmulatorSettings(root=root, port=port, users=users, processing_seconds=processing_seconds))
    except OSError as error:
        raise KdartsError(f"cannot listen on 127.0.0.1:{port}: {error}; choose another --port") from error

    print(f"Kaggle emulator on {emulator.url}, state in {root}", flush=True)
    print(f"  kdarts:     export KAGGLE_CONFIG_DIR={credentials.parent} KDARTS_KAGGLE_ENDPOINT={emulator.url}", flush=True)
    print(
        f"  kaggle CLI: export KAGGLE_CONFIG_DIR={credentials.parent} KAGGLE_API_ENVIRONMENT=LOCALHOST HTTP_PROXY={emulator.url}",
        flush=True,
    )
    if ready_file is not None:
        write_json_atomic(ready_file, {"url": emulator.url, "pid": os.getpid(), "config_dir": str(credentials.parent)})

    def stop(signum: int, frame: FrameType | None) -> None:
        emulator.interrupt()

    signal.signal(signal.SIGTERM, stop)
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass
