"""The `kdarts plan` commands: derive, convert, show, export and draw architecture plans."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from kdarts.errors import KdartsError
from kdarts.plan.derive import derive_plan
from kdarts.plan.draw import draw_plan
from kdarts.plan.genotype import plan_to_genotype
from kdarts.plan.model import Plan, load_alphas, load_plan, save_plan
from kdarts.plan.nni import convert_plan
from kdarts.plan.report import format_plan

logger = logging.getLogger(__name__)

plan_app = typer.Typer(
    help="Derive, convert, inspect, export and draw architecture plans.",
    no_args_is_help=True,
)


class SourceFormat(str, enum.Enum):
    """Input formats of `kdarts plan convert`."""

    auto = "auto"
    nni = "nni"
    genotype = "genotype"


class ExportFormat(str, enum.Enum):
    """Output formats of `kdarts plan export`."""

    genotype = "genotype"


_EXPORTERS: dict[ExportFormat, Callable[[Plan], str]] = {ExportFormat.genotype: plan_to_genotype}


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print a KdartsError as one `error: ...` line on stderr and exit with status 1."""
    try:
        yield
    except KdartsError as error:
        logger.debug("plan command failed", exc_info=True)
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None


@plan_app.command("convert")
def convert_command(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="NNI export (JSON) or DARTS genotype file."),
    output: Path = typer.Option(..., "--output", "-o", help="Plan file to write (JSON)."),
    source_format: SourceFormat = typer.Option(
        SourceFormat.auto, "--from", help="Input format. auto reads a JSON object as an NNI export and other text as a genotype."
    ),
) -> None:
    """Convert an NNI export or a DARTS genotype into a plan file."""
    with _user_errors():
        plan = convert_plan(input_path, source_format.value)
        save_plan(plan, output)
    typer.echo(f"wrote plan {output} ({plan.nodes} nodes per cell)")


@plan_app.command("derive")
def derive_command(
    alphas_path: Path = typer.Argument(..., metavar="ALPHAS", help="Alphas JSON file written by a search."),
    output: Path = typer.Option(..., "--output", "-o", help="Plan file to write (JSON)."),
) -> None:
    """Derive a plan from the architecture logits (alphas) of a search."""
    with _user_errors():
        alphas = load_alphas(alphas_path)
        plan = derive_plan(alphas, provenance={"source": f"derived from alphas file {alphas_path.name}"})
        save_plan(plan, output)
    typer.echo(f"wrote plan {output} ({plan.nodes} nodes per cell)")


@plan_app.command("show")
def show_command(
    plan_path: Path = typer.Argument(..., metavar="PLAN", help="Plan file (JSON)."),
    max_skip: int = typer.Option(
        2, "--max-skip", min=0, help="Warn when the normal cell has more skip_connect edges than this."
    ),
) -> None:
    """Print a plan's cells, operation histograms and warnings."""
    with _user_errors():
        plan = load_plan(plan_path)
        text = format_plan(plan, max_skip_connections=max_skip)
    typer.echo(text, nl=False)


@plan_app.command("export")
def export_command(
    plan_path: Path = typer.Argument(..., metavar="PLAN", help="Plan file (JSON)."),
    to: ExportFormat = typer.Option(..., "--to", help="Output format."),
) -> None:
    """Print a plan in another format, e.g. as a DARTS genotype string."""
    with _user_errors():
        plan = load_plan(plan_path)
        text = _EXPORTERS[to](plan)
    typer.echo(text)


@plan_app.command("draw")
def draw_command(
    plan_path: Path = typer.Argument(..., metavar="PLAN", help="Plan file (JSON)."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Image file to write. Its suffix selects the format: .png, .svg, .pdf or .jpg."
    ),
) -> None:
    """Draw both cells of a plan as graph diagrams into an image file."""
    with _user_errors():
        plan = load_plan(plan_path)
        draw_plan(plan, output)
    typer.echo(f"wrote {output}")
