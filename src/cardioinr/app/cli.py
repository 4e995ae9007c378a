"""The ``cardioinr`` command. Thin wrappers: every command calls the Python API.

Errors the user can fix (:class:`~cardioinr.core.errors.CardioInrError`) are printed as one line
and exit with code 2 (3 for a diverged fit); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Optional

import typer

from cardioinr.app.cohort import cohort_command
from cardioinr.core.console import collapse_whitespace, pin_threads
from cardioinr.core.errors import CardioInrError, ConfigError
from cardioinr.outputs.contract import DISPLACEMENT, EXPORT_ITK, EXPORT_MESH, LABELS, REPORT

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


def _refuse_non_folder(out: Path) -> None:
    """Refuse an output folder that cannot be one before minutes of fitting, not after."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; --out names the output folder")


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    n: int = typer.Option(4, "--n", min=1, help="Number of cases."),
    dim: int = typer.Option(2, "--dim", min=2, max=3, help="2 for 2D+t slices, 3 for 3D+t stacks."),
    tagged: bool = typer.Option(False, "--tagged", help="Add a SPAMM tag grid."),
    blood_tag_washout: Optional[float] = typer.Option(
        None, "--blood-tag-washout", min=0.0, max=1.0, metavar="FRACTION",
        help="With --tagged: the blood's tags fade to nothing by this fraction of the cycle after ED, as "
             "flowing blood replaces tagged blood in a real SPAMM cine (about 0.1); default: the blood keeps its tags."),
    seed: int = typer.Option(0, "--seed", help="Random seed (cases are reproducible)."),
    ef: Optional[str] = typer.Option(None, "--ef", help="EF range LO,HI (fractions, e.g. 0.15,0.35; default 0.5,0.7), "
                                                         "before any regional abnormality."),
    regional: Optional[str] = typer.Option(
        None, "--regional",
        help="One LV segment with abnormal motion: its motion scale, or a range LO,HI to draw it from (1 normal, "
             "0 akinetic, below 0 dyskinetic; e.g. -0.3,0.2). Off by default."),
    regional_extent: str = typer.Option("60,120", "--regional-extent", help="Width range of that segment, degrees."),
    group: str = typer.Option("normal", "--group", help="Kind of heart: normal, hypertrophic, dilated, infarct or rv "
                                                        "(abnormal right ventricle); --ef and --regional override it."),
    views: str = typer.Option(
        "sax", "--views",
        help="Views to write (dim 3): sax plus any of 2ch, 3ch, 4ch, e.g. sax,2ch,4ch; with long-axis views each case "
             "is a folder caseNNN/ of sa.nii.gz, la_2ch.nii.gz, ... (UK Biobank names) with seg_ and truth_ files (also with --misalign)."),
    misalign: float = typer.Option(
        0.0, "--misalign", min=0.0, metavar="MM",
        help="Largest breath-hold shift of a slice or view, mm (dim 3; default 0: aligned)."),
) -> None:
    """Write synthetic short-axis cines with ground-truth motion (NIfTI + manifest.json)."""
    from cardioinr.phantoms import write_cases, write_studies
    from cardioinr.phantoms.groups import group_config

    changes: dict = {}
    if ef is not None:
        changes["ef_range"] = _number_range(ef, "--ef")
        # A weak heart has weak strain: the default strain range (-25 to -15 %) only fits EF 50-70 %.
        changes["circumferential_strain_range"] = (-0.25, -0.03)
    if regional is not None:
        changes["regional_motion_range"] = _number_range(regional, "--regional")
        changes["regional_extent_deg_range"] = _number_range(regional_extent, "--regional-extent")
    names = [v.strip().lower() for v in views.split(",") if v.strip()]
    unknown = [v for v in names if v not in ("sax", "2ch", "3ch", "4ch")]
    if unknown or "sax" not in names or len(set(names)) != len(names):
        raise ConfigError(f"--views {views!r}: expected sax plus any of 2ch, 3ch, 4ch, each once (e.g. sax,2ch,4ch)")
    lax = tuple(v for v in names if v != "sax")
    if (lax or misalign > 0) and dim != 3:
        raise ConfigError("--views with long-axis views and --misalign need --dim 3")
    if blood_tag_washout is not None:
        if not tagged:
            raise ConfigError("--blood-tag-washout needs --tagged")
        changes["blood_tag_washout"] = blood_tag_washout
    config = group_config(group, dim, tagged=tagged, **changes)
    if lax or misalign > 0:
        manifest = write_studies(out, n=n, config=config, seed=seed, views=lax, misalign_mm=misalign)
    else:
        manifest = write_cases(out, n=n, config=config, seed=seed)
    typer.echo(f"wrote {len(manifest['cases'])} cases to {out}")


