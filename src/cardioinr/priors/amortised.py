"""The ``encoder`` prior: the auto-decoder plus a small CNN (:class:`CodeEncoder`) that predicts
the code from the images in one forward pass, followed by a few refinement steps at fit time."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cardioinr.core.console import progress_bar
from cardioinr.core.errors import ConfigError
from cardioinr.fit.fields import MotionField
from cardioinr.priors.autodecoder import train_autodecoder
from cardioinr.priors.checkpoint import TrainState
from cardioinr.priors.config import PriorConfig
from cardioinr.priors.encoder import CodeEncoder, encoder_input
from cardioinr.priors.engine import TrainingCohort, batch_indices, step_generator
from cardioinr.priors.parallel import DistContext
from cardioinr.priors.prior import Prior


def train_encoder(f: MotionField, cohort: TrainingCohort, cfg: PriorConfig, state: TrainState, progress: bool,
                  callback: Callable[[int, dict], None] | None, dist: DistContext,
                  parent_encoder: CodeEncoder | None = None) -> Prior:
    """Auto-decoder first, then a CNN that maps images to codes, trained on the decoder's
    fitting loss (amortised) plus a pull towards the auto-decoded codes; the CNN starts from
    ``parent_encoder``'s weights when fine-tuning (same input size and code length)."""
    ad_state = TrainState(None, cfg, dist)
    prior = train_autodecoder(f, cohort, cfg, ad_state, progress, callback, dist)
    codes = prior.codes.to(f.latent.device)
    device = f.latent.device
    inputs = torch.stack([
        encoder_input(s, c, sc, cfg.encoder_size, cfg.encoder_phases, r)
        for s, (c, sc), r in zip(cohort.seqs, cohort.frames, cohort.reflections)
    ]).to(device)
    torch.manual_seed(cfg.seed)
    enc = CodeEncoder(inputs.shape[1], cfg.latent_dim).to(device)
    if parent_encoder is not None:
        if (parent_encoder.in_channels, parent_encoder.latent_dim) != (enc.in_channels, enc.latent_dim):
            raise ConfigError(f"the parent prior's encoder takes {parent_encoder.in_channels} phases and gives codes "
                              f"of {parent_encoder.latent_dim}; the settings ask for {enc.in_channels} and "
                              f"{enc.latent_dim} (keep encoder_phases and latent_dim)")
        enc.load_state_dict(parent_encoder.state_dict())
    for p in f.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    history = list(prior.history)
    bar = progress_bar(cfg.encoder_steps, "encoder", progress and dist.rank == 0)
    code_scale = codes.pow(2).mean().clamp(min=1e-8)
    try:
        for step in range(cfg.encoder_steps):
            frac = step / max(cfg.encoder_steps - 1, 1)
            level = cohort.objectives[0].n_levels - 1
            batch = batch_indices(len(cohort), cfg.batch, cfg.steps + step, cfg.seed)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for pos, i in dist.mine(batch):
                x = inputs[i:i + 1]
                # Mild augmentation, seeded by (step, position) so data-parallel runs match.
                gen = step_generator(cfg.seed, cfg.steps + step, pos)
                x = x * (1 + 0.1 * torch.randn(1, generator=gen).to(device)) + 0.02 * torch.randn(x.shape, generator=gen).to(device)
                z = enc(x)[0]
                fit_loss, _ = cohort.loss(f, i, level, gen, latent=z)
                loss = fit_loss + (z - codes[i]).pow(2).mean() / code_scale * 0.1
                (loss / len(batch)).backward()
                total += loss.item()
            dist.sum_grads(list(enc.parameters()))
            for g in opt.param_groups:
                g["lr"] = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            opt.step()
            logs = {"step": cfg.steps + step, "encoder_loss": dist.mean_float(total) * dist.world_size / len(batch)}
            history.append(logs)
            if callback:
                callback(cfg.steps + step, logs)
            if bar:
                bar[0].update(bar[1], advance=1, description=f"encoder loss {logs['encoder_loss']:.4f}")
    finally:
        if bar:
            bar[0].stop()
        for p in f.parameters():
            p.requires_grad_(True)
    enc.eval()
    return Prior("encoder", f, encoder=enc, history=history, codes=prior.codes)


__all__ = ["train_encoder"]
