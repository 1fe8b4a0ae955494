"""Drawing many samples in bounded memory, and writing image samples as PNG files."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import check_bool, check_int
from ..distributions.model import Model
from .checkpoint import write_atomic

#: Entries of the sampled state per chunk when no chunk size is given: 2**22 float32 entries
#: (16 MiB of state; a solver holds a few copies and a network's activations a few dozen) keep
#: the memory of sampling bounded whatever the event size, and leave 2-D and 64-D samplings in
#: one chunk up to 2 million / 65,536 samples.
CHUNK_ENTRIES = 2**22


def chunk_size_for(event_shape: tuple[int, ...]) -> int:
    """The default number of samples per chunk for events of ``event_shape``: at least 1,
    :data:`CHUNK_ENTRIES` entries in all."""
    return max(1, CHUNK_ENTRIES // math.prod(event_shape))


def _slice(context: Tensor | None, start: int, stop: int) -> Tensor | None:
    # One shared label or feature row serves every chunk; per-sample rows are sliced.
    if context is None or context.ndim == 0 or (context.ndim == 1 and context.is_floating_point()):
        return context
    if context.shape[0] == 1 and context.ndim == 2:
        return context
    return context[start:stop]


def sample_in_chunks(
    model: Model,
    n: int,
    context: Tensor | None = None,
    *,
    chunk_size: int | None = None,
    progress: bool = False,
    **solver: object,
) -> Tensor:
    """``model.sample`` of ``n`` samples drawn ``chunk_size`` at a time, with a progress bar.

    For ``n <= chunk_size`` it is one ``model.sample(n, context, **solver)`` call (the same
    numbers for a given seed); larger ``n`` is split into consecutive chunks, each drawn from the
    global generator in turn, so a seed still reproduces the samples.

    Args:
        model: any model.
        n: the number of samples.
        context: labels ``(n,)`` or features ``(n, C)`` (sliced per chunk), one shared label or
            feature row, or ``None``.
        chunk_size: samples per call (default :func:`chunk_size_for` the model's event shape).
        progress: show a progress bar over the samples (when there is more than one chunk).
        **solver: the model's solver options.

    Returns:
        ``(n, *event_shape)`` on the CPU.
    """
    n = check_int(n, "n", 1, "a positive number of samples")
    size = chunk_size_for(model.event_shape) if chunk_size is None else chunk_size
    size = check_int(size, "chunk_size", 1, "a positive number of samples per chunk")
    check_bool(progress, "progress")
    bar = None
    if progress and n > size:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="sample", unit="sample", dynamic_ncols=True)
    parts = []
    with torch.no_grad():
        for start in range(0, n, size):
            stop = min(n, start + size)
            parts.append(model.sample(stop - start, _slice(context, start, stop), **solver).cpu())
            if bar is not None:
                bar.update(stop - start)
    if bar is not None:
        bar.close()
    return torch.cat(parts)


def to_pixels(x: Tensor, levels: int) -> np.ndarray:
    """Samples in the data's units, dequantised levels scaled to ``[0, 1)`` (the digits' and
    image files' convention: pixel ``floor(levels * x)``), as 8-bit pixels.

    Args:
        x: ``(N, C, H, W)`` with ``C`` 1 (grey) or 3 (RGB).
        levels: ``L``, the number of discrete levels of the data (2 to 256).

    Returns:
        ``(N, H, W)`` or ``(N, H, W, 3)`` ``uint8``: level ``k`` as ``round(255 k / (L - 1))``.
    """
    levels = check_int(levels, "levels", 2, maximum=256)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"PNG files hold grey (1, H, W) or RGB (3, H, W) images, got samples of shape "
            f"{tuple(x.shape[1:])}"
        )
    k = torch.floor(x.double() * levels).clamp(0, levels - 1)
    scaled = torch.round(k * 255.0 / (levels - 1)).to(torch.uint8)
    pixels = scaled.permute(0, 2, 3, 1).numpy()  # (N, H, W, C), Pillow's layout
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def write_pngs(x: Tensor, levels: int, folder: str | Path) -> list[Path]:
    """Write each sample as ``folder/000000.png``, ``000001.png``, ... (created if missing),
    each file written atomically; see :func:`to_pixels`. Returns the paths."""
    from PIL import Image

    pixels = to_pixels(x, levels)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(pixels) - 1)))
    paths = []
    for i, image in enumerate(pixels):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        path = folder / f"{i:0{width}d}.png"
        write_atomic(path, buf.getvalue())
        paths.append(path)
    return paths
