"""Execute one pushed kernel version of the local backend: `python -m ... <version folder>`.

The worker prepares a Kaggle-like run folder, runs the notebook cell by cell with nbclient, saves
the executed notebook after every cell, appends every output to `log.txt`, and ends by writing
`complete` or `error` (with the failing cell, the error class and message) into `status.json`. The
whole run is held to the session limit: the timeout of each cell is cut to the time left, as
Kaggle stops a session at its limit.
"""

from __future__ import annotations

import json
import logging
import os
import site
import sys
import time
import traceback
import venv
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from kdarts.fileio import write_json_atomic, write_text_atomic
from kdarts.kernel.backends.local import EXECUTED_NOTEBOOK, LOG_FILE, STATUS_FILE, LocalBackend
from kdarts.kernel.render import METADATA_FILE

logger = logging.getLogger("kdarts.kernel.backends.local_worker")


class StreamingNotebookClient(NotebookClient):
    """A NotebookClient that also appends every output of the running cell to a log file."""

    def __init__(self, *args: Any, log_path: Path, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.log_path = log_path

    def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> Any:
        content = msg.get("content", {})
        message_type = msg.get("msg_type")
        text = None
        if message_type == "stream":
            text = content.get("text", "")
        elif message_type == "error":
            text = "\n".join(content.get("traceback", [])) + "\n"
        elif message_type in ("execute_result", "display_data"):
            text = content.get("data", {}).get("text/plain")
            text = text + "\n" if text else None
        if text:
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(text)
        return super().output(outs, msg, display_id, cell_index)


def create_kernel_environment(folder: Path) -> Path:
    """Create a virtual environment that sees this interpreter's packages but not an editable kdarts.

    The environment's `.pth` file lists this interpreter's site-packages folders. Python adds those
    folders to `sys.path` but does not process the `.pth` files inside them, which is how an
    editable install of kdarts is found, so `import kdarts` fails there until the notebook installs
    its embedded wheel. Returns the environment's Python executable.
    """
    venv.EnvBuilder(with_pip=False, clear=True, symlinks=True).create(folder)
    python = folder / "bin" / "python"
    completed = json.loads(
        _run_python(python, "import json, site; print(json.dumps(site.getsitepackages()))")
    )
    target = Path(completed[0])
    parent_site = [path for path in site.getsitepackages() if Path(path).is_dir()]
    (target / "_kdarts_host_packages.pth").write_text("".join(f"{path}\n" for path in parent_site))
    return python


def _run_python(python: Path, code: str) -> str:
    import subprocess

    return subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout


def write_kernelspec(folder: Path, python: Path, name: str) -> Path:
    """Write a Jupyter kernelspec `name` that starts ipykernel with `python`."""
    spec_folder = folder / name
    spec_folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"kdarts local ({name})",
        "language": "python",
        "env": {"KDARTS_LOCAL_RUN": "1", "PYTHONUNBUFFERED": "1"},
    }
    (spec_folder / "kernel.json").write_text(json.dumps(spec, indent=2))
    return folder


def mount_datasets(backend: LocalBackend, sources: list[str], input_folder: Path, kernel_sources: list[str] = ()) -> None:
    """Link each attached dataset's newest version, and each attached kernel's newest complete output,
    as `input/<slug>`, as Kaggle mounts them."""
    input_folder.mkdir(parents=True, exist_ok=True)
    targets = [(source, backend.dataset_path(source)) for source in sources]
    targets += [(source, backend.kernel_output_path(source)) for source in kernel_sources]
    for source, target in targets:
        link = input_folder / source.split("/")[1]
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)


