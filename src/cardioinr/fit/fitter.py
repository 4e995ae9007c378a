"""Fitting a motion field to one cine sequence.

Direction: points X are sampled in the *reference* frame and every frame is pulled back,
``I_t(X + u(X, t)) ~ I_ref(X)``. The field is therefore Lagrangian and lives on the
reference grid, which is exactly the output contract (no inversion needed for the field;
labels are carried to each frame by inverting it on the grid, see :mod:`cardioinr.fit.warp`).

One step: sample a fixed budget of points (uniform + near image edges + inside the heart
when reference labels exist), evaluate the field once for all frames (the time basis is
separable), sample all frames, and add the regularisers computed exactly by forward-mode
autodiff on a point subset. A Gaussian scale-space schedule (coarse to fine) makes the fit
robust to large motion.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from cardioinr.core.errors import ConfigError, FitDivergedError, InputError
from cardioinr.fit.fields import FieldConfig, MotionField
from cardioinr.io import Sequence, atomic_path
from cardioinr.fit.losses import (
    SIMILARITIES,
    det_f_from_grad_u as jacobian_determinant,
    folding_loss,
    gradient_smoothness_loss,
    label_overlap_loss,
    lncc_loss,
    mse_loss,
    ncc_loss,
    temporal_smoothness_loss,
    volume_change_loss,
)
from cardioinr.fit.warp import propagate_labels, sample, sample_frames


@dataclass(frozen=True)
class FitConfig:
    """Settings of one per-sequence fit.

    Weights multiply dimensionless terms (intensities normalised to [0, 1], gradients in
    mm/mm, temporal acceleration in mm per (cycle / 20)^2, whatever the frame count).
    """

    field: FieldConfig = field(default_factory=FieldConfig)
    steps: int = 800
    lr: float = 3e-4
    lr_final: float = 0.1  # cosine decay to lr * lr_final
    points: int = 4096
    reg_points: int = 1024
    similarity: str = "ncc"
    patch: int = 5  # local NCC patch width, voxels
    edge_fraction: float = 0.4
    heart_fraction: float = 0.3
    w_smooth: float = 0.02
    w_fold: float = 10.0  # only acts below det 0.2; 1.0 left rare folds on tagged cines
    w_incompress: float = 0.05
    w_temporal: float = 0.01
    w_labels: float = 0.0  # >0 uses labels of non-reference frames when present
    latent_steps: int = 0  # modulated fields: steps that move only the latent code first (<= steps / 3)
    latent_lr: float = 1e-2
    encoding_lr_scale: float = 30.0  # rate multiplier of trainable encodings (hash-grid tables)
    blur_px: tuple[float, ...] = (2.0, 1.0, 0.0)
    blur_until: tuple[float, ...] = (0.3, 0.6, 1.0)  # fraction of the steps each level lasts to
    patience: int = 150
    min_delta: float = 1e-4
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ConfigError(f"unknown similarity {self.similarity!r} (choose from {', '.join(SIMILARITIES)})")
        if self.steps < 0 or self.points < 16 or self.reg_points < 0:
            raise ConfigError("steps must be >= 0 and points >= 16")
        if not self.lr > 0:
            raise ConfigError("learning rate must be positive")
        if len(self.blur_px) != len(self.blur_until):
            raise ConfigError("blur_px and blur_until must have the same length")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        """Build from a plain dict (e.g. parsed TOML/JSON); unknown keys and values of the
        wrong type are a :class:`ConfigError`."""
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown fit setting(s): {', '.join(sorted(unknown))}")
        if isinstance(d.get("field"), dict):
            fknown = {f.name for f in fields(FieldConfig)}
            bad = set(d["field"]) - fknown
            if bad:
                raise ConfigError(f"unknown field setting(s): {', '.join(sorted(bad))}")
            check_setting_types(FieldConfig, d["field"], "field setting")
            d["field"] = FieldConfig(**d["field"])
        elif "field" in d and not isinstance(d["field"], FieldConfig):
            raise ConfigError(f"fit setting 'field' must be a table of field settings, got {d['field']!r}")
        check_setting_types(cls, {k: v for k, v in d.items() if k != "field"}, "fit setting")
        for k in ("blur_px", "blur_until"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "FitConfig":
        """Load from a TOML or JSON file (a ``[fit]`` table in TOML is accepted too)."""
        return config_from_file(cls, path, "fit")


def config_from_file(cls: type, path: str | Path, table: str):
    """``cls.from_dict`` of a file's settings; every error names the file."""
    try:
        return cls.from_dict(read_config_table(path, table))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(f"{path}:") else f"{path}: {msg}") from None


