"""Peer motion-estimation methods wrapped to cardioinr's output contract.

Every wrapper takes a :class:`cardioinr.io.Sequence` and returns a float32 displacement
``(X, Y, Z, T, 3)``: millimetres along the array axes i, j, k, Lagrangian from the reference
frame (``x_t = X + u(X)``, ``X`` a reference-frame voxel centre), zero at the reference frame.

Conventions (the place where such comparisons usually go wrong)
----------------------------------------------------------------
* **Images handed to ITK / ANTs carry origin 0, identity direction and our spacing**, so a
  physical ("world") point of those images *is* our array-aligned mm point ``index * spacing``
  and a physical displacement vector *is* our displacement along the array axes: no direction
  cosines to apply. (With the file's real affine one would rotate world vectors into array axes
  with the affine's direction cosines, ``R.T @ v`` with ``R`` = the affine's columns / spacing,
  and flip x, y for ITK's LPS against NIfTI's RAS.)
* SimpleITK's ``GetImageFromArray`` reads a NumPy array as ``[k, j, i]``, so our ``(X, Y, Z)``
  volume goes in transposed and fields come back transposed; ANTsPy's ``from_numpy`` keeps the
  ``[i, j, k]`` order.
* **ITK / ANTs registration transforms map fixed-image points to moving-image points.** With
  fixed = the reference frame and moving = frame t, the transform is ``X -> x_t``, exactly our
  Lagrangian map; its displacement field sampled on the reference grid is ``u``.
* **VoxelMorph** predicts a pull-back field ``phi(x) = x + v(x)`` on the fixed grid such that
  ``moving(phi(x)) ~ fixed(x)``. With moving = frame t and fixed = the reference, ``v(X)`` is
  where reference point ``X`` went: the Lagrangian displacement again (in voxels along the
  tensor axes; multiplied by the spacing here).

Each of these is checked against a known translation in ``tests/test_peer_methods.py``
(image content moved by +d mm must give u = +d).

Threads: call :func:`pin_threads` (one thread everywhere) before importing SimpleITK / ANTs in
a fresh process; the benchmark runs every (method, case) in its own process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def pin_threads(n: int = 1) -> None:
    """One (or ``n``) thread for torch, OpenMP/BLAS, ITK and ANTs. Environment variables only act
    on libraries loaded afterwards: call this first in a fresh process."""
    for v in THREAD_VARS:
        os.environ[v] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    except ImportError:  # pragma: no cover
        pass


def available(method: str) -> bool:
    """Whether the optional package behind ``method`` imports."""
    mod = {"bspline": "SimpleITK", "syn": "ants", "voxelmorph": "voxelmorph"}.get(method)
    if mod is None:
        return True
    try:
        __import__(mod)
    except Exception:
        return False
    return True


def normalised_frames(seq) -> np.ndarray:
    """The cine scaled as cardioinr's fit sees it (robust percentiles to about [0, 1]);
    every method gets the same input. ``(X, Y, Z, T)`` float32."""
    from cardioinr.fit import normalise_intensity

    return normalise_intensity(seq.image)


def _check_out(u: np.ndarray, seq) -> np.ndarray:
    u = np.asarray(u, dtype=np.float32)
    assert u.shape == seq.shape + (seq.n_frames, 3), u.shape
    u[:, :, :, seq.ref_frame, :] = 0.0
    if not np.all(np.isfinite(u)):
        raise FloatingPointError(f"{seq.name}: non-finite displacement")
    return u


# =============================================================================================
# SimpleITK B-spline free-form deformation
# =============================================================================================


@dataclass(frozen=True)
class BSplineConfig:
    """SimpleITK B-spline FFD, one registration per frame (reference = fixed, frame t = moving).

    ``mesh_mm``: control-point spacing of the final B-spline grid (in-plane; through-plane the
    grid spacing is at least two slice steps). ``shrink``/``sigmas_mm``: image pyramid (shrink
    factors and Gaussian smoothing in mm per level; ITK shrinks every axis, a thick-slice stack
    of Z slices keeps at least one). ``metric``: ``mattes`` (Mattes MI, ``bins``), ``correlation``
    or ``meansquares``; ``sampling``: fraction of voxels sampled per metric evaluation (random,
    seeded; 1.0 = all). LBFGSB with ``iterations`` per level. The mesh is the same at every
    level (SimpleITK's mesh refinement, ``SetInitialTransformAsBSpline`` scale factors, fails
    with LBFGSB in SimpleITK 2.5: the optimiser's scales keep the coarse size).
    """

    mesh_mm: float = 12.0
    metric: str = "meansquares"
    bins: int = 32
    sampling: float = 0.2
    shrink: tuple[int, ...] = (4, 2, 1)
    sigmas_mm: tuple[float, ...] = (3.0, 1.5, 0.0)
    iterations: int = 100
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def sitk_image(vol: np.ndarray, spacing) -> "object":
    """A SimpleITK image of an ``(X, Y)`` or ``(X, Y, Z)`` array (index (i, j[, k]) = array index),
    origin 0, identity direction, our spacing: its physical points are our mm points."""
    import SimpleITK as sitk

    vol = np.ascontiguousarray(np.asarray(vol, dtype=np.float32).T)  # sitk wants [k, j, i]
    img = sitk.GetImageFromArray(vol)
    d = vol.ndim
    img.SetSpacing([float(s) for s in spacing[:d]])
    img.SetOrigin([0.0] * d)
    img.SetDirection(np.eye(d).ravel().tolist())
    return img


def sitk_transform_displacement(tx, reference) -> np.ndarray:
    """Dense displacement ``T(X) - X`` of an ITK transform on the grid of ``reference``, as an
    ``(X, Y[, Z], D)`` array in physical (= our mm) components along i, j[, k]."""
    import SimpleITK as sitk

    f = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, reference.GetSize(), reference.GetOrigin(),
                                          reference.GetSpacing(), reference.GetDirection())
    arr = sitk.GetArrayFromImage(f)  # [k, j, i, c] (or [j, i, c])
    d = arr.ndim - 1
    return np.ascontiguousarray(arr.transpose(tuple(range(d - 1, -1, -1)) + (d,)))


def bspline_pair(fixed: np.ndarray, moving: np.ndarray, spacing, cfg: BSplineConfig) -> np.ndarray:
    """Register ``fixed`` (reference) -> ``moving``; ``(X, Y[, Z], D)`` Lagrangian mm displacement."""
    import SimpleITK as sitk

    f, m = sitk_image(fixed, spacing), sitk_image(moving, spacing)
    d = f.GetDimension()
    size = np.array(f.GetSize(), float)
    sp = np.array(f.GetSpacing(), float)
    extent = (size - 1) * sp
    mesh_mm = np.full(d, float(cfg.mesh_mm))
    if d == 3:  # thick slices: at least two slice steps between control points through-plane
        mesh_mm[2] = max(mesh_mm[2], 2.0 * sp[2])
    mesh = [max(1, int(round(e / s))) for e, s in zip(extent, mesh_mm)]
    tx = sitk.BSplineTransformInitializer(f, mesh, order=3)
    reg = sitk.ImageRegistrationMethod()
    if cfg.metric == "mattes":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg.bins)
    elif cfg.metric == "correlation":
        reg.SetMetricAsCorrelation()
    elif cfg.metric == "meansquares":
        reg.SetMetricAsMeanSquares()
    else:
        raise ValueError(f"unknown metric {cfg.metric!r}")
    if cfg.sampling < 1.0:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(cfg.sampling, cfg.seed)
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    # A shrink factor larger than an axis (8 thick slices) would empty it: cap per level.
    smallest = int(min(f.GetSize()))
    shrink = [max(1, min(int(s), smallest // 2 if smallest >= 2 else 1)) for s in cfg.shrink]
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel([float(s) for s in cfg.sigmas_mm])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=cfg.iterations,
                             maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * cfg.iterations,
                             costFunctionConvergenceFactor=1e7)
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f, m)
    return sitk_transform_displacement(tx, f)


def _pairwise_sequence(seq, pair, cfg, frames: list[int] | None) -> np.ndarray:
    """Register the reference frame to every frame with ``pair(fixed, moving, spacing, cfg)``
    (2D slices as 2D images, stacks as 3D); ``(X, Y, Z, T, 3)`` mm."""
    img = normalised_frames(seq)
    sp = seq.spacing
    u = np.zeros(seq.shape + (seq.n_frames, 3), np.float32)
    ref = img[..., seq.ref_frame]
    for t in frames if frames is not None else range(seq.n_frames):
        if t == seq.ref_frame:
            continue
        if seq.is_2d:
            u[:, :, 0, t, :2] = pair(ref[:, :, 0], img[:, :, 0, t], sp, cfg)
        else:
            u[:, :, :, t, :] = pair(ref, img[..., t], sp, cfg)
    return _check_out(u, seq)


def bspline_sequence(seq, cfg: BSplineConfig = BSplineConfig(), frames: list[int] | None = None) -> np.ndarray:
    """B-spline FFD of the reference frame to every frame (2D slices as 2D images, stacks as 3D)."""
    return _pairwise_sequence(seq, bspline_pair, cfg, frames)


# =============================================================================================
# ANTs SyN (antspyx)
# =============================================================================================


@dataclass(frozen=True)
class SynConfig:
    """``ants.registration(type_of_transform="SyNOnly")`` from the identity (no affine stage: the
    frames of one cine are already aligned), one registration per frame.

    ``metric``: ``mattes`` (sampling = histogram bins) or ``CC`` (sampling = radius, voxels);
    ``reg_iterations``: iterations per level (shrink factors 2^(n-1)..1, smoothing n-1..0 voxels);
    ``grad_step``, ``flow_sigma`` (update field smoothing, voxels), ``total_sigma`` (total field)."""

    metric: str = "mattes"
    sampling: int = 32
    reg_iterations: tuple[int, ...] = (40, 20, 0)
    grad_step: float = 0.2
    flow_sigma: float = 3.0
    total_sigma: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def ants_image(vol: np.ndarray, spacing):
    """An ANTs image of an ``(X, Y[, Z])`` array: origin 0, identity direction, our spacing."""
    import ants

    vol = np.ascontiguousarray(np.asarray(vol, dtype=np.float32))
    d = vol.ndim
    return ants.from_numpy(vol, origin=(0.0,) * d, spacing=tuple(float(s) for s in spacing[:d]),
                           direction=np.eye(d))


def ants_forward_displacement(fwdtransforms: list[str], fixed) -> np.ndarray:
    """``T(X) - X`` of ANTs' forward transform list (fixed -> moving points) on the fixed grid.

    For ``SyNOnly`` from the identity the list holds the SyN warp field (a displacement image on
    the fixed grid, physical components, here our mm along i, j, k) and the identity initial
    transform ANTs writes as ``0GenericAffine.mat``. A non-identity linear transform is refused
    (this benchmark never starts SyN from one)."""
    import ants

    warp = None
    for p in fwdtransforms:
        if p.endswith((".nii.gz", ".nii")):
            if warp is not None:
                raise ValueError(f"more than one warp field in {fwdtransforms}")
            warp = p
        else:
            tx = ants.read_transform(p)
            d = tx.dimension
            params = np.asarray(tx.parameters, dtype=np.float64)
            ident = np.concatenate([np.eye(d).ravel(), np.zeros(d)])
            if params.shape != ident.shape or not np.allclose(params, ident, atol=1e-6):
                raise ValueError(f"{p}: a non-identity linear transform ({tx.transform_type}) in the SyN output")
    if warp is None:
        raise ValueError(f"no warp field in {fwdtransforms}")
    d = fixed.dimension
    disp = ants.image_read(warp).numpy()  # (X, Y[, Z], D)
    if disp.shape[:d] != tuple(fixed.shape) or disp.shape[-1] != d:
        raise ValueError(f"warp field {disp.shape} does not match the fixed image {fixed.shape}")
    return disp.astype(np.float64)


def syn_pair(fixed: np.ndarray, moving: np.ndarray, spacing, cfg: SynConfig) -> np.ndarray:
    """Register ``fixed`` (reference) -> ``moving`` with SyN; ``(X, Y[, Z], D)`` Lagrangian mm."""
    import ants

    f, m = ants_image(fixed, spacing), ants_image(moving, spacing)
    tmp = tempfile.mkdtemp(prefix="cardioinr_syn_")
    try:
        reg = ants.registration(f, m, type_of_transform="SyNOnly", initial_transform="Identity",
                                outprefix=os.path.join(tmp, "r"), syn_metric=cfg.metric,
                                syn_sampling=cfg.sampling, reg_iterations=tuple(cfg.reg_iterations),
                                grad_step=cfg.grad_step, flow_sigma=cfg.flow_sigma, total_sigma=cfg.total_sigma,
                                random_seed=cfg.seed)
        return ants_forward_displacement(reg["fwdtransforms"], f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def syn_sequence(seq, cfg: SynConfig = SynConfig(), frames: list[int] | None = None) -> np.ndarray:
    """SyN of the reference frame to every frame (2D slices as 2D images, stacks as 3D)."""
    return _pairwise_sequence(seq, syn_pair, cfg, frames)


# =============================================================================================
# VoxelMorph (voxelmorph 0.3.4, PyTorch), trained on phantoms, applied slice by slice
# =============================================================================================


@dataclass(frozen=True)
class VxmConfig:
    """A 2D VoxelMorph (``voxelmorph.nn.models.VxmPairwise``: BasicUNet + flow layer + scaling-and-
    squaring integration of a stationary velocity field + spatial transformer).

    Unsupervised loss: ``-NCC`` (local, ``window`` px) or MSE between the warped frame and the
    reference, plus ``lam`` x the diffusion regulariser (mean squared finite differences of the
    displacement, voxels). Trained with Adam on random ``crop`` x ``crop`` crops of (reference,
    frame t) pairs with random flips / transposes; 3D stacks are processed slice by slice
    (in-plane motion only; the through-plane component is 0)."""

    features: tuple[int, ...] = (16, 32, 32, 32, 32)
    integration_steps: int = 5
    loss: str = "ncc"
    window: int = 9
    lam: float = 1.0
    lr: float = 1e-3
    iterations: int = 1200
    batch: int = 8
    crop: int = 96
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def build_vxm(cfg: VxmConfig):
    import voxelmorph as vxm

    return vxm.nn.models.VxmPairwise(ndim=2, source_channels=1, target_channels=1,
                                     nb_features=list(cfg.features), integration_steps=cfg.integration_steps)


def vxm_pairs(seqs) -> list[tuple[np.ndarray, np.ndarray]]:
    """(reference slice, frames of that slice ``(T-1, X, Y)``) for every slice of every sequence."""
    out = []
    for seq in seqs:
        img = normalised_frames(seq)
        others = [t for t in range(seq.n_frames) if t != seq.ref_frame]
        for k in range(seq.shape[2]):
            ref = img[:, :, k, seq.ref_frame]
            if ref.std() < 1e-3:
                continue
            out.append((ref, np.moveaxis(img[:, :, k, others], -1, 0)))
    return out


def _vxm_loss(cfg: VxmConfig):
    import neurite as ne
    import torch

    grad = ne.nn.modules.SpatialGradient(penalty="l2")
    if cfg.loss == "ncc":
        ncc = ne.nn.modules.NCC(window_size=cfg.window)

        def sim(a, b):
            return -ncc(a, b).mean()
    elif cfg.loss == "mse":
        def sim(a, b):
            return torch.mean((a - b) ** 2)
    else:
        raise ValueError(f"unknown loss {cfg.loss!r}")
    return sim, grad


def train_vxm(seqs, cfg: VxmConfig = VxmConfig(), log_every: int = 100, callback=None):
    """Train on (reference, frame t) pairs of ``seqs`` (unsupervised). Returns (model, history)."""
    import torch

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pairs = vxm_pairs(seqs)
    model = build_vxm(cfg)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sim, grad = _vxm_loss(cfg)
    history = []
    t0 = time.perf_counter()
    c = cfg.crop
    for it in range(cfg.iterations):
        fix, mov = [], []
        for _ in range(cfg.batch):
            ref, frames = pairs[rng.integers(len(pairs))]
            fr = frames[rng.integers(len(frames))]
            nx, ny = ref.shape
            ox = rng.integers(0, nx - c + 1) if nx > c else 0
            oy = rng.integers(0, ny - c + 1) if ny > c else 0
            a, b = _pad_to(ref[ox:ox + c, oy:oy + c], c), _pad_to(fr[ox:ox + c, oy:oy + c], c)
            if rng.random() < 0.5:
                a, b = a[::-1], b[::-1]
            if rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            if rng.random() < 0.5:
                a, b = a.T, b.T
            fix.append(a.copy())
            mov.append(b.copy())
        fixed = torch.from_numpy(np.stack(fix))[:, None]
        moving = torch.from_numpy(np.stack(mov))[:, None]
        disp, warped = model(moving, fixed, return_warped_source=True)
        s = sim(warped, fixed)
        r = grad(disp)
        loss = s + cfg.lam * r
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % log_every == 0 or it == cfg.iterations - 1:
            history.append({"iter": it, "loss": loss.item(), "sim": s.item(), "reg": r.item(),
                            "seconds": time.perf_counter() - t0})
            if callback is not None:
                callback(history[-1])
    model.eval()
    return model, history


def _pad_to(a: np.ndarray, c: int) -> np.ndarray:
    px, py = max(0, c - a.shape[0]), max(0, c - a.shape[1])
    if px or py:
        a = np.pad(a, ((0, px), (0, py)), mode="edge")
    return a


def save_vxm(path: str | Path, model, cfg: VxmConfig, history: list, meta: dict | None = None) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "cardioinr-peer-voxelmorph", "version": 1, "config": cfg.to_dict(),
                "state_dict": model.state_dict(), "history": history, "meta": meta or {}}, path)
    return path


def load_vxm(path: str | Path):
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=False)
    d = dict(obj["config"])
    d["features"] = tuple(d["features"])
    cfg = VxmConfig(**d)
    model = build_vxm(cfg)
    model.load_state_dict(obj["state_dict"])
    model.eval()
    return model, cfg


def vxm_pair_displacement(model, fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """VoxelMorph field for 2D arrays ``fixed`` (reference) and ``moving`` ``(B, X, Y)`` or
    ``(X, Y)``: the pull-back displacement on the fixed grid, voxels, ``(..., X, Y, 2)``."""
    import torch

    fixed, moving = np.asarray(fixed, np.float32), np.asarray(moving, np.float32)
    single = fixed.ndim == 2
    if single:
        fixed, moving = fixed[None], moving[None]
    nx, ny = fixed.shape[1:]
    m = 32  # the BasicUNet pools five times
    px, py = (-nx) % m, (-ny) % m
    pad = ((0, 0), (px // 2, px - px // 2), (py // 2, py - py // 2))
    f = torch.from_numpy(np.pad(fixed, pad, mode="edge"))[:, None]
    mv = torch.from_numpy(np.pad(moving, pad, mode="edge"))[:, None]
    with torch.no_grad():
        disp = model(mv, f).numpy()  # (B, 2, X', Y')
    disp = disp[:, :, px // 2: px // 2 + nx, py // 2: py // 2 + ny]
    out = np.moveaxis(disp, 1, -1)
    return out[0] if single else out


def vxm_sequence(seq, model, frames: list[int] | None = None) -> np.ndarray:
    """Apply a trained 2D VoxelMorph to every (reference, frame t) pair, slice by slice."""
    img = normalised_frames(seq)
    sp = seq.spacing
    u = np.zeros(seq.shape + (seq.n_frames, 3), np.float32)
    ts = [t for t in (frames if frames is not None else range(seq.n_frames)) if t != seq.ref_frame]
    for k in range(seq.shape[2]):
        ref = img[:, :, k, seq.ref_frame]
        mov = np.moveaxis(img[:, :, k, ts], -1, 0)
        v = vxm_pair_displacement(model, np.broadcast_to(ref, mov.shape), mov)  # (T', X, Y, 2) voxels
        for n, t in enumerate(ts):
            u[:, :, k, t, 0] = v[n, ..., 0] * sp[0]
            u[:, :, k, t, 1] = v[n, ..., 1] * sp[1]
    return _check_out(u, seq)


# =============================================================================================
# cardioinr itself
# =============================================================================================


def cardioinr_sequence(seq, prior_path: str | None = None, steps: int | None = None, seed: int = 0):
    """Fit cardioinr (default :class:`~cardioinr.fit.fitter.FitConfig`, or from a prior checkpoint).

    Returns ``(displacement, labels or None, metrics)`` where labels are the reference labels
    carried by the fit itself."""
    from dataclasses import replace

    from cardioinr.fit import FitConfig, Fitter

    base = FitConfig(seed=seed)
    if prior_path is None:
        cfg, init = base, None
    else:
        from cardioinr.priors import load_prior

        prior = load_prior(prior_path)
        cfg = prior.fit_config(base)
        init = prior.init_field(seq)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    res = Fitter(cfg).fit(seq, init=init)
    return res.displacement, res.labels, res.metrics


__all__ = [
    "BSplineConfig", "SynConfig", "VxmConfig", "available", "bspline_pair", "bspline_sequence", "build_vxm",
    "cardioinr_sequence", "load_vxm", "normalised_frames", "pin_threads", "save_vxm", "sitk_image",
    "sitk_transform_displacement", "syn_pair", "syn_sequence", "train_vxm", "vxm_pair_displacement",
    "vxm_sequence", "ants_image", "ants_forward_displacement",
]
