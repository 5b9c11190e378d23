"""The engine's command line: `kdarts search` and `kdarts plan ...`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from kdarts.errors import KdartsError

app = typer.Typer(
    help="kdarts engine: DARTS architecture search in PyTorch and architecture plans.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

try:
    from kdarts.plan.cli import plan_app
except ImportError:  # the plan commands are optional while the plan module is unavailable
    plan_app = None
if plan_app is not None:
    app.add_typer(plan_app, name="plan")


@app.callback()
def _engine() -> None:
    """kdarts engine: DARTS architecture search in PyTorch and architecture plans."""


def configure_logging(verbose: bool = False) -> None:
    """Send kdarts' log records to stderr as one timestamped line each."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


@app.command()
def search(
    data: Annotated[
        str,
        typer.Option(
            help="Dataset: an image-folder tree, a .tar.gz, .tgz or .zip archive of one, a CIFAR-10 "
            "batches folder, an .npz file, or 'sample'."
        ),
    ] = "sample",
    out: Annotated[Path, typer.Option(help="Output folder: plan, report, metrics, alphas, plots, checkpoints and status.")] = Path("search-out"),
    epochs: Annotated[int, typer.Option(help="Search epochs.")] = 50,
    layers: Annotated[int, typer.Option(help="Cells in the supernet.")] = 8,
    init_channels: Annotated[int, typer.Option(help="Channels of the first cell.")] = 16,
    nodes: Annotated[int, typer.Option(help="Intermediate nodes per cell.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Images per batch in each half.")] = 64,
    order: Annotated[str, typer.Option(help="DARTS gradient: first or second order.")] = "first",
    seed: Annotated[int, typer.Option(help="Random seed for the split, initialisation and augmentation.")] = 2,
    primitives: Annotated[
        Optional[str],
        typer.Option(help="Comma-separated candidate operations (default: all eight DARTS primitives)."),
    ] = None,
    max_skip: Annotated[
        int, typer.Option(min=0, help="Warn when the normal cell has more skip_connect edges than this.")
    ] = 2,
    max_train_images: Annotated[Optional[int], typer.Option(help="Use at most this many training images.")] = None,
    time_budget: Annotated[
        Optional[float],
        typer.Option(help="Seconds this session may run; it stops with a checkpoint before they are spent."),
    ] = None,
    max_steps_per_session: Annotated[
        Optional[int], typer.Option(min=1, help="Stop with a checkpoint after this many steps in this session.")
    ] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Resume from the checkpoints in this folder.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    channels_last: Annotated[
        str, typer.Option(help="Channels-last memory format: auto (on for the CPU, and on CUDA with bf16), on or off.")
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option(help="auto (bf16 autocast on CUDA GPUs of compute capability 8.0+, else fp32), fp32 or bf16 (CUDA only)."),
    ] = "auto",
    log_every_steps: Annotated[
        Optional[int], typer.Option(min=1, help="Log the step time every this many steps (default: 4 times per epoch).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """Run (or resume) a DARTS search and write plan.json into --out.

    A complete --out folder is left as it is. Checkpoints of the same settings resume, others are an error.
    """
    configure_logging(verbose)
    from kdarts.search.config import SearchConfig
    from kdarts.search.trainer import SearchOptions, run_search

    settings = dict(
        data=data,
        epochs=epochs,
        layers=layers,
        init_channels=init_channels,
        nodes=nodes,
        batch_size=batch_size,
        order=order,
        seed=seed,
        max_train_images=max_train_images,
    )
    if primitives is not None:
        settings["primitives"] = tuple(name.strip() for name in primitives.split(",") if name.strip())
    try:
        config = SearchConfig(**settings)
    except ValidationError as error:
        raise KdartsError(format_validation_error(error, "search settings")) from error
    for name, value, allowed in (
        ("--channels-last", channels_last, ("auto", "on", "off")),
        ("--precision", precision, ("auto", "fp32", "bf16")),
    ):
        if value not in allowed:
            raise KdartsError(f"invalid {name} {value!r}; use {', '.join(allowed)}")

    options = SearchOptions(
        output=out,
        device=device,
        time_budget=time_budget,
        resume=resume,
        log_every_steps=log_every_steps,
        max_steps_per_session=max_steps_per_session,
        max_skip_connections=max_skip,
        channels_last=channels_last,  # type: ignore[arg-type]  # checked above
        precision=precision,  # type: ignore[arg-type]
    )
    result = run_search(config, options)
    if result.complete:
        typer.echo(f"complete: plan written to {result.plan_path}")
        for warning in result.warnings:
            typer.echo(f"warning: {warning}")
    else:
        typer.echo(f"incomplete ({result.reason}) after {result.epochs_done} epochs; run again to resume from {out}")


def format_validation_error(error: ValidationError, what: str) -> str:
    """Turn a pydantic error into one line per invalid field, naming the field and the value."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(root)"
        problems.append(f"{field}={item.get('input')!r}: {item['msg']}")
    return f"invalid {what}: " + "; ".join(problems)


def main() -> None:
    """Run the CLI, printing a kdarts error as one line on stderr with exit status 1."""
    try:
        app()
    except KdartsError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
