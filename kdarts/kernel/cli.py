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

ProfileOption = Annotated[
    Optional[str],
    typer.Option("--profile", help="Spec profile to apply (default: the profile named after the backend or target, else the spec's default_profile)."),
]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Override a parameter for this run, as key=value; repeatable.")]
BackendOption = Annotated[str, typer.Option("--backend", help="Where to run: local (this machine), kaggle, or colab (uploads to Google Drive).")]


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


def default_owner() -> str:
    """Return the Kaggle user name from KAGGLE_USERNAME or kaggle.json, without contacting Kaggle."""
    import json
    import os

    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    try:
        username = json.loads((config_dir / "kaggle.json").read_text()).get("username")
    except (OSError, ValueError, AttributeError):
        username = None
    return username if isinstance(username, str) and username else "local"


@app.command()
def render(
    name: Annotated[str, typer.Argument(help="Kernel spec name (for example 'search') or a .toml path.")],
    target: Annotated[str, typer.Option(help="Notebook variant: kaggle or colab.")] = "kaggle",
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write the bundle <slug>/ into.")] = Path("build/kernels"),
    owner: Annotated[
        Optional[str],
        typer.Option(help="Kaggle user that owns the kernel and its datasets (default: KAGGLE_USERNAME, else the username in kaggle.json, else 'local')."),
    ] = None,
    profile: ProfileOption = None,
    set_values: SetOption = None,
) -> None:
    """Render a kernel spec into a bundle folder that `kaggle kernels push -p` accepts."""
    from kdarts.kernel.render import KAGGLE_SOURCE_LIMIT, write_bundle
    from kdarts.kernel.specs import load_spec

    if target not in ("kaggle", "colab"):
        raise KdartsError(f"invalid --target {target!r}; use kaggle or colab")
    spec = load_spec(name, profile=profile, overrides=set_values, platform=target)
    bundle = write_bundle(spec, output, owner=owner or default_owner(), target=target)  # type: ignore[arg-type]
    limit = f" of Kaggle's {KAGGLE_SOURCE_LIMIT:,}" if target == "kaggle" else ""
    typer.echo(f"{bundle.notebook} ({bundle.size:,} bytes{limit}; profile {spec.profile or 'none'})")


@app.command()
def push(
    name: Annotated[str, typer.Argument(help="Kernel spec name, for example 'search'.")],
    backend_name: BackendOption = "local",
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until it ends, then pull its output.")] = False,
    timeout: Annotated[
        Optional[float], typer.Option(help="With --wait: give up after this many seconds (default: the session limit plus one hour).")
    ] = None,
    profile: ProfileOption = None,
    set_values: SetOption = None,
) -> None:
    """Render a kernel and push it as a new version; with --wait, follow it and pull the result."""
    from kdarts.kernel.backends import get_backend
    from kdarts.kernel.jobs import pull_kernel, push_kernel
    from kdarts.kernel.specs import load_spec

    spec = load_spec(name, profile=profile, overrides=set_values, platform=backend_name)
    backend = get_backend(backend_name)
    if wait and getattr(backend, "target", "kaggle") == "colab":
        raise KdartsError("--wait cannot follow a Colab run, which you start by hand; push without --wait")
    record = push_kernel(spec, backend)
    typer.echo(f"pushed {record.ref} version {record.version} to the {backend.name} backend")
    if getattr(backend, "target", "kaggle") == "colab":
        typer.echo(f"open it in Colab and choose Runtime > Run all: {record.url}")
        return
    if not wait:
        typer.echo(f"follow it with: kdarts-kernel status {spec.name}")
        return

    # A wait is always bounded: a session cannot outlive its limit, and an hour covers the queue.
    wait_limit = timeout if timeout is not None else spec.kernel.session_limit + 3600.0
    status = _follow(backend, record.ref, record.version, wait_limit, spec.name)
    target = pull_kernel(backend, record)
    typer.echo(f"output of version {record.version} pulled into {target}")
    if status.state != "complete":
        raise KdartsError(f"{status.describe()}; see {target / 'log.txt'}")