def _number_range(text: str, option: str) -> tuple[float, float]:
    """``"x"`` -> (x, x); ``"lo,hi"`` -> (lo, hi); a one-line :class:`ConfigError` otherwise."""
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise ConfigError(f"{option} {text!r}: expected a number or LO,HI")
    lo, hi = parts[0], parts[-1]
    if lo > hi:
        raise ConfigError(f"{option} {text!r}: LO must not exceed HI")
    return lo, hi


@app.command()
def fit(
    sequence: Path = typer.Argument(..., help="Cine: 4D NIfTI (X, Y, Z, T), .npz, or a folder of frames / DICOM."),
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    seg: Optional[Path] = typer.Option(None, "--seg", help="Labels of the reference frame (NIfTI)."),
    ref_frame: Optional[int] = typer.Option(None, "--ref-frame", help="Reference frame index (negative counts from the end; default 0)."),
    prior: Optional[str] = typer.Option(
        None, "--prior",
        help="What the fit starts from: builtin (the default: the built-in prior of the cine's dimension, see "
             "'cardioinr priors'), none (random weights, a fit from scratch), or a checkpoint PATH (train-prior)."),
    prior_through_plane: str = typer.Option(
        "auto", "--prior-through-plane",
        help="3D priors: scale in [0, 1] of the prior's starting motion along the slices' normal (0: in-plane "
             "start only), or auto: the scale whose start fits the images best."),
    label_map: Optional[str] = typer.Option(
        None, "--label-map",
        help="acdc (1 RV, 2 MYO, 3 LV; the default), sunnybrook (1 LV, 2 MYO), ukbb (1 LV, 2 MYO, 3 RV; the default "
             "for a UK Biobank study folder), or 'lv=N,myo=N,rv=N'."),
    lax: Optional[list[Path]] = typer.Option(
        None, "--lax",
        help="A long-axis cine (2-, 3- or 4-chamber; repeat for several) of the same exam: one 3D+t field is fitted "
             "to the short-axis stack and every view at once. A study folder (sa.nii.gz, la_2ch.nii.gz, ...) or a "
             "DICOM exam with several orientations given as SEQUENCE is read as such without it."),
    lax_seg: Optional[list[Path]] = typer.Option(None, "--lax-seg", help="Labels of a long-axis view's reference "
                                                 "frame, in --lax order (optional)."),
    view: str = typer.Option(
        "auto", "--view",
        help="What a single-slice cine shows: sax (short axis: radial, circumferential, AHA strain), 2ch, 3ch, 4ch or "
             "lax (a long-axis view: GLS of the myocardial midline instead), or auto (a long-axis view when the file "
             "name says so, e.g. la_4ch.nii.gz; else short axis)."),
    align_views: bool = typer.Option(
        False, "--align-views",
        help="Multi-view fits: learn a rigid in-plane offset per short-axis slice and per long-axis view (breath-hold "
             "misalignment), jointly with the motion; metrics.json reports them."),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Optimisation steps (default from the config)."),
    model: Optional[str] = typer.Option(None, "--model", help="Field model: siren, fourier or hashgrid."),
    similarity: Optional[str] = typer.Option(None, "--similarity", help="ncc, lncc or mse."),
    tagged: bool = typer.Option(
        False, "--tagged",
        help="A tagged (SPAMM) cine: each frame is compared with the one before it instead of with the reference, "
             "whose blood tags flowing blood washes out (fit setting 'sequential')."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML or JSON file with fit settings."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed and device give the same field)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    no_report: bool = typer.Option(False, "--no-report", help=f"Skip {REPORT} (the rest of the contract is written)."),
    export: Optional[str] = typer.Option(
        None, "--export",
        help=f"Also write the fit for other tools (as 'cardioinr export'): itk ({EXPORT_ITK}/ displacement fields for "
             f"ITK, ANTs, 3D Slicer), vtk ({EXPORT_MESH}/ myocardial meshes for ParaView), or itk,vtk."),
) -> None:
    """Fit a motion field to one cine and write the output contract into OUT."""
    from dataclasses import replace as dc_replace

    from cardioinr.fit import FitConfig, Fitter, explicit_settings
    from cardioinr.io import LabelMap, attach_labels, load_sequence
    from cardioinr.outputs import save_fit

    pin_threads(threads)
    _refuse_non_folder(out)
    formats = None
    if export is not None:
        from cardioinr.outputs.export import parse_formats, require_libraries

        formats = parse_formats(export)  # a bad format or a missing library stops here, not after the fit
        require_libraries(formats)
    from cardioinr.io.studies import load_study_any, looks_like_study

    study = None
    if lax or looks_like_study(sequence):
        study = load_study_any(sequence, lax or (), seg=seg, lax_segs=lax_seg, label_map=label_map,
                               ref_frame=ref_frame)
        seq = study.sax
        typer.echo(f"note: study {study.name}: short axis {seq.shape} and long-axis views "
                   f"{', '.join(study.lax) or 'none'}")
    else:
        if lax_seg:
            raise ConfigError("--lax-seg needs --lax (or a study folder)")
        seq = load_sequence(sequence, label_map=LabelMap.parse(label_map), ref_frame=ref_frame)
        if seg is not None:
            seq = attach_labels(seq, {seq.ref_frame: seg})
        seq = _with_view(seq, view, sequence)
    if align_views and (study is None or not study.lax):
        raise ConfigError("--align-views needs long-axis views (--lax or a study folder)")
    if seq.is_2d and not tagged:
        _hint_tagged(seq)
    if formats is not None and "vtk" in formats and seq.ref_labels is None:
        raise ConfigError("--export vtk: the meshes are cut from the reference labels; pass --seg (or export itk only)")
    from cardioinr.priors import check_through_plane, choose_start

    explicit = explicit_settings(config) if config else {}
    if model is not None:
        explicit["field"] = dc_replace(explicit.get("field", FitConfig().field), model=model)
    start = choose_start(seq, prior, explicit, device=device, log=lambda line: typer.echo(f"note: {line}"))
    cfg = start.fit_config(FitConfig.from_file(config) if config else FitConfig())
    changes: dict = {"device": device, "seed": seed}
    if steps is not None:
        changes["steps"] = steps
    if similarity is not None:
        changes["similarity"] = similarity
    if tagged:
        changes["sequential"] = True
    if model is not None and start.prior is None:  # with a prior the architecture is the prior's (checked above)
        changes["field"] = dc_replace(cfg.field, model=model)
    cfg = dc_replace(cfg, **changes)
    through_plane = check_through_plane(prior_through_plane, with_prior=start.prior is not None)
    init, extra = start.init_field(seq, through_plane, cfg)
    applic = extra["prior"].get("applicability")
    if applic and applic.get("in_distribution") is False:
        typer.echo(f"warning: {seq.name} lies {applic['summary']}", err=True)
    if study is not None and study.lax:
        from cardioinr.fit.multiview import fit_study, views_config

        result = fit_study(study, cfg, views_config(explicit, align=align_views), init=init, progress=not quiet)
    else:
        result = Fitter(cfg).fit(seq, init=init, progress=not quiet)
    save_fit(result, out, extra_metrics=extra, report=not no_report)
    m = result.metrics
    mended = m.get("mended_folds")
    mended_note = (f" (mended: {mended['folded_voxels_before']} -> {mended['folded_voxels_after']} folded voxels "
                   f"in {mended['steps']} steps)" if mended else "")
    typer.echo(
        f"fitted {seq.name}: {m['steps']} steps in {m['fit_seconds']:.1f} s, "
        f"{m['percent_negative_jacobian']:.3f} % folded voxels{mended_note} -> {out}"
    )
    if formats is not None:
        _export(out, formats, None)


def _hint_tagged(seq) -> None:
    """A note when a single slice's reference frame shows a tag grid and --tagged was not given."""
    from cardioinr.fit.preprocess import TAG_GRID_RATIO, tag_grid

    ratio, period = tag_grid(seq.image[:, :, 0, seq.ref_frame], seq.spacing)
    if ratio >= TAG_GRID_RATIO:
        typer.echo(f"note: {seq.name}: the reference frame shows a periodic grid ({period:.1f} mm); if this is a tagged "
                   "cine, fit with --tagged (its blood tags wash out after the reference)")


def _with_view(seq, view: str, path: Path):
    """``seq`` with ``meta["view"]`` set for a long-axis single-slice cine (see ``fit --view``)."""
    from dataclasses import replace as dc_replace

    from cardioinr.io.studies import lax_view_name

    choice = view.strip().lower()
    if choice not in ("auto", "sax", "2ch", "3ch", "4ch", "lax"):
        raise ConfigError(f"--view {view!r}: choose auto, sax, 2ch, 3ch, 4ch or lax")
    if choice == "auto":
        choice = (lax_view_name(path.name) or "sax") if seq.is_2d else "sax"
    if choice == "sax":
        return seq
    if not seq.is_2d:
        raise ConfigError(f"--view {choice}: {path} is a stack of {seq.shape[2]} slices; a long-axis view is one slice "
                          "(give long-axis cines beside a stack with --lax)")
    return dc_replace(seq, meta={**seq.meta, "view": choice})


def _export(out: Path, formats, frames: Optional[str]) -> None:
    from cardioinr.outputs.export import export_folder

    result = export_folder(out, formats, frames, log=lambda line: typer.echo(f"note: {line}"))
    for fmt, files in result.files.items():
        where = sorted({str(p.parent) for p in files})
        typer.echo(f"exported {fmt}: {len(files)} files -> {', '.join(where)}")


@app.command("export")
def export_cmd(
    out_dir: Path = typer.Argument(..., help="A fit output folder."),
    formats: str = typer.Option(
        "itk,vtk", "--format",
        help=f"itk: {EXPORT_ITK}/displacement_tNN.nii.gz (world LPS fields that ITK, ANTs and 3D Slicer apply, and "
             f"their inverses); vtk: {EXPORT_MESH}/myocardium_tNN.vtp and a ParaView time series; or itk,vtk."),
    frames: Optional[str] = typer.Option(None, "--frames", help="Frames to write, e.g. 0,5,-1 or 2:8 (default all)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
) -> None:
    """Write a fit folder's motion for other tools: ITK/ANTs displacement fields, VTK meshes."""
    pin_threads(threads)
    _export(out_dir, formats, frames)


@app.command()
def report(
    out_dir: Path = typer.Argument(..., help="A fit output folder."),
) -> None:
    """(Re)build report.html in a fit output folder."""
    from cardioinr.outputs import build_report

    path = build_report(out_dir)
    typer.echo(f"wrote {path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Output folder."),
    quick: bool = typer.Option(False, "--quick", help="One Sunnybrook case instead of three."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
) -> None:
    """A phantom fitted from the built-in prior and from scratch, plus the Sunnybrook cases when present."""
    from cardioinr.app.demo import print_rows, run_demo

    pin_threads(threads)
    rows = run_demo(out, quick=quick, log=typer.echo)
    print_rows(rows)
    typer.echo(f"outputs and reports in {out}/ (open fit_*/{REPORT} in a browser)")


def load_training_sequences(data: Path, label_map: Optional[str] = None, dim: Optional[int] = None) -> list:
    """All sequences of a dataset folder or manifest, reference frame at ED."""
    from cardioinr.core.errors import InputError
    from cardioinr.io.datasets import index_dataset, load_entry

    entries = index_dataset(data, label_map=label_map)
    if not entries:
        raise InputError(f"{data}: no sequences found")
    seqs = [load_entry(e) for e in entries]
    dims = {s.ndim_space for s in seqs}
    if dim is not None:
        seqs = [s for s in seqs if s.ndim_space == dim]
        if not seqs:
            raise InputError(f"{data}: no {dim}D sequences found")
    elif len(dims) > 1:
        raise InputError(f"{data}: holds both 2D and 3D sequences; choose one with --dim")
    return seqs


@app.command("train-prior")
def train_prior_cmd(
    data: Path = typer.Argument(..., help="Folder or manifest of training sequences (phantoms, Sunnybrook, ACDC, plain)."),
    kind: str = typer.Option("population", "--kind", help="population, consensus, autodecoder, meta or encoder."),
    out: Path = typer.Option(..., "--out", help="Prior checkpoint to write (e.g. prior.ckpt)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Outer training steps."),
    model: Optional[str] = typer.Option(None, "--model", help="Field model: siren, fourier or hashgrid."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML or JSON file with prior settings ([prior] table)."),
    label_map: Optional[str] = typer.Option(None, "--label-map", help="Override the dataset's label codes."),
    dim: Optional[int] = typer.Option(None, "--dim", min=2, max=3, help="Use only 2D or 3D sequences."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the training state left by an interrupted run."),
    from_prior: Optional[str] = typer.Option(
        None, "--from",
        help="Fine-tune an existing prior instead of starting from random weights: builtin (the built-in prior of "
             "the data's dimension) or a checkpoint PATH. Its kind and field architecture are kept (--kind may "
             "switch between kinds of the same architecture); the new checkpoint records its lineage."),
    subject_steps: Optional[int] = typer.Option(None, "--subject-steps", min=1,
                                                help="consensus: steps of each per-subject fit."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Learn a motion prior from a cohort, or fine-tune one (--from) on your own (data-parallel under torchrun)."""
    from dataclasses import replace as dc_replace

    from cardioinr.app.distributed import init_from_env, is_rank0, shutdown
    from cardioinr.priors import PriorConfig, save_prior, train_prior

    pin_threads(threads)
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; --out names the checkpoint file to write (e.g. {out / 'prior.ckpt'})")
    base = PriorConfig.from_file(config) if config else PriorConfig(kind=kind)  # a bad file stops before any loading
    seqs = load_training_sequences(data, label_map, dim)
    parent, parent_record = None, None
    if from_prior is not None:
        from cardioinr.priors import NO_PRIOR, resolve_prior

        if from_prior == NO_PRIOR:
            raise ConfigError("--from none: leave --from out to train from random weights")
        choice = resolve_prior(from_prior, seqs[0].ndim_space, device)
        parent, parent_record = choice.prior, choice.record
    # The kind: --kind when given, else the settings file's, else the parent's (fine-tuning
    # continues the parent's kind), else the default.
    if not kind_was_given():
        from cardioinr.core.config import read_config_table

        in_file = config is not None and "kind" in read_config_table(config, "prior")
        kind = base.kind if in_file or parent is None else parent.kind
    changes: dict = {"kind": kind, "device": device, "seed": seed}
    if steps is not None:
        changes["steps"] = steps
    if subject_steps is not None:
        changes["subject_steps"] = subject_steps
    if parent is not None:
        if model is not None and model != parent.field.config.model:
            raise ConfigError(f"--model {model}: fine-tuning keeps the parent prior's {parent.field.config.model} field")
        pf = parent.field.config
        changes["field"] = dc_replace(pf, latent_dim=0)
        if pf.latent_dim:
            changes["latent_dim"] = pf.latent_dim
    elif model is not None:
        changes["field"] = dc_replace(base.field, model=model)
    cfg = dc_replace(base, **changes)
    state = out.with_name(out.name + ".state")
    if state.exists() and not resume:
        raise ConfigError(f"{state}: an interrupted training left its state here; pass --resume or delete it")
    dist = init_from_env(device)
    prior = train_prior(seqs, cfg, progress=not quiet, state_path=state, dist=dist, clear_state=False,
                        parent=parent, parent_record=parent_record)
    if is_rank0(dist):
        save_prior(out, prior)
        # Only now is the training safe in the checkpoint: a kill before this line resumes.
        state.unlink(missing_ok=True)
        what = f"fine-tuned {parent_record.get('name') or parent_record.get('path')} as a {cfg.kind} prior" \
            if parent_record else f"trained a {cfg.kind} prior"
        typer.echo(f"{what} on {len(seqs)} sequences in {prior.config['train_seconds']:.0f} s -> {out}")
    # Not in a `finally`: after a failure on one rank the others never reach the barrier, and
    # torchrun stops them anyway.
    shutdown(dist)


def kind_was_given() -> bool:
    """Whether --kind was on the command line (click knows where each value came from)."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True
    src = ctx.get_parameter_source("kind")
    return src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")


priors_app = typer.Typer(help="The built-in priors; what a prior was trained on (show).", no_args_is_help=False)
app.add_typer(priors_app, name="priors")


@priors_app.callback(invoke_without_command=True)
def priors_cmd(ctx: typer.Context) -> None:
    """List the built-in priors shipped with cardioinr (the ones 'fit' starts from by default);
    'cardioinr priors show PRIOR' describes one."""
    if ctx.invoked_subcommand is not None:
        return
    from cardioinr.priors import list_builtin

    rows = list_builtin()
    if not rows:
        typer.echo("this install ships no built-in priors (fit with --prior PATH or --prior none)")
        return
    typer.echo(f"{'name':<14} {'dim':>3}  {'kind':<10} {'version':<8} {'size':>7}  {'sha256':<12}  {'state':<7} card")
    for r in rows:
        typer.echo(f"{r['name']:<14} {r['dim']:>3}  {r['kind']:<10} {r['version']:<8} {r['bytes'] / 1e3:>5.0f}kB  "
                   f"{r['sha256'][:12]:<12}  {r['state']:<7} {r['card']}")
    typer.echo("fit uses the one of the cine's dimension unless --prior none or --prior PATH is given")


@priors_app.command("show")
def priors_show_cmd(
    prior: str = typer.Argument(..., help="A built-in prior's name (consensus-2d, consensus-3d) or a checkpoint PATH."),
    cases: bool = typer.Option(False, "--cases", help="Also list every training case."),
    card: bool = typer.Option(True, "--card/--no-card", help="Print a built-in prior's model card."),
) -> None:
    """What a prior is and what it was trained on: kind, architecture, recipe, lineage, the
    training-distribution record (and a built-in prior's model card)."""
    from cardioinr.priors import show_prior

    for line in show_prior(prior, cases=cases, card=card):
        typer.echo(line)


@app.command()
def evaluate(
    out_dir: Path = typer.Argument(..., help=f"A fit output folder ({DISPLACEMENT}, {LABELS})."),
    truth_displacement: Optional[Path] = typer.Option(None, "--truth-displacement", help="Ground-truth displacement (X, Y, Z, T, 3) mm."),
    truth_labels: Optional[Path] = typer.Option(None, "--truth-labels", help="Labels of every frame (X, Y, Z, T)."),
    frame_labels: Optional[list[str]] = typer.Option(None, "--frame-labels", help="FRAME=PATH labels of one frame (repeatable)."),
    label_map: str = typer.Option("acdc", "--label-map"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the scores to this JSON file."),
) -> None:
    """Score a fit output folder against ground truth (Dice, HD95, EPE, folding)."""
    from cardioinr.core.errors import InputError
    from cardioinr.core.files import write_json_atomic
    from cardioinr.io import LabelMap
    from cardioinr.outputs import evaluate_folder

    frames = {}
    for item in frame_labels or []:
        t, sep, p = item.partition("=")
        if not sep or not t.strip().lstrip("-").isdigit():
            raise InputError(f"--frame-labels {item!r}: expected FRAME=PATH")
        frames[int(t)] = Path(p)
    scores = evaluate_folder(out_dir, truth_displacement=truth_displacement, truth_labels=truth_labels,
                             frame_labels=frames or None, label_map=LabelMap.parse(label_map))
    if json_out:
        write_json_atomic(json_out, scores)
    _print_scores(scores)


def _print_scores(scores: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluation")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, s in (scores.get("labels") or {}).get("summary", {}).items():
        table.add_row(f"Dice {name} (min / mean over frames)", f"{_f(s.get('dice_min'))} / {_f(s.get('dice_mean'))}")
        table.add_row(f"HD95 {name} mean (mm)", _f(s.get("hd95_mean")))
    for region, e in (scores.get("epe") or {}).items():
        table.add_row(f"EPE {region} mean / p95 (mm)", f"{_f(e.get('mean'))} / {_f(e.get('p95'))}")
    for region, fstat in (scores.get("folding") or {}).items():
        if isinstance(fstat, dict) and "percent_folded" in fstat:
            table.add_row(f"folded voxels {region} (%)", _f(fstat["percent_folded"]))
    Console().print(table)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT turned into an interruption, so that ``finally`` blocks run:
    atomic writes remove their temporary files and nothing half-written is left behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalState:
    signum: Optional[int] = None


@contextlib.contextmanager
def _signals_as_interrupt(state: _SignalState):
    """While the command runs, SIGTERM, SIGHUP and SIGINT raise :class:`_Terminated` and are
    recorded in ``state`` (once: a repeated signal during the clean-up is ignored). Only in the
    main thread, where handlers can be set; a signal the parent ignores (SIGINT of a background
    job) stays ignored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if state.signum is None:
            state.signum = signum
            raise _Terminated(signum)

    # A signal landing inside a finaliser or weakref callback raises there, and Python prints
    # that exception ("Exception ignored in ...") instead of stopping: the signal is recorded in
    # ``state`` and reported in one line when the command returns, so that print is only noise.
    hook = sys.unraisablehook

    def quiet(unraisable) -> None:
        if not isinstance(unraisable.exc_value, _Terminated):
            hook(unraisable)

    sys.unraisablehook = quiet
    previous = {}
    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, old)
        sys.unraisablehook = hook


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry point: runs the app and turns user errors into one clear line.

    Exit codes: 0 success, 1 a system error while reading or writing (disk full, permission
    denied; one line), 2 a user error (bad input, option or file; one line on stderr,
    ``cardioinr: error: ...``), 3 a diverged fit, 130 interrupted (SIGINT), 143 terminated
    (SIGTERM; 128 + the signal number). Interrupted runs remove their partial files.

    Typer may bundle its own click, so usage errors are recognised by their interface
    (``exit_code`` and ``show``) rather than by class. Typer turns an interruption into a
    silent exit code 130, so signals are recorded by our own handler and reported here."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    sig = _SignalState()
    try:
        with _signals_as_interrupt(sig):
            rc = app(args=args, standalone_mode=False)
    except CardioInrError as e:
        if sig.signum is not None:
            return _interrupted(sig.signum)
        if debug:
            raise
        typer.echo(f"cardioinr: error: {collapse_whitespace(str(e))}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        return _interrupted(sig.signum)
    except Exception as e:
        if sig.signum is not None or isinstance(e.__cause__, KeyboardInterrupt):
            return _interrupted(sig.signum)
        name = type(e).__name__
        if name == "Exit" and hasattr(e, "exit_code"):  # typer.Exit / click.exceptions.Exit
            return int(e.exit_code)
        if name == "Abort":
            typer.echo("cardioinr: aborted", err=True)
            return 1
        if hasattr(e, "exit_code") and hasattr(e, "show"):  # click usage errors (bad option, missing argument)
            if debug:
                raise
            typer.echo(f"cardioinr: error: {_usage_line(e)}", err=True)
            return int(e.exit_code)
        if isinstance(e, OSError) and e.strerror and not debug:
            # The machine, not the input: a full disk or a read-only folder deserves one line too.
            where = f"{e.filename}: " if e.filename else ""
            typer.echo(f"cardioinr: error: {collapse_whitespace(where + e.strerror)}", err=True)
            return 1
        raise
    if sig.signum is not None:
        return _interrupted(sig.signum)
    return rc if isinstance(rc, int) else 0


def _interrupted(signum: Optional[int]) -> int:
    """One line and the conventional exit code: 128 + N for signal N (130 SIGINT, 143 SIGTERM)."""
    import signal

    if signum is None or signum == signal.SIGINT:
        typer.echo("cardioinr: interrupted", err=True)
        return 130
    typer.echo(f"cardioinr: terminated by signal {signum}", err=True)
    return 128 + int(signum)


def _usage_line(e: Exception) -> str:
    """A click usage error as one line, with where to find the usage."""
    msg = e.format_message() if hasattr(e, "format_message") else str(e)
    ctx = getattr(e, "ctx", None)
    sub = ctx.info_name if ctx is not None and getattr(ctx, "parent", None) is not None else None
    hint = f"see 'cardioinr {sub} --help'" if sub else "see 'cardioinr --help'"
    return f"{collapse_whitespace(msg)} ({hint})"


app.command("cohort")(cohort_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
