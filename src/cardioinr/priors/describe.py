"""A prior in words (``cardioinr priors show``): what it is, how it was made, what it was
trained on, where it comes from, and a built-in prior's model card."""

from __future__ import annotations

from pathlib import Path

from cardioinr.core.errors import CheckpointError
from cardioinr.core.files import file_sha256
from cardioinr.priors.builtin import BUILTIN, WEIGHTS_DIR, builtin_path, describe_field, manifest
from cardioinr.priors.checkpoint import load_prior
from cardioinr.priors.distribution import summarise_record
from cardioinr.priors.prior import Prior


def _builtin_dims(spec: str) -> list[int]:
    """Dimensions of the built-in priors ``spec`` names (``builtin``: all of them)."""
    entries = manifest()
    if spec == BUILTIN:
        return sorted(int(e["dim"]) for e in entries.values())
    return [int(entries[spec]["dim"])] if spec in entries else []


def _case_line(c: dict) -> str:
    truth = c.get("truth", {})
    ef = truth.get("ef", c.get("ef_labels"))
    parts = [f"{c.get('name', '?'):<22}", f"{'x'.join(str(s) for s in c.get('shape', []))} x {c.get('frames', '?')}",
             f"{c.get('in_plane_mm', float('nan')):.2f}/{c.get('slice_mm', float('nan')):.1f} mm",
             f"{c.get('orientation', {}).get('plane', '?')}",
             f"heart {c.get('heart', {}).get('diameter_mm', float('nan')):.0f} mm"]
    if isinstance(ef, (int, float)):
        parts.append(f"EF {ef * 100:.0f} %" + ("" if "ef" in truth else " (labels)"))
    if "start_ratio" in c:
        parts.append(f"start {c['start_ratio']:.2f}")
    return "  " + "  ".join(parts)


def describe(prior: Prior, title: str, sha256: str | None = None, cases: bool = False) -> list[str]:
    """Lines on ``prior``: kind and architecture, recipe, data, lineage, distribution record."""
    train = prior.config.get("train", {}) if isinstance(prior.config, dict) else {}
    lines = [title, f"  kind: {prior.kind}; field: {describe_field(prior.field.config)}"
                    f"{f', latent {prior.field.config.latent_dim}' if prior.field.config.latent_dim else ''}; "
                    f"{prior.field.dim}D"]
    if sha256:
        lines.append(f"  sha256: {sha256}")
    if train:
        steps = (f"{train.get('subject_steps')} steps per subject" if train.get("kind") == "consensus"
                 else f"{train.get('steps')} steps, batch {train.get('batch')}")
        lines.append(f"  recipe: {train.get('kind')}, {steps}, lr {train.get('lr')}, seed {train.get('seed')}; "
                     f"trained in {prior.config.get('train_seconds', '?')} s")
    ds = prior.data_summary or {}
    if ds:
        lines.append(f"  data: {ds.get('n_sequences', '?')} sequences ({ds.get('with_reference_labels', 0)} with "
                     f"reference labels), fingerprint {ds.get('fingerprint', '?')}")
    if prior.lineage:
        lines.append("  lineage (oldest first):")
        for i, stage in enumerate(prior.lineage):
            n = (stage.get("data_summary") or {}).get("n_sequences", "?")
            lines.append(f"    {i + 1}. {stage.get('name') or stage.get('path')} ({stage.get('source')}, "
                         f"{stage.get('kind')}" + (f", version {stage['version']}" if stage.get("version") else "")
                         + f", sha256 {str(stage.get('sha256'))[:12]}), trained on {n} sequences")
        lines.append(f"    {len(prior.lineage) + 1}. this prior, fine-tuned on {ds.get('n_sequences', '?')} sequences")
    lines.append("  training distribution:")
    lines += [f"    {x}" for x in summarise_record(prior.distribution)]
    if cases and prior.distribution.get("cases"):
        lines.append("  training cases:")
        lines += [_case_line(c) for c in prior.distribution["cases"]]
    return lines


def show_prior(spec: str, cases: bool = False, card: bool = True) -> list[str]:
    """``cardioinr priors show``: a built-in prior by name (``builtin``: each of them) or a
    checkpoint path, as lines of text. One-line :class:`CheckpointError` when it is neither."""
    dims = _builtin_dims(spec)
    out: list[str] = []
    if dims:
        for dim in dims:
            path = builtin_path(dim)
            name = path.stem
            entry = manifest()[name]
            out += describe(load_prior(path), f"{name} (built-in, version {entry['version']}) {path}",
                            entry["sha256"], cases)
            card_path = WEIGHTS_DIR / entry.get("card", f"{name}.md")
            if card and card_path.is_file():
                out += ["", f"model card ({card_path.name}):", "", *card_path.read_text().rstrip().splitlines()]
            out.append("")
        return out
    path = Path(spec)
    if not path.exists() and not spec.endswith((".ckpt", ".pt", ".pth")) and "/" not in spec:
        names = ", ".join([BUILTIN, *sorted(manifest())])
        raise CheckpointError(f"{spec}: neither a built-in prior ({names}) nor a checkpoint file")
    prior = load_prior(path)
    return describe(prior, f"{path}", file_sha256(path), cases)


__all__ = ["describe", "show_prior"]