def _follow(backend, ref: str, version: int, timeout: float | None, kernel_name: str | None = None):
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from kdarts.kernel.jobs import wait_for_kernel

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[cells]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"{ref} v{version}: queued", total=None, cells="")

        def show(status) -> None:
            # Kaggle reports no cell counts, so the column stays empty there.
            cells = f"{status.cells_done or 0}/{status.cells_total} cells" if status.cells_total else ""
            progress.update(
                task,
                description=f"{ref} v{version}: {status.state}",
                completed=status.cells_done or 0,
                total=status.cells_total,
                cells=cells,
            )

        poll_seconds = getattr(backend, "poll_seconds", 2.0)
        return wait_for_kernel(
            backend, ref, version, timeout=timeout, poll_seconds=poll_seconds, on_status=show, kernel_name=kernel_name
        )


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Kernel spec name, for example 'search'.")],
    backend_name: BackendOption = "local",
    max_retries: Annotated[int, typer.Option(help="Retries of a failed session from the last good checkpoint.")] = 2,
    session_timeout: Annotated[
        Optional[float], typer.Option(help="Give up waiting for one session after this many seconds.")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new chain even if one is in progress (its state is archived).")] = False,
    profile: ProfileOption = None,
    set_values: SetOption = None,
) -> None:
    """Run a kernel across as many sessions as it needs, resuming each from a checkpoint dataset.

    Stopping `run` at any moment is safe: run it again with the same arguments and it continues
    where it was, without pushing a session twice.
    """
    from kdarts.kernel.backends import get_backend
    from kdarts.kernel.chain import Chain, describe_chain
    from kdarts.kernel.specs import load_spec

    spec = load_spec(name, profile=profile, overrides=set_values)
    backend = get_backend(backend_name)

    last_line = {"text": ""}

    def show(session, kernel_status) -> None:
        line = f"session {session.index}: {kernel_status.describe()}"
        if line != last_line["text"]:
            console.print(line, highlight=False)
            last_line["text"] = line

    chain = Chain(spec, backend, max_retries=max_retries, wait_timeout=session_timeout, on_status=show, new=new)
    try:
        final = chain.run()
    except KeyboardInterrupt:
        typer.echo(
            f"stopped; a session already pushed keeps running on the {backend.name} backend. "
            f"Run the same command again to continue the chain (kdarts-kernel status {name} shows it).",
            err=True,
        )
        raise SystemExit(130) from None
    typer.echo(describe_chain(final))
    if final.state != "complete":
        raise KdartsError(f"the chain of {name} failed: {final.error}; fix the cause and run it again")
    typer.echo(f"results in {final.final_output}")


@app.command()
def status(
    name: Annotated[str, typer.Argument(help="Kernel spec name.")],
    version: Annotated[Optional[int], typer.Option(help="Version to show (default: the newest push).")] = None,
) -> None:
    """Show the status of a pushed kernel version."""
    from kdarts.kernel.jobs import backend_for, latest_push

    from kdarts.kernel.chain import describe_chain, load_chain

    chain = load_chain(name) if version is None else None
    if chain is not None:
        typer.echo(describe_chain(chain))
    record = latest_push(name, version=version)
    backend = backend_for(record)
    typer.echo(backend.status(record.ref, record.version).describe())


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="Kernel spec name.")],
    version: Annotated[Optional[int], typer.Option(help="Version to pull (default: the newest push).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Folder to pull into (default: runs/<kernel>/v<N>).")] = None,
) -> None:
    """Download a kernel version's output, executed notebook and log, and verify the manifest."""
    from kdarts.kernel.jobs import backend_for, latest_push, pull_kernel

    record = latest_push(name, version=version)
    backend = backend_for(record)
    status = backend.status(record.ref, record.version)
    if not status.terminal:
        raise KdartsError(f"{status.describe()}; pull it once it has finished (kdarts-kernel status {name})")
    target = pull_kernel(backend, record, output)
    typer.echo(f"{status.describe()}\noutput pulled into {target}")


