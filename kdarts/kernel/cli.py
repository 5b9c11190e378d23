"""The generator's command line, `kdarts-kernel`: render, push, status, pull and list kernels."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from kdarts.errors import KdartsError

app = typer.Typer(
    help="kdarts kernel generator: render notebooks from kernel specs, run them locally or on Kaggle, pull results.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
_state = {"debug": False}

ProfileOption = Annotated[Optional[str], typer.Option("--profile", help="Spec profile to apply (default: the spec's default_profile).")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Override a parameter for this run, as key=value; repeatable.")]
BackendOption = Annotated[str, typer.Option("--backend", help="Where to run: local (this machine) or kaggle.")]


@app.callback()
def _configure(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The wheel library logs every file it adds to the embedded wheel.
    logging.getLogger("wheel").setLevel(logging.WARNING)


@app.command()
def render(
    name: Annotated[str, typer.Argument(help="Kernel spec name (for example 'search') or a .toml path.")],
    target: Annotated[str, typer.Option(help="Notebook variant: kaggle or colab.")] = "kaggle",
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write the bundle <slug>/ into.")] = Path("build/kernels"),
    owner: Annotated[str, typer.Option(help="Kaggle user that owns the kernel and its datasets.")] = "local",
    profile: ProfileOption = None,
    set_values: SetOption = None,
) -> None:
    """Render a kernel spec into a bundle folder that `kaggle kernels push -p` accepts."""
    from kdarts.kernel.render import write_bundle
    from kdarts.kernel.specs import load_spec

    if target not in ("kaggle", "colab"):
        raise KdartsError(f"invalid --target {target!r}; use kaggle or colab")
    spec = load_spec(name, profile=profile, overrides=set_values)
    bundle = write_bundle(spec, output, owner=owner, target=target)  # type: ignore[arg-type]
    typer.echo(f"{bundle.notebook} ({bundle.size:,} bytes)")


@app.command()
def push(
    name: Annotated[str, typer.Argument(help="Kernel spec name, for example 'search'.")],
    backend_name: BackendOption = "local",
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until it ends, then pull its output.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="With --wait: give up after this many seconds.")] = None,
    profile: ProfileOption = None,
    set_values: SetOption = None,
) -> None:
    """Render a kernel and push it as a new version; with --wait, follow it and pull the result."""
    from kdarts.kernel.backends import get_backend
    from kdarts.kernel.jobs import pull_kernel, push_kernel
    from kdarts.kernel.specs import load_spec

    spec = load_spec(name, profile=profile, overrides=set_values)
    backend = get_backend(backend_name)
    record = push_kernel(spec, backend)
    typer.echo(f"pushed {record.ref} version {record.version} to the {backend.name} backend")
    if not wait:
        typer.echo(f"follow it with: kdarts-kernel status {spec.name}")
        return

    status = _follow(backend, record.ref, record.version, timeout)
    target = pull_kernel(backend, record)
    typer.echo(f"output of version {record.version} pulled into {target}")
    if status.state != "complete":
        raise KdartsError(f"{status.describe()}; see {target / 'log.txt'}")


def _follow(backend, ref: str, version: int, timeout: float | None):
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from kdarts.kernel.jobs import wait_for_kernel

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} cells"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"{ref} v{version}: queued", total=None)

        def show(status) -> None:
            progress.update(
                task,
                description=f"{ref} v{version}: {status.state}",
                completed=status.cells_done or 0,
                total=status.cells_total,
            )

        return wait_for_kernel(backend, ref, version, timeout=timeout, on_status=show)


@app.command()
def status(
    name: Annotated[str, typer.Argument(help="Kernel spec name.")],
    version: Annotated[Optional[int], typer.Option(help="Version to show (default: the newest push).")] = None,
) -> None:
    """Show the status of a pushed kernel version."""
    from kdarts.kernel.backends import get_backend
    from kdarts.kernel.jobs import latest_push

    record = latest_push(name, version=version)
    backend = get_backend(record.backend)
    typer.echo(backend.status(record.ref, record.version).describe())


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="Kernel spec name.")],
    version: Annotated[Optional[int], typer.Option(help="Version to pull (default: the newest push).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Folder to pull into (default: runs/<kernel>/v<N>).")] = None,
) -> None:
    """Download a kernel version's output, executed notebook and log, and verify the manifest."""
    from kdarts.kernel.backends import get_backend
    from kdarts.kernel.jobs import latest_push, pull_kernel

    record = latest_push(name, version=version)
    backend = get_backend(record.backend)
    status = backend.status(record.ref, record.version)
    if not status.terminal:
        raise KdartsError(f"{status.describe()}; pull it once it has finished (kdarts-kernel status {name})")
    target = pull_kernel(backend, record, output)
    typer.echo(f"{status.describe()}\noutput pulled into {target}")


@app.command("list")
def list_kernels() -> None:
    """List the kernel specs this folder sees (./kernels first, then the built-in ones)."""
    from kdarts.kernel.specs import list_specs

    for name, path in list_specs().items():
        typer.echo(f"{name}\t{path}")


def main() -> None:
    """Run the CLI; a kdarts error prints one line and the exit status is 1 (tracebacks with --debug)."""
    try:
        app()
    except KdartsError as error:
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
