"""The ``cardioinr`` command. Thin wrappers: every command calls the Python API.

Errors the user can fix (:class:`~cardioinr.errors.CardioInrError`) are printed as one line
and exit with code 2 (3 for a diverged fit); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import CardioInrError

app = typer.Typer(
    name="cardioinr",
    help="Dense cardiac motion from cine MRI with implicit neural representations and learned priors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_STATE = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    _STATE["debug"] = debug


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    n: int = typer.Option(4, "--n", min=1, help="Number of cases."),
    dim: int = typer.Option(2, "--dim", min=2, max=3, help="2 for 2D+t slices, 3 for 3D+t stacks."),
    tagged: bool = typer.Option(False, "--tagged", help="Add a SPAMM tag grid."),
    seed: int = typer.Option(0, "--seed", help="Random seed (cases are reproducible)."),
) -> None:
    """Write synthetic short-axis cines with ground-truth motion (NIfTI + manifest.json)."""
    from .phantoms import PhantomConfig, write_cases

    manifest = write_cases(out, n=n, config=PhantomConfig(dim=dim, tagged=tagged), seed=seed)
    typer.echo(f"wrote {len(manifest['cases'])} cases to {out}")


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry point: runs the app and turns user errors into one clear line."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except CardioInrError as e:
        if debug:
            raise
        typer.echo(f"cardioinr: error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        typer.echo("cardioinr: interrupted", err=True)
        return 130
    except Exception as e:  # click usage errors and friends
        import click

        if isinstance(e, click.exceptions.Exit):
            return e.exit_code
        if isinstance(e, click.ClickException):
            if debug:
                raise
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
