"""Images for viewing: measurements at the image size, blur kernels, and the run's grid."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .inputs import Item, load_truth


def make_grid(rows: list[list], pad: int = 2):
    """Images ``(1, C, H, W)`` in rows → one image with ``pad`` white pixels between them."""
    import torch

    c = max(t.shape[1] for row in rows for t in row)
    h = max(t.shape[-2] for row in rows for t in row)
    w = max(t.shape[-1] for row in rows for t in row)
    ncol = max(len(r) for r in rows)
    grid = torch.ones(1, c, pad + len(rows) * (h + pad), pad + ncol * (w + pad))
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            t = t.float().cpu().expand(1, c, *t.shape[-2:])
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[:, :, top:top + t.shape[-2], left:left + t.shape[-1]] = t
    return grid


def kernel_image(k):
    """A blur kernel ``(k, k)`` as a ``(1, 1, k, k)`` image in [-1, 1] scaled to its peak (white), for the grid."""
    k = k.detach().float().cpu()
    return (k / k.max().clamp_min(1e-12) * 2 - 1)[None, None]


def row_labels(names: Sequence[str]) -> tuple[list[str], int]:
    """The rows' names as drawn (shortened to :data:`ROW_LABEL_MAX`) and the margin's width in pixels
    (0 without names)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    shown = [fitted(str(name), lambda t: draw.textlength(t, font=font), ROW_LABEL_MAX - 6) for name in names]
    return shown, (int(max(draw.textlength(n, font=font) for n in shown)) + 6 if shown else 0)


def fitted(text: str, width_of, limit: float) -> str:
    """``text``, or its start and end around "...", as long as ``width_of`` keeps it within ``limit``."""
    if width_of(text) <= limit:
        return text
    keep = len(text)
    while keep > 2 and width_of(text[:keep // 2] + "..." + text[len(text) - (keep - keep // 2):]) > limit:
        keep -= 1
    return text[:keep // 2] + "..." + text[len(text) - (keep - keep // 2):]


GRID_MIN_SIDE = 96  # small images are enlarged (nearest neighbour, pixels stay visible) to at least this


REVIEW_FRAME = (220, 0, 0)  # the frame around a reconstruction flagged for review


ROW_LABEL_MAX = 160  # pixels for the images' names left of the rows (longer names are shortened with "...")


def labelled(grid, labels: Sequence[str], tile: int, pad: int, framed: Sequence[tuple[int, int]] = (),
             rows: Sequence[str] = ()):
    """``grid`` (``(C, H, W)`` in [-1, 1]) with a white header naming each column and, with ``rows``, a
    white margin naming each row's image (a grid of 8 rows said nothing of which image was which: an
    audit, 2026-12-07), as an 8-bit PIL image; the tiles at ``framed`` (row, column) get a red frame in
    their padding (images flagged for review)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from ..io import to_uint8

    body = Image.fromarray(to_uint8(grid)).convert("RGB")
    font = ImageFont.load_default()
    header = 14
    names, margin = row_labels(rows)
    canvas = Image.new("RGB", (body.width + margin, body.height + header), "white")
    canvas.paste(body, (margin, header))
    draw = ImageDraw.Draw(canvas)
    for j, text in enumerate(labels):
        left = margin + pad + j * (tile + pad)
        width = draw.textlength(text, font=font)
        draw.text((left + max((tile - width) / 2, 0), 1), text, fill="black", font=font)
    for i, name in enumerate(names):
        draw.text((3, header + pad + i * (tile + pad) + tile / 2 - 6), name, fill="black", font=font)
    for i, j in framed:
        top, left = header + pad + i * (tile + pad), margin + pad + j * (tile + pad)
        draw.rectangle((left - pad, top - pad, left + tile + pad - 1, top + tile + pad - 1), outline=REVIEW_FRAME,
                       width=pad)
    return np.asarray(canvas)


def write_grid(out: Path, records: list[dict], items: Sequence[Item], prior, measurements: bool,
               grid_max: int, decisions: dict | None = None) -> None:
    """``grid.png``: one row per image (the first ``grid_max``): [truth |] measurement | initial
    guess [| classical estimate, a blur's deconvolution] | reconstruction [| uncertainty, with samples], read back from the run directory; labelled columns, small images
    enlarged (nearest) so that they can be seen; reconstructions whose ``decisions`` entry is "review"
    framed in red."""
    import math
    import os

    import torch.nn.functional as F
    from skimage import io as skio

    from ..io import load_image

    by_name = {it.name: it for it in items}
    shown = records[:max(int(grid_max), 0)]
    # measurements given with their ground truth (a fastMRI file's target) show it too
    with_truth = not measurements or (bool(shown) and all(getattr(by_name[r["name"]], "truth", None) is not None
                                                          for r in shown))
    classical = bool(shown) and all("classical" in rec.get("outputs", {}) for rec in shown)
    rows = []
    for rec in shown:
        item = by_name[rec["name"]]
        row = [] if not with_truth else [item.truth if measurements else load_truth(item, prior)]
        row += [load_image(out / rec["outputs"][k]) for k in ("measurement", "initial")]
        if classical:  # a blur's Tikhonov deconvolution (its initial guess is the measurement)
            row.append(load_image(out / rec["outputs"]["classical"]))
        row.append(load_image(out / rec["outputs"]["recon"]))
        if "std" in rec["outputs"]:  # samples=k: the uncertainty map
            row.append(load_image(out / rec["outputs"]["std"]))
        rows.append(row)
    if not rows:
        return
    factor = max(1, math.ceil(GRID_MIN_SIDE / prior.image_size))
    rows = [[F.interpolate(t, scale_factor=factor, mode="nearest") for t in row] for row in rows]
    pad = 2
    labels = (["truth"] if with_truth else []) + ["measurement", "initial guess"] + (["classical"] if classical else []) \
        + ["reconstruction"]
    if any(len(r) > len(labels) for r in rows):
        labels.append("std (0-0.25)")
    column = labels.index("reconstruction")
    framed = [(i, column) for i, rec in enumerate(shown) if (decisions or {}).get(rec["name"]) == "review"]
    if framed:
        labels[column] = "recon (red: review)"
    image = labelled(make_grid(rows, pad)[0], labels, prior.image_size * factor, pad, framed,
                     rows=[rec["name"] for rec in shown])
    tmp = out / ".grid.tmp.png"
    skio.imsave(tmp, image, check_contrast=False)
    os.replace(tmp, out / "grid.png")
