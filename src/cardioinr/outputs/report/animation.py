"""The report's motion animation: the reference grid carried by the displacement and the
propagated label contours over the image, one GIF frame per cine frame of the shown slice, with
one palette shared by all frames."""

from __future__ import annotations

import base64
import io as _stdio

import numpy as np

from cardioinr.outputs.folder import FitFolder
from cardioinr.outputs.report.figures import (
    COLOURS,
    GRID_COLOUR,
    background_image,
    contour_names,
    contour_segments,
    extent_mm,
    heart_crop,
    new_figure,
)

__all__ = ["motion_gif"]


def motion_gif(f: FitFolder, k: int, grid_mm: float = 6.0, size_px: int = 360, colors: int = 64,
                interpolation: str = "nearest") -> tuple[str, int]:
    """Animated GIF (base64) of the deformed reference grid and propagated contours over the
    image at every frame of slice ``k``; returns ``(b64, n_frames)``."""
    from matplotlib.collections import LineCollection
    from PIL import Image

    si, sj = heart_crop(f, k)
    sp = f.spacing
    ext = extent_mm(si, sj, sp)
    step_i = max(1, int(round(grid_mm / sp[0])))
    step_j = max(1, int(round(grid_mm / sp[1])))
    ii = np.arange(si.start, si.stop)
    jj = np.arange(sj.start, sj.stop)
    rows_j = jj[(jj - sj.start) % step_j == 0]
    cols_i = ii[(ii - si.start) % step_i == 0]
    lo = hi = None
    if f.seq is not None:
        crop = f.seq.image[si, sj, k, :]
        lo, hi = np.percentile(crop, [1.0, 99.5])
    w_mm, h_mm = ext[1] - ext[0], ext[3] - ext[2]
    scale = size_px / max(w_mm, h_mm)
    w_px, h_px = max(2, int(round(w_mm * scale / 2)) * 2), max(2, int(round(h_mm * scale / 2)) * 2)
    fig = new_figure(w_px / 100, h_px / 100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(ext[0], ext[1])
    ax.set_ylim(ext[2], ext[3])
    ax.set_axis_off()
    ax.set_aspect("auto")
    # The artists are made once and updated per frame: re-plotting every line and contour of
    # every frame was most of the report's time.
    bg0 = background_image(f, k, 0)
    if bg0 is not None:
        image = ax.imshow(bg0[si, sj].T, origin="lower", cmap="gray", extent=ext, vmin=lo, vmax=hi,
                          interpolation=interpolation)
    else:
        image = None
        ax.set_facecolor("#202020")
    grid = LineCollection([], colors=GRID_COLOUR, linewidths=0.6, alpha=0.8)
    ax.add_collection(grid)
    outlines = {}
    if f.labels is not None:
        for name in contour_names(f.label_map):
            outlines[name] = LineCollection([], colors=COLOURS[name], linewidths=1.6)
            ax.add_collection(outlines[name])
    stamp = ax.text(0.02, 0.97, "", transform=ax.transAxes, color="white", fontsize=9, va="top",
                    bbox=dict(facecolor="black", alpha=0.5, pad=2, edgecolor="none"))
    frames = []
    for t in range(f.n_frames):
        if image is not None:
            image.set_data(background_image(f, k, t)[si, sj].T)
        u = f.displacement[:, :, k, t, :2].astype(np.float64)
        lines = [np.stack([ii * sp[0] + u[ii, j, 0], j * sp[1] + u[ii, j, 1]], axis=1) for j in rows_j]
        lines += [np.stack([i * sp[0] + u[i, jj, 0], jj * sp[1] + u[i, jj, 1]], axis=1) for i in cols_i]
        grid.set_segments(lines)
        if f.labels is not None:
            segs = contour_segments(f.labels[:, :, k, t], si, sj, sp, f.label_map)
            for name, coll in outlines.items():
                coll.set_segments(segs.get(name, []))
        stamp.set_text(f"frame {t}/{f.n_frames - 1}  {t * f.frame_interval_ms:.0f} ms" + ("  (ref)" if t == f.ref_frame else ""))
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        frames.append(Image.fromarray(rgba[..., :3].copy()))
    palette = _gif_palette(frames, colors)
    pal_frames = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in frames]
    buf = _stdio.BytesIO()
    duration = int(max(40, min(200, round(f.frame_interval_ms))))
    pal_frames[0].save(buf, format="GIF", save_all=True, append_images=pal_frames[1:], duration=duration,
                       loop=0, optimize=False, disposal=1)
    return base64.b64encode(buf.getvalue()).decode("ascii"), len(frames)


def _hex_rgb(c: str) -> list[int]:
    return [int(c[i:i + 2], 16) for i in (1, 3, 5)]


def _gif_palette(frames: list, colors: int):
    """One palette for all frames (no flicker): an adaptive part from a sample of frames plus the
    exact overlay colours (contours, grid, text), which are too few pixels to survive median cut."""
    from PIL import Image

    fixed = [_hex_rgb(c) for c in (*COLOURS.values(), GRID_COLOUR)] + [[255, 255, 255], [0, 0, 0]]
    sample = frames[:: max(1, len(frames) // 4)]
    w, h = sample[0].size
    mosaic = Image.new("RGB", (w, h * len(sample)))
    for i, im in enumerate(sample):
        mosaic.paste(im, (0, i * h))
    n_adaptive = max(2, min(256 - len(fixed), colors) - len(fixed))
    adaptive = mosaic.quantize(colors=n_adaptive, method=Image.Quantize.MEDIANCUT).getpalette()[: 3 * n_adaptive]
    flat = adaptive + [v for c in fixed for v in c]
    pal = Image.new("P", (1, 1))
    pal.putpalette(flat + [0] * (768 - len(flat)))
    return pal