def check_setting_types(cls: type, d: dict, what: str) -> None:
    """Refuse settings whose value does not have the type of the dataclass default: a number
    for a number (an integer for an integer), a string for a string, a list of numbers for a
    tuple, true/false for a flag."""
    defaults = {f.name: f.default for f in fields(cls)}
    for k, v in d.items():
        default = defaults.get(k)
        if isinstance(default, bool):
            ok = isinstance(v, bool)
            want = "true or false"
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
            want = "an integer"
        elif isinstance(default, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            want = "a finite number"
        elif isinstance(default, str):
            ok = isinstance(v, str)
            want = "a string"
        elif isinstance(default, tuple):
            ok = isinstance(v, (list, tuple)) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            want = "a list of numbers"
        else:
            continue
        if not ok:
            raise ConfigError(f"{what} {k!r} must be {want}, got {v!r}")


def explicit_settings(path: str | Path) -> dict:
    """The settings of a fit config file that differ from the defaults, so that a prior's
    adaptation defaults still apply to everything the file leaves alone."""
    given, default = FitConfig.from_file(path), FitConfig()
    return {f.name: getattr(given, f.name) for f in fields(FitConfig)
            if getattr(given, f.name) != getattr(default, f.name)}


def read_config_table(path: str | Path, table: str) -> dict:
    """The settings in a TOML or JSON file: its ``[table]`` if present, else the whole file."""
    import json
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
        d = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse config ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: a config file must hold a table of settings")
    return d.get(table, d)


@dataclass
class FitResult:
    """What a fit returns.

    Attributes:
        field: the fitted continuous field (query it anywhere: ``field(x_mm, t)``).
        displacement: ``(X, Y, Z, T, 3)`` float32 mm on the reference grid (output contract).
        labels: ``(X, Y, Z, T)`` uint8 reference labels carried to every frame, or None.
        history: one dict of losses per step.
        metrics: fit time, steps, final losses, folding.
    """

    field: MotionField
    displacement: np.ndarray
    labels: np.ndarray | None
    history: list[dict]
    metrics: dict
    config: FitConfig
    sequence: Sequence


# ---------------------------------------------------------------------------------------------
# Preparation (pure helpers)
# ---------------------------------------------------------------------------------------------


def normalise_intensity(image: np.ndarray, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    """Robustly scale intensities to about [0, 1] using percentiles over the whole cine."""
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        lo, hi = float(image.min()), float(image.max())
    return np.clip((image - lo) / (hi - lo), -0.5, 1.5).astype(np.float32)


def heart_mask(seq: Sequence) -> np.ndarray | None:
    """Boolean ``(X, Y, Z)`` mask of the labelled heart at the reference frame, or None."""
    lab = seq.ref_labels
    if lab is None:
        return None
    m = lab > 0
    return m if m.any() else None


def frame_of_reference(seq: Sequence) -> tuple[np.ndarray, float]:
    """Centre (mm, ``(D,)``) and scale (mm) of the normalised coordinates.

    With reference labels the frame is centred on the left ventricle (cavity and myocardium)
    and scaled by its size, so a learned prior transfers across patients, resolutions and
    fields of view. Only the LV counts where it is labelled: every cardiac dataset labels it,
    the RV only some (Sunnybrook has no RV), and a frame that moved with the label set would
    place a prior's motion pattern differently on the same heart. Without LV labels it is the
    whole labelled heart; without labels, the image centre and half the in-plane extent.
    """
    d = seq.ndim_space
    sp = seq.spacing
    mask = heart_mask(seq)
    if mask is not None:
        lv = np.isin(seq.ref_labels, [seq.label_map.lv, seq.label_map.myo])
        mask = lv if lv.any() else mask
        idx = np.argwhere(mask).astype(np.float64)
        centre = idx.mean(0) * sp
        # equivalent diameter of the largest labelled cross-section
        area = max(mask[:, :, k].sum() for k in range(mask.shape[2])) * sp[0] * sp[1]
        scale = 2.0 * math.sqrt(area / math.pi)
    else:
        centre = (np.array(seq.shape) - 1) / 2.0 * sp
        scale = 0.5 * max(seq.shape[0] * sp[0], seq.shape[1] * sp[1])
    return centre[:d], float(max(scale, 4 * sp[:2].max()))


def frame_reflection(seq: Sequence) -> np.ndarray:
    """Axes mirrored in the normalised frame, ``(D,)`` of +-1.

    Voxel axes are left-handed in world space on many scans (the determinant of the affine's
    3 x 3 block is negative, as on all three Sunnybrook stacks). Mirrored, the LV twist,
    which a prior learns with one sense of rotation, would turn the other way. Mirroring the
    first axis of the normalised frame on such scans gives every heart the same handedness.
    The base-to-apex direction is not touched: stacks are taken to run from base to apex
    along k, as the phantoms do.
    """
    r = np.ones(seq.ndim_space)
    if np.linalg.det(np.asarray(seq.affine, dtype=np.float64)[:3, :3]) < 0:
        r[0] = -1.0
    return r


def _blur_inplane(image: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return image
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, sigma=(sigma_px, sigma_px, 0, 0), mode="nearest")


def _sampling_weights(ref: np.ndarray, mask: np.ndarray | None, cfg: FitConfig) -> np.ndarray:
    """Per-voxel probabilities ``(X*Y*Z,)``: uniform + image edges + heart."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    sm = gaussian_filter(ref, sigma=(1, 1, 0), mode="nearest")
    gx, gy = np.gradient(sm, axis=(0, 1))
    edge = np.hypot(gx, gy).ravel()
    parts = [(1.0 - cfg.edge_fraction, np.ones_like(edge))]
    if edge.sum() > 0:
        parts.append((cfg.edge_fraction, edge))
    if mask is not None and cfg.heart_fraction > 0:
        grown = binary_dilation(mask, iterations=3, structure=np.ones((3, 3, 1), bool)) if mask.ndim == 3 else mask
        parts.append((cfg.heart_fraction, grown.ravel().astype(np.float64)))
    w = sum(frac * p / p.sum() for frac, p in parts)
    return (w / w.sum()).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# The fitter
# ---------------------------------------------------------------------------------------------


class Fitter:
    """Fits a :class:`MotionField` to one sequence. Reusable across sequences."""

    def __init__(self, config: FitConfig | None = None) -> None:
        self.config = config or FitConfig()

    def new_field(self, seq: Sequence) -> MotionField:
        centre, scale = frame_of_reference(seq)
        torch.manual_seed(self.config.seed)
        return MotionField(self.config.field, seq.ndim_space, seq.n_frames, seq.ref_frame,
                           centre=torch.as_tensor(centre, dtype=torch.float32), scale=scale,
                           seed=self.config.seed, reflect=torch.as_tensor(frame_reflection(seq)))

    def fit(
        self,
        seq: Sequence,
        init: MotionField | None = None,
        callback: Callable[[int, dict], None] | None = None,
        progress: bool = False,
    ) -> FitResult:
        """Fit the field and return it with the dense outputs.

        Args:
            seq: the cine (its ``ref_frame`` is the reference; ``labels[ref_frame]`` optional).
            init: start from this field (a prior); a fresh field otherwise. Not modified.
            callback: called as ``callback(step, logs)`` after every step.
            progress: show a progress bar.
        """
        cfg = self.config
        t0 = time.perf_counter()
        field_ = self.new_field(seq) if init is None else copy.deepcopy(init)
        history = self.optimise(seq, field_, callback, progress)
        fit_seconds = time.perf_counter() - t0
        disp = field_.dense(seq.shape, torch.as_tensor(seq.spacing)).cpu().numpy().astype(np.float32)
        labels = None
        if seq.ref_labels is not None:
            labels = propagate_labels(seq.ref_labels, disp, seq.spacing, sorted(seq.label_map.codes()))
        metrics = _fit_metrics(seq, cfg, history, disp, labels, fit_seconds, time.perf_counter() - t0)
        return FitResult(field_.cpu(), disp, labels, history, metrics, cfg, seq)

    # -- optimisation loop -------------------------------------------------------------------
    def optimise(self, seq: Sequence, field_: MotionField, callback: Callable[[int, dict], None] | None = None,
                 progress: bool = False) -> list[dict]:
        """Optimise ``field_`` in place on ``seq`` (no dense outputs); returns the loss history.

        For a field with a latent code, the first ``latent_steps`` steps move only the code
        (auto-decoder adaptation), then all weights and the code together."""
        device = resolve_device(self.config.device)
        _check_compatible(field_, seq)
        field_.to(device)
        return self._optimise(field_, _Problem(seq, self.config, device), callback, progress)

    def _optimise(self, field_: MotionField, problem: "_Problem", callback, progress: bool) -> list[dict]:
        cfg = self.config
        history: list[dict] = []
        if cfg.steps == 0:
            return history
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        z = torch.nn.Parameter(field_.latent.detach().clone()) if field_.modulator is not None else None
        # The code-only phase takes at most a third of the budget, so that short fits still
        # move the weights (a code alone cannot leave the training distribution).
        latent_steps = min(cfg.latent_steps, cfg.steps // 3)
        latent_only = z is not None and latent_steps > 0

        def make_optimiser(lr: float) -> torch.optim.Optimizer:
            if latent_only:
                return torch.optim.Adam([z], lr=cfg.latent_lr)
            enc = list(field_.encoding.parameters())
            enc_ids = {id(p) for p in enc}
            groups = [{"params": [p for p in field_.parameters() if id(p) not in enc_ids], "base": lr}]
            if enc:
                # Hash-grid tables are sparse lookups: each entry sees few gradients, so they
                # need a much larger rate than the MLP (as in instant-NGP).
                groups.append({"params": enc, "base": lr * cfg.encoding_lr_scale})
            if z is not None:
                groups.append({"params": [z], "base": cfg.latent_lr})
            for g in groups:
                g["lr"] = g["base"]
            return torch.optim.Adam(groups)

        def snapshot() -> tuple[dict, torch.Tensor | None]:
            return copy.deepcopy(field_.state_dict()), None if z is None else z.detach().clone()

        lr = cfg.lr
        retries = 1
        good = snapshot()
        opt = make_optimiser(lr)
        best, since_best = math.inf, 0
        ema, ema_level = None, -1
        bar = _progress_bar(cfg.steps) if progress else None
        step = 0
        try:
            while step < cfg.steps:
                if latent_only and step >= latent_steps:
                    latent_only = False
                    opt = make_optimiser(lr)
                frac = step / max(cfg.steps - 1, 1)
                level = problem.level_at(frac)
                if not latent_only:
                    decay = cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * frac))
                    for g in opt.param_groups:
                        g["lr"] = g["base"] * decay
                opt.zero_grad(set_to_none=True)
                total, logs = problem.loss(field_, level, gen, latent=z)
                if not torch.isfinite(total):
                    if retries == 0:
                        raise FitDivergedError(
                            f"{problem.seq.name}: the fit diverged (non-finite loss at step {step}) even after "
                            "restarting with half the learning rate; try a lower --lr or stronger regularisation"
                        )
                    retries -= 1
                    lr *= 0.5
                    field_.load_state_dict(good[0])
                    if z is not None:
                        with torch.no_grad():
                            z.copy_(good[1])
                    opt = make_optimiser(lr)
                    history.append({"restart": step, "lr": lr})
                    continue
                total.backward()
                opt.step()
                logs["step"] = step
                logs["level"] = level
                history.append(logs)
                if step % 50 == 0:
                    good = snapshot()
                if callback is not None:
                    callback(step, logs)
                if bar is not None:
                    bar[0].update(bar[1], advance=1, description=f"fit loss {logs['loss']:.4f}")
                step += 1
                # Early stopping only at the finest scale; losses of different scales differ.
                if level != ema_level:
                    ema, ema_level, best, since_best = None, level, math.inf, 0
                ema = logs["loss"] if ema is None else 0.9 * ema + 0.1 * logs["loss"]
                if level == problem.n_levels - 1 and not latent_only:
                    if not math.isfinite(best) or ema < best - cfg.min_delta * abs(best):
                        best, since_best = ema, 0
                    else:
                        since_best += 1
                        if since_best >= cfg.patience:
                            break
        finally:
            if bar is not None:
                bar[0].stop()
            if z is not None:
                with torch.no_grad():
                    field_.latent.copy_(z.detach())
        return history


def evaluate_loss(field_: MotionField, seq: Sequence, config: FitConfig | None = None, repeats: int = 4,
                  seed: int = 12345) -> float:
    """The fitting loss of ``field_`` on ``seq`` at the finest scale, averaged over ``repeats``
    fixed point draws (deterministic: for comparing initialisations and adaptation curves)."""
    return evaluate_losses([field_], seq, config, repeats, seed)[0]


def evaluate_losses(fields: list[MotionField], seq: Sequence, config: FitConfig | None = None, repeats: int = 4,
                    seed: int = 12345) -> list[float]:
    """:func:`evaluate_loss` of several fields on the same point draws (common random numbers,
    so their differences are not sampling noise), building the problem once."""
    cfg = config or FitConfig()
    device = resolve_device(cfg.device)
    for f in fields:
        _check_compatible(f, seq)
    problem = _Problem(seq, cfg, device)
    out = []
    for f in fields:
        gen = torch.Generator().manual_seed(seed)
        f = f.to(device)
        with torch.enable_grad():  # forward-mode Jacobians need autograd machinery, not gradients
            vals = [problem.loss(f, problem.n_levels - 1, gen)[0].item() for _ in range(repeats)]
        out.append(float(np.mean(vals)))
    return out


def _progress_bar(total: int):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                 TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
    task = p.add_task("fit", total=total)
    p.start()
    return p, task


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a clear error when CUDA is asked for but absent."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r} (use cpu or cuda)")
    return dev


def _check_compatible(field_: MotionField, seq: Sequence) -> None:
    if field_.dim != seq.ndim_space:
        raise InputError(f"{seq.name}: the initial field is {field_.dim}D but the sequence is {seq.ndim_space}D")
    if field_.n_frames != seq.n_frames or field_.ref_frame != seq.ref_frame:
        # Time is continuous in cycle phase, so a field for another frame count is re-timed.
        field_.set_frame(field_.centre, float(field_.scale), seq.n_frames, seq.ref_frame)


class _Problem:
    """The data of one fit on the device, and the loss of one step."""

    def __init__(self, seq: Sequence, cfg: FitConfig, device: torch.device) -> None:
        self.seq, self.cfg, self.device = seq, cfg, device
        self.dim = seq.ndim_space
        self.spacing = torch.as_tensor(seq.spacing, dtype=torch.float32, device=device)
        img = normalise_intensity(seq.image)
        self.levels = []
        for s in cfg.blur_px:
            lvl = torch.from_numpy(np.ascontiguousarray(_blur_inplane(img, s).transpose(3, 0, 1, 2))).to(device)
            self.levels.append(lvl)  # (T, X, Y, Z)
        self.n_levels = len(self.levels)
        self.others = torch.tensor([t for t in range(seq.n_frames) if t != seq.ref_frame], device=device)
        mask = heart_mask(seq)
        self.weights = torch.from_numpy(_sampling_weights(img[..., seq.ref_frame], mask, cfg)).to(device)
        self.shape = seq.shape
        self.stride = torch.tensor([seq.shape[1] * seq.shape[2], seq.shape[2], 1], device=device)
        # Through-plane, data exist only at slice centres: similarity points stay on slices when
        # slices are thick; regulariser points fill the gaps.
        self.jitter_z_similarity = self.dim == 3 and seq.spacing[2] <= 2.0 * seq.spacing[:2].max()
        self.myo = None
        self.onehot = None
        if seq.ref_labels is not None:
            lm = seq.label_map
            codes = sorted(lm.codes())
            ref = torch.from_numpy(seq.ref_labels.astype(np.int64)).to(device)
            if lm.myo is not None and (seq.ref_labels == lm.myo).any():
                self.myo = (ref == lm.myo).float().unsqueeze(0)  # (1, X, Y, Z)
            extra = [t for t in seq.labels if t != seq.ref_frame]
            if cfg.w_labels > 0 and extra:
                self.label_frames = torch.tensor(extra, device=device)
                oh = []
                for t in extra:
                    lab = torch.from_numpy(seq.labels[t].astype(np.int64)).to(device)
                    oh.append(torch.stack([(lab == c).float() for c in codes]))
                self.onehot_frames = torch.stack(oh)  # (F, C, X, Y, Z)
                self.onehot_ref = torch.stack([(ref == c).float() for c in codes])
                self.onehot = True
        if cfg.similarity == "lncc":
            p = cfg.patch
            r = torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2
            off = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2) * self.spacing[:2]
            if self.dim == 3:
                off = torch.cat([off, torch.zeros(off.shape[0], 1, device=device)], 1)
            self.patch_offsets = off  # (P, D)

    def level_at(self, frac: float) -> int:
        for i, until in enumerate(self.cfg.blur_until):
            if frac < until:
                return i
        return self.n_levels - 1

    def sample_points(self, n: int, gen: torch.Generator, jitter_z: bool) -> torch.Tensor:
        """``(n, D)`` reference points in mm, drawn from the sampling weights, jittered in-voxel."""
        idx = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=gen).to(self.device)
        ijk = torch.stack([idx // self.stride[0], (idx // self.stride[1]) % self.shape[1], idx % self.shape[2]], -1).float()
        jit = torch.rand(n, 3, generator=gen).to(self.device) - 0.5
        if not jitter_z:
            jit[:, 2] = 0
        pts = (ijk + jit) * self.spacing
        hi = (torch.tensor(self.shape, device=self.device) - 1) * self.spacing
        pts = torch.minimum(pts.clamp(min=0), hi)
        return pts[:, : self.dim]

    def loss(self, field_: MotionField, level: int, gen: torch.Generator,
             latent: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Total loss of one step and its terms (floats); ``latent`` for modulated fields."""
        cfg = self.cfg
        frames = self.levels[level]
        ref_t = self.seq.ref_frame
        if cfg.similarity == "lncc":
            m = max(1, cfg.points // self.patch_offsets.shape[0])
            centres = self.sample_points(m, gen, self.jitter_z_similarity)
            x = (centres.unsqueeze(1) + self.patch_offsets.unsqueeze(0)).reshape(-1, self.dim)
        else:
            x = self.sample_points(cfg.points, gen, self.jitter_z_similarity)
        coeffs = field_.coefficients(x, latent)
        basis = field_.basis()[self.others]  # (T-1, 2K)
        u = torch.einsum("nkd,tk->tnd", coeffs, basis)  # (T-1, N, D)
        fixed = sample(frames[ref_t].unsqueeze(0), x, self.spacing).t()  # (1, N)
        moving = sample_frames(frames[self.others], x.unsqueeze(0) + u, self.spacing)  # (T-1, N)
        if cfg.similarity == "ncc":
            sim = ncc_loss(fixed.t(), moving.t())
        elif cfg.similarity == "mse":
            sim = mse_loss(fixed.t(), moving.t())
        else:
            p = self.patch_offsets.shape[0]
            sim = lncc_loss(fixed.t().reshape(-1, p, 1), moving.t().reshape(-1, p, moving.shape[0]))
        total = sim
        logs = {"sim": sim.item()}
        if cfg.w_temporal > 0:
            tem = temporal_smoothness_loss(coeffs)
            total = total + cfg.w_temporal * tem
            logs["temporal"] = tem.item()
        if cfg.reg_points > 0 and (cfg.w_smooth > 0 or cfg.w_fold > 0 or cfg.w_incompress > 0):
            xr = self.sample_points(cfg.reg_points, gen, jitter_z=True)
            _, jac_c = field_.coefficients_and_jacobian(xr, latent)
            jac = torch.einsum("nkij,tk->ntij", jac_c, basis)  # (M, T-1, D, D)
            det = jacobian_determinant(jac)
            if cfg.w_smooth > 0:
                sm = gradient_smoothness_loss(jac)
                total = total + cfg.w_smooth * sm
                logs["smooth"] = sm.item()
            if cfg.w_fold > 0:
                fo = folding_loss(det)
                total = total + cfg.w_fold * fo
                logs["fold"] = fo.item()
            if cfg.w_incompress > 0 and self.myo is not None:
                w = sample(self.myo, xr, self.spacing, mode="nearest")  # (M, 1)
                inc = volume_change_loss(det, w)
                total = total + cfg.w_incompress * inc
                logs["incompress"] = inc.item()
            logs["min_det"] = det.min().item()
        if self.onehot is not None and cfg.w_labels > 0:
            lab_u = torch.einsum("nkd,tk->tnd", coeffs, field_.basis()[self.label_frames])
            ref_oh = sample(self.onehot_ref, x, self.spacing).unsqueeze(0).expand(len(self.label_frames), -1, -1)
            mov_oh = torch.stack([
                sample(self.onehot_frames[i], x + lab_u[i], self.spacing) for i in range(len(self.label_frames))
            ])  # (F, N, C)
            lab = label_overlap_loss(ref_oh.permute(1, 0, 2), mov_oh.permute(1, 0, 2))
            total = total + cfg.w_labels * lab
            logs["labels"] = lab.item()
        logs["loss"] = total.item()
        return total, logs


def _fit_metrics(seq: Sequence, cfg: FitConfig, history: list[dict], disp: np.ndarray,
                 labels: np.ndarray | None, fit_seconds: float, total_seconds: float) -> dict:
    from cardioinr.analysis.metrics import folding_stats

    steps = [h for h in history if "loss" in h]
    last = steps[-1] if steps else {}
    mask = heart_mask(seq)
    if mask is not None:
        from scipy.ndimage import binary_dilation

        mask = binary_dilation(mask, iterations=3, structure=np.ones((3, 3, 1), bool))
    fold_all = folding_stats(disp, seq.spacing)
    out = {
        "fit_seconds": round(fit_seconds, 3),
        "total_seconds": round(total_seconds, 3),
        "steps": len(steps),
        "restarts": sum(1 for h in history if "restart" in h),
        "final_losses": {k: v for k, v in last.items() if k not in ("step", "level")},
        "percent_negative_jacobian": fold_all["percent_folded"],
        "min_jacobian_determinant": fold_all["min_det"],
        "max_displacement_mm": float(np.abs(disp).max()),
    }
    if mask is not None:
        fold_heart = folding_stats(disp, seq.spacing, mask=mask)
        out["percent_negative_jacobian_heart"] = fold_heart["percent_folded"]
    return out


# ---------------------------------------------------------------------------------------------
# Saving and loading a fitted field
# ---------------------------------------------------------------------------------------------


def save_field(path: str | Path, field_: MotionField) -> Path:
    """Save a fitted field (architecture + weights) atomically as a torch file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": "cardioinr-field", "version": 1, "describe": field_.describe(),
                    "state_dict": field_.state_dict()}, tmp)
    return path


def load_field(path: str | Path, device: str = "cpu") -> MotionField:
    """Load a field written by :func:`save_field`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: field file not found")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
        d = obj["describe"]
        f = MotionField(FieldConfig(**d["config"]), d["dim"], d["n_frames"], d["ref_frame"],
                        centre=torch.tensor(d["centre"]), scale=d["scale"])
        f.load_state_dict(obj["state_dict"])
    except InputError:
        raise
    except Exception as e:  # corrupt or foreign file
        raise InputError(f"{path}: not a readable cardioinr field file ({str(e).splitlines()[0][:160]})") from None
    return f


def fit_sequence(seq: Sequence, config: FitConfig | None = None, init: MotionField | None = None,
                 progress: bool = False) -> FitResult:
    """Convenience wrapper: ``Fitter(config).fit(seq, init)``."""
    return Fitter(config).fit(seq, init=init, progress=progress)


__all__ = ["FitConfig", "FitResult", "Fitter", "evaluate_loss", "evaluate_losses", "fit_sequence", "frame_of_reference",
           "frame_reflection", "load_field", "normalise_intensity", "resolve_device", "save_field"]
