"""Continuous motion fields u = f(x, t): coordinate networks with a periodic time encoding.

The field is *separable in time*: a spatial coordinate network predicts, for every point,
the coefficients of a truncated Fourier series over the cardiac cycle,

    u(x, t) = s * g * sum_k [ a_k(x) sin(k phi) + b_k(x) (1 - cos(k phi)) ] / k,
    phi = 2 pi (t - t_ref) / T,

so that

* the cycle repeats exactly (u(x, t + T) = u(x, t)),
* u(x, t_ref) = 0 exactly, by construction (every basis function vanishes at phi = 0),
* one spatial network evaluation yields the displacement at *every* frame, which makes a
  fitting step over all frames about T times cheaper than evaluating f(x, t) per frame,
* time stays continuous: any real ``t`` (in frames) can be queried.

With K harmonics the series spans every periodic signal that T >= 2K + 1 frames can hold;
the 1/k factor biases the fit towards smooth (low-frequency) motion.

Coordinates enter normalised, ``x_n = R (x_mm - centre) / scale`` with ``R`` a diagonal of
+-1 (a reflection that makes the normalised frame right-handed in the scanner's world, see
:func:`cardioinr.fit.fitter.frame_reflection`); the output is mapped back by ``R`` and is in mm. The
backbones take explicit parameters through :func:`torch.func.functional_call` and optional
per-layer *shift modulations* from a latent code (Functa-style), which the auto-decoder
and encoder priors use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cardioinr.core.errors import ConfigError
from cardioinr.geometry import voxel_grid_mm_torch

MODELS = ("siren", "fourier", "hashgrid")


@dataclass(frozen=True)
class FieldConfig:
    """Architecture of a motion field.

    Attributes:
        model: ``siren`` (sine MLP), ``fourier`` (random Fourier features + SiLU MLP) or
            ``hashgrid`` (multiresolution hash encoding + small SiLU MLP, pure PyTorch).
        hidden: width of the hidden layers.
        layers: number of hidden layers.
        omega: SIREN frequency omega_0 (for coordinates normalised to about [-1, 1]).
        fourier_features: number of random frequencies (fourier model).
        fourier_sigma: standard deviation of the frequencies, cycles per normalised unit.
        hash_levels, hash_features, hash_log2_size, hash_min_res, hash_max_res: hash-grid encoding.
        harmonics: temporal harmonics K (capped at (T - 1) // 2 for T frames).
        output_gain: displacement = scale * output_gain * network output; keeps the network's
            outputs of order one for typical cardiac motion (a few mm).
        latent_dim: size of a per-sequence latent code mapped linearly to per-layer shift
            modulations (auto-decoder priors); 0 for a plain field.
    """

    model: str = "siren"
    hidden: int = 128
    layers: int = 3
    omega: float = 30.0
    fourier_features: int = 96
    fourier_sigma: float = 3.0
    hash_levels: int = 8
    hash_features: int = 2
    hash_log2_size: int = 14
    hash_min_res: int = 4
    hash_max_res: int = 96
    harmonics: int = 6
    output_gain: float = 0.1
    latent_dim: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown field model {self.model!r} (choose from {', '.join(MODELS)})")
        if self.hidden < 1 or self.layers < 1 or self.harmonics < 1 or self.latent_dim < 0:
            raise ConfigError("field hidden width, layers and harmonics must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


def n_harmonics(config: FieldConfig, n_frames: int) -> int:
    """Harmonics actually used for a cycle of ``n_frames`` frames."""
    return max(1, min(config.harmonics, (n_frames - 1) // 2))


def harmonic_basis(t: torch.Tensor, n_frames: int, ref_frame: float, harmonics: int) -> torch.Tensor:
    """Periodic time basis that vanishes at the reference frame.

    Args:
        t: ``(T',)`` times in frames (real values allowed).
        n_frames: frames per cycle T.
        ref_frame: reference frame index.
        harmonics: K.

    Returns:
        ``(T', 2K)``: ``[sin(k phi) / k, (1 - cos(k phi)) / k]`` for k = 1..K.
    """
    # Wrap to one cycle first so that u is exactly zero at ref_frame + m * T too.
    phi = 2.0 * math.pi * torch.remainder(t.reshape(-1, 1) - ref_frame, n_frames) / n_frames
    k = torch.arange(1, harmonics + 1, dtype=t.dtype, device=t.device)
    return torch.cat([torch.sin(k * phi) / k, (1.0 - torch.cos(k * phi)) / k], dim=1)


# ---------------------------------------------------------------------------------------------
# Backbones: x_n (N, D) -> (N, out), optional shifts (list of (N or 1, hidden) per layer)
# ---------------------------------------------------------------------------------------------


class SineLayer(nn.Linear):
    """sin(omega * (W x + b + shift)), with SIREN initialisation (Sitzmann et al. 2020)."""

    def __init__(self, n_in: int, n_out: int, omega: float, first: bool) -> None:
        super().__init__(n_in, n_out)
        self.omega = omega
        with torch.no_grad():
            bound = 1.0 / n_in if first else math.sqrt(6.0 / n_in) / omega
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        z = F.linear(x, self.weight, self.bias)
        if shift is not None:
            z = z + shift
        return torch.sin(self.omega * z)

    def forward_tangent(self, x: torch.Tensor, dx: torch.Tensor, shift: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer and its directional derivatives: ``dx`` ``(D, N, n_in)`` -> ``(D, N, n_out)``."""
        z = F.linear(x, self.weight, self.bias)
        if shift is not None:
            z = z + shift
        wz = self.omega * z
        return torch.sin(wz), (self.omega * torch.cos(wz)) * (dx @ self.weight.t())


class MLP(nn.Module):
    """Hidden layers with optional per-layer shift modulation, then a linear head initialised
    near zero (so a fresh field starts at the identity map)."""

    def __init__(self, n_in: int, n_out: int, hidden: int, layers: int, activation: str, omega: float = 30.0) -> None:
        super().__init__()
        self.activation = activation
        self.hidden_width = hidden
        if activation == "sine":
            self.hidden = nn.ModuleList(
                [SineLayer(n_in if i == 0 else hidden, hidden, omega, first=(i == 0)) for i in range(layers)]
            )
        else:
            self.hidden = nn.ModuleList([nn.Linear(n_in if i == 0 else hidden, hidden) for i in range(layers)])
        self.head = nn.Linear(hidden, n_out)
        with torch.no_grad():
            self.head.weight.uniform_(-1e-4, 1e-4)
            self.head.bias.zero_()

    def forward(self, h: torch.Tensor, shifts: list[torch.Tensor] | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.hidden):
            s = None if shifts is None else shifts[i]
            if self.activation == "sine":
                h = layer(h, s)
            else:
                z = layer(h)
                h = F.silu(z if s is None else z + s)
        return self.head(h)

    def forward_tangent(self, h: torch.Tensor, dh: torch.Tensor, shifts: list[torch.Tensor] | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` and its directional derivatives along the tangents ``dh``
        ``(D, N, n_in)`` (one per input direction), by the chain rule layer by layer."""
        for i, layer in enumerate(self.hidden):
            s = None if shifts is None else shifts[i]
            if self.activation == "sine":
                h, dh = layer.forward_tangent(h, dh, s)
            else:
                z = layer(h)
                if s is not None:
                    z = z + s
                sig = torch.sigmoid(z)
                # silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z)))
                h, dh = z * sig, (sig * (1.0 + z * (1.0 - sig))) * (dh @ layer.weight.t())
        return self.head(h), dh @ self.head.weight.t()


class FourierEncoding(nn.Module):
    """[sin(2 pi B x), cos(2 pi B x)] with fixed Gaussian frequencies B (Tancik et al. 2020)."""

    def __init__(self, dim: int, features: int, sigma: float, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(dim, features, generator=g) * sigma)
        self.out_dim = 2 * features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = 2.0 * math.pi * x @ self.B
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def forward_tangent(self, x: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoding and its directional derivatives, ``dx`` ``(D, N, dim)``."""
        proj = 2.0 * math.pi * x @ self.B
        dproj = 2.0 * math.pi * dx @ self.B
        sin, cos = torch.sin(proj), torch.cos(proj)
        return torch.cat([sin, cos], dim=-1), torch.cat([cos * dproj, -sin * dproj], dim=-1)


_PRIMES = (1, 2654435761, 805459861)


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding (Mueller et al. 2022) in plain PyTorch.

    Coarse levels whose dense grid fits in the table are indexed directly (no collisions);
    finer levels use the spatial hash. Multilinear interpolation keeps the encoding
    differentiable in x, so Jacobians of the field are exact.
    Inputs are normalised coordinates; ``domain`` maps [-domain, domain] to the grid.
    """

    def __init__(self, dim: int, levels: int, features: int, log2_size: int, min_res: int, max_res: int,
                 domain: float = 1.5) -> None:
        super().__init__()
        self.dim, self.levels, self.features, self.domain = dim, levels, features, domain
        growth = math.exp((math.log(max_res) - math.log(min_res)) / max(levels - 1, 1))
        self.resolutions = [int(math.floor(min_res * growth**lvl)) for lvl in range(levels)]
        self.table_size = 2**log2_size
        sizes = [min(self.table_size, (r + 1) ** dim) for r in self.resolutions]
        self.dense = [(r + 1) ** dim <= self.table_size for r in self.resolutions]
        self.tables = nn.ParameterList([nn.Parameter(torch.empty(n, features).uniform_(-1e-4, 1e-4)) for n in sizes])
        corners = torch.tensor([[(c >> d) & 1 for d in range(dim)] for c in range(2**dim)], dtype=torch.long)
        self.register_buffer("corners", corners, persistent=False)
        self.out_dim = levels * features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = ((x / self.domain + 1.0) * 0.5).clamp(0.0, 1.0)
        outs = []
        for lvl, res in enumerate(self.resolutions):
            pos = u * res
            base = torch.floor(pos).clamp(max=res - 1)
            frac = pos - base  # differentiable in x
            base = base.long()
            idx = base.unsqueeze(1) + self.corners.unsqueeze(0)  # (N, 2^D, D)
            w = torch.where(self.corners.unsqueeze(0).bool(), frac.unsqueeze(1), 1.0 - frac.unsqueeze(1)).prod(-1)
            if self.dense[lvl]:
                stride = torch.tensor([(res + 1) ** d for d in range(self.dim)], device=x.device)
                flat = (idx * stride).sum(-1)
            else:
                h = idx[..., 0] * _PRIMES[0]
                for d in range(1, self.dim):
                    h = h ^ (idx[..., d] * _PRIMES[d])
                flat = h % self.table_size
            feats = self.tables[lvl][flat]  # (N, 2^D, F)
            outs.append((w.unsqueeze(-1) * feats).sum(1))
        return torch.cat(outs, dim=-1)


# ---------------------------------------------------------------------------------------------
# The motion field
# ---------------------------------------------------------------------------------------------


def _signs(reflect, dim: int) -> torch.Tensor:
    r = torch.as_tensor(reflect, dtype=torch.float32).flatten()
    if r.shape != (dim,) or not bool(torch.all(r.abs() == 1)):
        raise ConfigError(f"reflect must hold {dim} values of +1 or -1, got {r.tolist()}")
    return r


class MotionField(nn.Module):
    """u(x, t) in mm for points in array-aligned mm; see the module docstring.

    Args:
        config: architecture.
        dim: spatial dimension D (2 for a single slice, 3 for a stack).
        n_frames: frames per cycle T.
        ref_frame: the frame where u = 0.
        centre: ``(D,)`` mm, centre of the normalised frame (image or heart centre).
        scale: mm per normalised unit.
        reflect: ``(D,)`` of +-1, axes mirrored in the normalised frame (default none).
    """

    def __init__(self, config: FieldConfig, dim: int, n_frames: int, ref_frame: int,
                 centre: torch.Tensor | None = None, scale: float = 1.0, seed: int = 0,
                 reflect: torch.Tensor | None = None, harmonics: int | None = None) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ConfigError(f"motion fields are 2D or 3D, got dim={dim}")
        self.config = config
        self.dim = dim
        self.n_frames = int(n_frames)
        self.ref_frame = int(ref_frame)
        # A field re-bound to another cycle keeps its harmonics (set_frame): rebuilding it needs them.
        self.harmonics = n_harmonics(config, n_frames) if harmonics is None else int(harmonics)
        self.register_buffer("centre", torch.zeros(dim) if centre is None else torch.as_tensor(centre, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("reflect", torch.ones(dim) if reflect is None else _signs(reflect, dim))
        n_out = 2 * self.harmonics * dim
        if config.model == "siren":
            self.encoding: nn.Module = nn.Identity()
            n_enc = dim
            act = "sine"
        elif config.model == "fourier":
            self.encoding = FourierEncoding(dim, config.fourier_features, config.fourier_sigma, seed=seed)
            n_enc = self.encoding.out_dim
            act = "silu"
        else:
            self.encoding = HashGridEncoding(dim, config.hash_levels, config.hash_features, config.hash_log2_size,
                                             config.hash_min_res, config.hash_max_res)
            n_enc = self.encoding.out_dim
            act = "silu"
        self.mlp = MLP(n_enc, n_out, config.hidden, config.layers, act, config.omega)
        self.modulator: nn.Linear | None = None
        if config.latent_dim > 0:
            # Functa-style shift modulations; the code in use when none is passed explicitly.
            self.modulator = nn.Linear(config.latent_dim, config.hidden * config.layers)
            with torch.no_grad():
                self.modulator.weight.normal_(0.0, 0.01)
                self.modulator.bias.zero_()
            self.register_buffer("latent", torch.zeros(config.latent_dim))

    # -- normalisation -----------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # fields and priors saved before the reflection existed were never mirrored
        state_dict.setdefault(prefix + "reflect", torch.ones(self.dim))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalise(self, x_mm: torch.Tensor) -> torch.Tensor:
        return (x_mm - self.centre) / self.scale * self.reflect

    def set_frame(self, centre: torch.Tensor, scale: float, n_frames: int, ref_frame: int,
                  reflect: torch.Tensor | None = None) -> None:
        """Re-bind the field to another sequence's normalised frame and cycle (weights shared);
        ``reflect`` None keeps the current reflection."""
        with torch.no_grad():
            self.centre.copy_(torch.as_tensor(centre, dtype=self.centre.dtype))
            self.scale.fill_(float(scale))
            if reflect is not None:
                self.reflect.copy_(_signs(reflect, self.dim))
        # The number of harmonics is part of the architecture and stays: the basis is
        # continuous in cycle phase, so it applies to any frame count.
        self.n_frames, self.ref_frame = int(n_frames), int(ref_frame)

    def _shifts(self, latent: torch.Tensor | None) -> list[torch.Tensor] | None:
        """Per-layer shifts from a latent code ``(L,)`` or ``(N, L)``; None for a plain field."""
        if self.modulator is None:
            if latent is not None:
                raise ValueError("this field has no latent code (latent_dim = 0)")
            return None
        z = self.latent if latent is None else latent
        shifts = self.modulator(z)
        return list(shifts.reshape(*shifts.shape[:-1], self.config.layers, self.config.hidden).unbind(-2))

    # -- evaluation --------------------------------------------------------------------------
    def coefficients(self, x_mm: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """Fourier coefficients of the displacement, ``(N, 2K, D)``, in mm (gain and scale applied).

        ``latent``: code ``(L,)`` (or per point ``(N, L)``) for a modulated field; default the
        field's own code."""
        h = self.encoding(self.normalise(x_mm))
        out = self.mlp(h, self._shifts(latent))
        # the network predicts in the (possibly mirrored) normalised frame: mirror back
        return out.reshape(-1, 2 * self.harmonics, self.dim) * (self.reflect * (self.scale * self.config.output_gain))

    def basis(self, t: torch.Tensor | None = None) -> torch.Tensor:
        """``(T', 2K)`` time basis at frames ``t`` (default: every frame 0..T-1)."""
        if t is None:
            t = torch.arange(self.n_frames, dtype=self.scale.dtype, device=self.scale.device)
        return harmonic_basis(t.to(self.scale), self.n_frames, self.ref_frame, self.harmonics)

    def forward(self, x_mm: torch.Tensor, t: torch.Tensor | None = None,
                latent: torch.Tensor | None = None) -> torch.Tensor:
        """Displacement ``(N, T', D)`` in mm at points ``(N, D)`` mm and frames ``t`` (default all)."""
        return torch.einsum("nkd,tk->ntd", self.coefficients(x_mm, latent), self.basis(t))

    def coefficients_and_jacobian(self, x_mm: torch.Tensor, latent: torch.Tensor | None = None
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Coefficients ``(N, 2K, D)`` and their exact spatial Jacobian ``(N, 2K, D, D)``
        (d coefficient / d x_mm, differentiable for training).

        SIREN and Fourier-feature fields carry the D input directions through the network by
        the chain rule, in plain tensor operations: the same values as forward-mode autodiff,
        without it. ``torch.func.jvp`` (used for the hash grid) imports torch's compiler on
        its first call, about 1.3 s of every command's start-up, and cannot run under
        ``no_grad``."""
        n, d = x_mm.shape
        if self.config.model in ("siren", "fourier"):
            x_n = self.normalise(x_mm)
            # d x_n / d x_mm is diagonal: reflect / scale
            dx = torch.diag(self.reflect / self.scale).unsqueeze(1).expand(d, n, d)
            if self.config.model == "fourier":
                h, dh = self.encoding.forward_tangent(x_n, dx)
            else:
                h, dh = x_n, dx
            out, dout = self.mlp.forward_tangent(h, dh, self._shifts(latent))
            gain = self.reflect * (self.scale * self.config.output_gain)
            coeffs = out.reshape(n, 2 * self.harmonics, d) * gain
            jac = (dout.reshape(d, n, 2 * self.harmonics, d) * gain).permute(1, 2, 3, 0)  # (N, 2K, D_out, D_in)
            return coeffs, jac
        x_rep = x_mm.repeat(d, 1)
        tangent = torch.eye(d, dtype=x_mm.dtype, device=x_mm.device).repeat_interleave(n, dim=0)
        z = latent if latent is None or latent.ndim == 1 else latent.repeat(d, 1)
        coeffs, dcoeffs = torch.func.jvp(lambda x: self.coefficients(x, z), (x_rep,), (tangent,))
        jac = dcoeffs.reshape(d, n, *dcoeffs.shape[1:]).permute(1, 2, 3, 0)  # (N, 2K, D_out, D_in)
        return coeffs[:n], jac

    def displacement_and_jacobian(self, x_mm: torch.Tensor, t: torch.Tensor | None = None,
                                  latent: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Displacement ``(N, T', D)`` mm and its spatial gradient ``(N, T', D, D)`` (du_i/dx_j)."""
        coeffs, jac = self.coefficients_and_jacobian(x_mm, latent)
        b = self.basis(t)
        return torch.einsum("nkd,tk->ntd", coeffs, b), torch.einsum("nkij,tk->ntij", jac, b)

    @torch.no_grad()
    def dense(self, shape: tuple[int, int, int], spacing: torch.Tensor, chunk: int = 32768,
              latent: torch.Tensor | None = None) -> torch.Tensor:
        """Displacement at every voxel centre of the reference grid, ``(X, Y, Z, T, 3)`` mm
        (the output contract; the k component is 0 for a 2D field)."""
        pts = voxel_grid_mm_torch(shape, spacing, torch.float32, self.scale.device).reshape(-1, 3)
        out = torch.zeros(pts.shape[0], self.n_frames, 3, device=pts.device)
        for i in range(0, pts.shape[0], chunk):
            out[i:i + chunk, :, : self.dim] = self(pts[i:i + chunk, : self.dim], latent=latent)
        return out.reshape(*shape, self.n_frames, 3)

    @classmethod
    def from_description(cls, d: dict) -> "MotionField":
        """An untrained field of the architecture and frame that :meth:`describe` recorded (load
        its ``state_dict`` next). Descriptions written before ``harmonics`` was recorded rebuild
        from the frame count, as the field was built then."""
        return cls(FieldConfig(**d["config"]), d["dim"], d["n_frames"], d["ref_frame"],
                   centre=torch.tensor(d["centre"]), scale=d["scale"], reflect=d.get("reflect"),
                   harmonics=d.get("harmonics"))

    def describe(self) -> dict:
        """Everything needed to rebuild this field (stored in checkpoints and metrics)."""
        return {
            "config": self.config.to_dict(),
            "dim": self.dim,
            "n_frames": self.n_frames,
            "ref_frame": self.ref_frame,
            "centre": self.centre.tolist(),
            "scale": float(self.scale),
            "reflect": self.reflect.tolist(),
            "harmonics": self.harmonics,
        }