def run(folder: Path) -> int:
    """Execute the kernel version in `folder` and record its final state; return the exit code."""
    status_path = folder / STATUS_FILE
    status: dict[str, Any] = json.loads(status_path.read_text())
    log_path = folder / LOG_FILE
    log_path.touch()

    def update(**changes: Any) -> None:
        status.update(changes)
        write_json_atomic(status_path, status)

    started = time.time()
    update(state="running", started_at=started, worker_pid=os.getpid())
    executed_path = folder / EXECUTED_NOTEBOOK
    notebook = None
    try:
        metadata = json.loads((folder / "bundle" / METADATA_FILE).read_text())
        notebook = nbformat.read(folder / "bundle" / metadata["code_file"], as_version=4)
        backend = LocalBackend(Path(os.environ["KDARTS_LOCAL_STORE"]))

        run_folder = folder / "run"
        working = run_folder / "working"
        working.mkdir(parents=True, exist_ok=True)
        mount_datasets(
            backend, metadata.get("dataset_sources", []), run_folder / "input", metadata.get("kernel_sources", [])
        )
        python = create_kernel_environment(run_folder / "python")
        kernel_name = notebook.metadata.get("kernelspec", {}).get("name", "python3")
        kernels_folder = write_kernelspec(run_folder / "jupyter" / "kernels", python, kernel_name)

        # An asynchronous manager is needed for timeouts: with a blocking client, nbclient's wait for
        # output blocks the event loop, so a silent cell would never reach its timeout.
        manager = AsyncKernelManager(
            kernel_name=kernel_name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_folder)])
        )
        client = StreamingNotebookClient(
            notebook,
            km=manager,
            kernel_name=kernel_name,
            timeout=status.get("cell_timeout") or None,
            resources={"metadata": {"path": str(working)}},
            log_path=log_path,
        )
        result = _execute(client, notebook, executed_path, status, update, started)
    except Exception as error:  # anything else is a failure of the worker, reported as an error
        if notebook is not None:
            write_text_atomic(executed_path, nbformat.writes(notebook))
        with log_path.open("a", encoding="utf-8") as log:
            log.write(traceback.format_exc())
        update(state="error", message=f"the local backend failed: {type(error).__name__}: {error}", finished_at=time.time())
        return 1
    return result


def _execute(client: StreamingNotebookClient, notebook: Any, executed_path: Path, status: dict, update: Any, started: float) -> int:
    limit = status.get("session_limit")
    cell_timeout = status.get("cell_timeout")
    code_cells = [index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    update(cells_total=len(code_cells), cells_done=0)

    with client.setup_kernel():
        for done, index in enumerate(code_cells):
            remaining = None if limit is None else limit - (time.time() - started)
            if remaining is not None and remaining <= 0:
                return _fail(update, executed_path, notebook, index, "SessionLimitExceeded", f"the session limit of {limit:.0f} s was reached")
            limited_by_session = remaining is not None and (cell_timeout is None or remaining < cell_timeout)
            if limited_by_session:
                client.timeout = int(max(1, remaining))
            elif cell_timeout:
                client.timeout = int(cell_timeout)
            else:
                client.timeout = None
            update(cells_done=done, current_cell=index)
            try:
                client.execute_cell(notebook.cells[index], index)
            except CellTimeoutError:
                if limited_by_session:
                    return _fail(update, executed_path, notebook, index, "SessionLimitExceeded", f"the session limit of {limit:.0f} s was reached")
                return _fail(update, executed_path, notebook, index, "CellTimeoutError", f"cell {index} ran longer than the {client.timeout} s cell timeout")
            except DeadKernelError as error:
                return _fail(update, executed_path, notebook, index, "DeadKernelError", f"the kernel died: {error}")
            except CellExecutionError as error:
                return _fail(update, executed_path, notebook, index, error.ename, error.evalue)
            finally:
                write_text_atomic(executed_path, nbformat.writes(notebook))

    update(state="complete", cells_done=len(code_cells), finished_at=time.time())
    return 0


def _fail(update: Any, executed_path: Path, notebook: Any, index: int, name: str, value: str) -> int:
    write_text_atomic(executed_path, nbformat.writes(notebook))
    update(state="error", failing_cell=index, error_name=name, error_value=value, message=f"{name}: {value}", finished_at=time.time())
    return 1


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(run(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
