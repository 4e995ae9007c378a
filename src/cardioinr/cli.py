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


@app.command()
def fit(
    sequence: Path = typer.Argument(..., help="Cine: 4D NIfTI (X, Y, Z, T), .npz, or a folder of frames / DICOM."),
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    seg: Optional[Path] = typer.Option(None, "--seg", help="Labels of the reference frame (NIfTI)."),
    ref_frame: int = typer.Option(0, "--ref-frame", help="Reference frame index (negative counts from the end)."),
    label_map: str = typer.Option("acdc", "--label-map", help="acdc (1 RV, 2 MYO, 3 LV), sunnybrook (1 LV, 2 MYO), or 'lv=N,myo=N,rv=N'."),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Optimisation steps (default from the config)."),
    model: Optional[str] = typer.Option(None, "--model", help="Field model: siren, fourier or hashgrid."),
    similarity: Optional[str] = typer.Option(None, "--similarity", help="ncc, lncc or mse."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML or JSON file with fit settings."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed and device give the same field)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Fit a motion field to one cine and write the output contract into OUT."""
    from dataclasses import replace as dc_replace

    import torch

    from .fit import FitConfig, Fitter, write_fit_outputs
    from .io import LabelMap, load_label_volume, load_sequence

    if threads:
        torch.set_num_threads(threads)
    cfg = FitConfig.from_file(config) if config else FitConfig()
    changes: dict = {"device": device, "seed": seed}
    if steps is not None:
        changes["steps"] = steps
    if similarity is not None:
        changes["similarity"] = similarity
    if model is not None:
        changes["field"] = dc_replace(cfg.field, model=model)
    cfg = dc_replace(cfg, **changes)
    seq = load_sequence(sequence, label_map=LabelMap.parse(label_map), ref_frame=ref_frame)
    if seg is not None:
        seq = seq.with_labels(seq.ref_frame, load_label_volume(seg, seq.shape))
    result = Fitter(cfg).fit(seq, progress=not quiet)
    write_fit_outputs(result, out)
    m = result.metrics
    typer.echo(
        f"fitted {seq.name}: {m['steps']} steps in {m['fit_seconds']:.1f} s, "
        f"{m['percent_negative_jacobian']:.3f} % folded voxels -> {out}"
    )


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