@app.command("list")
def list_kernels() -> None:
    """List the kernel specs found from this folder (./kernels first, then the built-in ones)."""
    from kdarts.kernel.specs import list_specs, load_spec, spec_profiles

    for name, path in list_specs().items():
        try:
            load_spec(str(path))
            profiles = ", ".join(spec_profiles(str(path))) or "none"
        except KdartsError as error:
            typer.echo(f"{name}\tINVALID: {error}\t{path}")
            continue
        typer.echo(f"{name}\tprofiles: {profiles}\t{path}")


@app.command()
def emulate(
    port: Annotated[int, typer.Option(help="Port to listen on, on 127.0.0.1 only; 0 picks a free one.")] = 8089,
    root: Annotated[Optional[Path], typer.Option(help="State folder (default: $KDARTS_HOME/emulator).")] = None,
    credentials: Annotated[
        Optional[Path],
        typer.Option(help="kaggle.json whose username and key the emulator accepts; created with a random key when missing (default: <root>/client/kaggle.json)."),
    ] = None,
    user: Annotated[str, typer.Option(help="User name written into a newly created credentials file.")] = "kdarts",
    processing_seconds: Annotated[float, typer.Option(help="Seconds a new dataset version stays processing before it is ready.")] = 1.0,
    ready_file: Annotated[Optional[Path], typer.Option(help="Write the URL and process id here as JSON once listening.")] = None,
) -> None:
    """Serve a Kaggle-compatible API on 127.0.0.1 that runs pushed kernels on this machine (see docs/kaggle.md)."""
    from kdarts.kernel.emulator.command import serve

    serve(port=port, root=root, credentials=credentials, user=user, processing_seconds=processing_seconds, ready_file=ready_file)


dataset_app = typer.Typer(help="Publish datasets that kernels attach.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("publish")
def publish_dataset(
    path: Annotated[Path, typer.Argument(help="A dataset folder, or one archive file (.tar.gz, .tgz, .tar, .zip or .npz).")],
    slug: Annotated[str, typer.Option(help="Dataset slug: 6 to 50 lowercase letters, digits and dashes.")],
    backend_name: BackendOption = "local",
    title: Annotated[Optional[str], typer.Option(help="Dataset title (default: the slug).")] = None,
    message: Annotated[str, typer.Option(help="Version notes.")] = "",
) -> None:
    """Publish a folder or an archive as a new version of dataset <owner>/<slug>."""
    import shutil
    import tempfile

    from kdarts.kernel.backends import get_backend
    from kdarts.kernel.specs import normalize_source

    try:
        slug = normalize_source(slug, allow_bare=True).split("/")[-1]
    except ValueError as error:
        raise KdartsError(f"invalid --slug: {error}") from error
    if len(slug) < 6:
        raise KdartsError(f"invalid --slug {slug!r}: dataset slugs are 6 to 50 characters")
    if not path.exists():
        raise KdartsError(f"{path} not found; pass a dataset folder or an archive file")
    backend = get_backend(backend_name)
    ref = f"{backend.owner}/{slug}"
    with tempfile.TemporaryDirectory(prefix="kdarts-dataset-") as staging:
        folder = path
        if path.is_file():
            # An archive is published as the dataset's one file; the engine reads it directly.
            folder = Path(staging)
            shutil.copy2(path, folder / path.name)
        version = backend.publish_dataset(ref, folder, title=title or slug, message=message)
    typer.echo(f"published {version.ref} version {version.version} ({version.status}) on the {backend.name} backend")


def _print_error(message: str) -> None:
    from rich.text import Text

    # soft_wrap keeps the message on one line; Text keeps "[params]" from being read as markup.
    console.print(Text("error: ", style="red") + Text(message), soft_wrap=True, highlight=False)


def main() -> None:
    """Run the CLI; a kdarts error prints one line and the exit status is 1 (tracebacks with --debug)."""
    try:
        app()
    except KdartsError as error:
        if _state["debug"]:
            raise
        _print_error(str(error))
        raise SystemExit(1) from None
    except OSError as error:
        if _state["debug"]:
            raise
        _print_error(f"{error}; run again with --debug for the traceback")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
