r"""The user's images: ``.npy`` / ``.npz`` arrays of pixel levels and folders of PNG/JPEG files.

Both end as integer pixel values :math:`v \in \{0, \dots, L-1\}` in ``(N, C, H, W)`` layout,
made continuous by the uniform dequantisation of the digits, :math:`x = (v + u) / L` with
:math:`u \sim U[0, 1)` (:func:`~flowforge.data.dequantize`), so a density of :math:`x` gives
exact bits per dimension of the discrete images (:func:`flowforge.metrics.bits_per_dim`).
A folder follows the ImageFolder convention: images directly inside it (no labels), or one
sub-folder per class (the sub-folder names, sorted, are the labels). Every problem names the
file: a different size, an unreadable or non-image file, a mode that is not 8-bit.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_int
from .dataset import _MAX_LEVELS, FILE_FRACTIONS, SPLITS, Dataset
from .digits import dequantize
from .files import (
    MIN_ROWS,
    _existing_file,
    _listing,
    _plural,
    _read_npy,
    _read_npz,
    _validate,
    encode_labels,
    split_array,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""The file types of an image folder (any case)."""

LAYOUTS = ("NCHW", "NHWC", "NHW")
"""Axis orders of an image array: channels first, channels last, or no channel axis."""

MODES = {"L": 1, "RGB": 3, "RGBA": 4}
"""Pillow modes an image folder is read in, and their numbers of channels."""

IMAGE_LEVELS = 256
"""Levels of an 8-bit pixel (PNG, JPEG, ``uint8``): the integers 0 to 255."""

DEQUANTIZATION = "uniform"
r"""How levels become continuous: :math:`x = (v + u) / L`, :math:`u \sim U[0, 1)`."""

_CHANNELS = (1, 2, 3, 4)  # channel counts a layout detector believes (grey, +alpha, RGB, RGBA)
_GREY_MODES = ("1", "L", "LA")  # read as one channel when no mode is asked for
_CHUNK = 4096  # images dequantised per call: bounds the float64 noise of a large set


@dataclass(frozen=True, eq=False)
class ImageValues:
    """Integer images and what is known about them, before splitting and dequantisation.

    Attributes:
        values: ``(N, C, H, W)`` ``uint8`` tensor of levels ``0..levels-1``, or float32
            values of continuous images.
        levels: ``L``, the number of values a pixel can take; ``None`` for continuous images.
        labels: ``(N,)`` int64 class labels, or ``None``.
        label_names: the class each label stands for (a folder's sub-folder names), or ``None``.
        how: one line for people: the source, its layout or mode, and how levels were chosen.
    """

    values: Tensor
    levels: int | None
    labels: Tensor | None = None
    label_names: tuple[str, ...] | None = None
    how: str = ""


def _upper(value: object) -> object:
    """Names of layouts and modes in any case: ``nhwc`` is ``NHWC``."""
    return value.upper() if isinstance(value, str) else value


# -- arrays -----------------------------------------------------------------------------------
def image_layout(shape: tuple[int, ...], layout: str | None, where: str) -> tuple[str, str]:
    """The layout of an image array of ``shape``: the one given, or one detected.

    ``(N, H, W)`` is ``NHW``. For ``(N, A, B, K)`` the channel axis is the one of ``A`` and
    ``K`` that holds 1 to 4 values while the other does not; when both could, the square pair
    of the other axes decides (``(N, 1, 4, 4)`` is NCHW, ``(N, 4, 4, 1)`` NHWC); otherwise
    NCHW, the layout of PyTorch, and the returned note says it was assumed.

    Returns:
        ``(layout, note)``: the layout and how it was chosen (``"given"``, ``"detected"``, or
        ``"assumed: ..."``), for the dataset's description.

    Raises:
        ValueError: a shape that is not 3-D or 4-D, or one that contradicts the given layout.
    """
    if len(shape) not in (3, 4):
        raise ValueError(
            f"{where} has shape {shape}; images are (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    if layout is not None:
        layout = check_choice(
            layout.upper() if isinstance(layout, str) else layout, "layout", LAYOUTS
        )
        if len(layout) != len(shape):
            raise ValueError(
                f"layout={layout!r} describes {len(layout)}-D arrays, but {where} has shape "
                f"{shape}; give layout={'NHW' if len(shape) == 3 else 'NCHW or NHWC'}"
            )
        return layout, "given"
    if len(shape) == 3:
        return "NHW", "detected"
    first, h, w = shape[1], shape[2], shape[3]
    last = w
    first_ok, last_ok = first in _CHANNELS, last in _CHANNELS
    if first_ok != last_ok:
        return ("NCHW" if first_ok else "NHWC"), "detected"
    if first_ok and h == w and first != h:
        return "NCHW", "detected"
    if first_ok and first == h and last != h:
        return "NHWC", "detected"
    return "NCHW", "assumed: the channel axis is ambiguous, say layout=NHWC if it is last"


def to_nchw(array: np.ndarray, layout: str) -> np.ndarray:
    """``array`` in ``layout`` as ``(N, C, H, W)`` (a view where possible)."""
    if layout == "NHW":
        return array[:, None]
    if layout == "NHWC":
        return array.transpose(0, 3, 1, 2)
    return array


def array_levels(array: np.ndarray, levels: int | None, where: str) -> tuple[Tensor, int, str]:
    """Check the pixel values of an integer (or whole-valued float) image array.

    ``levels`` is the number of values a pixel can take; by default 256 for ``uint8``, 2 for
    ``bool`` and the largest value + 1 for other integers. Float arrays need ``levels``.

    Returns:
        ``(values, levels, note)``: ``values`` as a ``uint8`` (``levels <= 256``) tensor of the
        array's shape, ``levels``, and how it was chosen.

    Raises:
        ValueError: negative values, values ``>= levels``, non-whole floats, ``levels`` beyond
            256, or NaN.
    """
    kind = array.dtype.kind
    if kind not in "biuf":
        raise ValueError(
            f"{where} holds dtype {array.dtype}; image levels must be integers (uint8, ...)"
        )
    if kind == "f":
        if levels is None:
            raise ValueError(f"{where}: float images need levels=L to be read as levels")
        bad = ~np.isfinite(array) | (array != np.floor(array))
        if bad.any():
            i = np.unravel_index(int(np.flatnonzero(bad)[0]), array.shape)
            raise ValueError(
                f"{where}: levels={levels} reads the values as integers 0..{levels - 1}, but "
                f"index {tuple(int(k) for k in i)} holds {array[i].item()!r}; store integer levels "
                f"(e.g. numpy.round(x * {levels - 1}).astype('uint8') for x in [0, 1])"
            )
    low, high = int(array.min()), int(array.max())
    if levels is not None:
        levels = check_int(levels, "levels", 2, maximum=_MAX_LEVELS)
        note = f"{levels} levels (given)"
    elif kind == "b":
        levels, note = 2, "2 levels (bool)"
    elif array.dtype == np.uint8:
        levels, note = IMAGE_LEVELS, "256 levels (uint8)"
    else:
        levels = max(2, high + 1)
        note = f"{levels} levels (its largest value + 1; say levels=L if pixels can take more)"
        if levels > _MAX_LEVELS:
            raise ValueError(
                f"{where}: pixel values reach {high}, but at most {_MAX_LEVELS} levels are "
                f"supported (8-bit); reduce the bit depth, e.g. x >> 8 for 16-bit images"
            )
    if low < 0 or high >= levels:
        wrong = (array < 0) | (array >= levels)
        i = np.unravel_index(int(np.flatnonzero(wrong)[0]), array.shape)
        raise ValueError(
            f"{where}: pixel values must lie in 0..{levels - 1} ({levels} levels), got "
            f"{low}..{high} (e.g. {array[i].item()!r} at index {tuple(int(k) for k in i)})"
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8)), levels, note


def read_image_array(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    layout: str | None = None,
    levels: int | None = None,
    label: str | None = None,
) -> ImageValues:
    """Read an ``.npy`` / ``.npz`` array of images as integer levels in ``(N, C, H, W)``.

    Args:
        path: the ``.npy`` or ``.npz`` file.
        name: ``.npz`` only: the array of images (default: the only one, or the only one
            besides ``label``).
        layout: ``"NCHW"``, ``"NHWC"`` or ``"NHW"``; detected when ``None`` (see
            :func:`image_layout`).
        levels: the number of values a pixel takes (see :func:`array_levels`); a float
            array without it is read as continuous images (float32, ``levels`` ``None``).
        label: ``.npz`` only: the name of an ``(N,)`` array of class labels.

    Raises:
        ValueError: the file problems of :func:`~flowforge.data.load_array`, a shape that is
            no image array, levels out of range, labels that do not fit.
    """
    path = _existing_file(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raise ValueError(
            f"{path}: a .csv file holds rows, not images; save images with numpy.save as "
            "(N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    if (name is not None or label is not None) and suffix != ".npz":
        which = "key" if name is not None else "label"
        raise ValueError(f"{which}= selects an array of an .npz file, but {path} is {suffix}")
    labels, label_names = None, None
    if suffix == ".npy":
        with open(path, "rb") as f:
            array = _read_npy(f, lambda: open(path, "rb"), f"{path} is not a valid .npy file")
        where = str(path)
    else:
        if label is not None and name is None:
            with zipfile.ZipFile(path) as archive:
                names = [m[:-4] for m in archive.namelist() if m.endswith(".npy")]
            others = [m for m in names if m != label]
            name = others[0] if len(others) == 1 else None
        array, where = _read_npz(path, name)
        if label is not None:
            raw, label_where = _read_npz(path, label)
            if raw.ndim != 1 or raw.dtype.kind not in "biuU" or len(raw) != len(array):
                raise ValueError(
                    f"{label_where} must hold one class label per image, an ({len(array)},) "
                    f"array of integers or strings, got shape {raw.shape} and dtype {raw.dtype}"
                )
            labels, label_names = encode_labels(raw.tolist(), label_where)
    if array.dtype.names is not None:
        raise ValueError(f"{where} is a structured array (a table); images are plain arrays")
    chosen, how = image_layout(tuple(array.shape), layout, where)
    if array.shape[0] < MIN_ROWS:
        raise ValueError(
            f"{where} has {_plural(array.shape[0], 'image')}; at least {MIN_ROWS} are needed "
            "(one each for train, validation and test)"
        )
    if 0 in array.shape:
        raise ValueError(f"{where} has shape {array.shape}: its images hold no pixels")
    nchw = to_nchw(array, chosen)
    if array.dtype.kind == "f" and levels is None:  # continuous images, kept as they are
        values, note = _validate(np.ascontiguousarray(nchw, dtype=np.float64), where), "continuous"
    else:
        values, levels, note = array_levels(nchw, levels, where)
    c, h, w = values.shape[1:]
    return ImageValues(
        values=values,
        levels=levels,
        labels=labels,
        label_names=label_names,
        how=f"layout {chosen} ({how}) of shape {tuple(array.shape)} -> ({c}, {h}, {w}), {note}",
    )


# -- folders ----------------------------------------------------------------------------------
def is_image_folder(path: Path) -> bool:
    """Whether the directory ``path`` holds image files, directly or in sub-folders."""
    for entry in path.iterdir():
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            return True
        if entry.is_dir() and not entry.name.startswith("."):
            if any(f.suffix.lower() in IMAGE_SUFFIXES for f in entry.iterdir() if f.is_file()):
                return True
    return False


def _visible(folder: Path) -> list[Path]:
    # Hidden entries (.DS_Store, .ipynb_checkpoints) are what file browsers leave behind.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def image_files(path: str | os.PathLike) -> tuple[list[Path], list[int] | None, tuple[str, ...]]:
    """The image files of a folder, in order, and their class indices.

    The ImageFolder convention: the images lie directly in ``path`` (no labels), or in one
    sub-folder per class, the sorted sub-folder names being the classes (one sub-folder only:
    no labels). Hidden files and folders (names starting with ``.``) are skipped.

    Returns:
        ``(files, labels, classes)``: files sorted by class then name, one label per file
        (``None`` without classes), and the class names.

    Raises:
        ValueError: a file that is not ``.png`` / ``.jpg`` / ``.jpeg``, images beside class
            folders, a folder inside a class folder, an empty class folder, no images.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of images")
    entries = _visible(root)
    folders = [p for p in entries if p.is_dir()]
    files = [p for p in entries if not p.is_dir()]
    kinds = ", ".join(IMAGE_SUFFIXES)
    for f in files:
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"{f} is not an image file ({kinds}); an image folder holds only images, "
                "or class sub-folders of images: move it out"
            )
    if folders and files:
        raise ValueError(
            f"{root} holds both images ({files[0].name}, ...) and class folders "
            f"({folders[0].name}, ...); put every image in a class folder, or none"
        )
    if not folders:
        if not files:
            raise ValueError(f"{root} holds no images ({kinds})")
        return files, None, ()
    out: list[Path] = []
    labels: list[int] = []
    for k, folder in enumerate(folders):
        inside = _visible(folder)
        for f in inside:
            if f.is_dir():
                raise ValueError(
                    f"{f} is a folder inside the class folder {folder.name!r}; class folders "
                    "hold images only (one level of classes)"
                )
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(
                    f"{f} is not an image file ({kinds}); class folders hold only images: "
                    "move it out"
                )
        if not inside:
            raise ValueError(f"the class folder {folder} holds no images; remove it or fill it")
        out += inside
        labels += [k] * len(inside)
    classes = tuple(p.name for p in folders)
    return out, (labels if len(folders) > 1 else None), classes


def _unreadable(f: Path, e: Exception) -> ValueError:
    return ValueError(
        f"{f} could not be read as an image ({type(e).__name__}: {e}); remove it or replace "
        "it by a valid PNG or JPEG file"
    )


def read_image_folder(path: str | os.PathLike, *, mode: str | None = None) -> ImageValues:
    """Read a folder of same-sized PNG/JPEG images (see :func:`image_files`) with Pillow.

    Args:
        path: the folder.
        mode: ``"L"`` (grey, 1 channel), ``"RGB"`` (3) or ``"RGBA"`` (4), what every image is
            converted to; by default ``"L"`` if every image is grey (Pillow modes 1, L, LA),
            else ``"RGB"`` (alpha is dropped unless ``mode="RGBA"``).

    Returns:
        ``ImageValues`` of ``uint8`` values, 256 levels, and the labels of the class folders.

    Raises:
        ValueError: the folder problems of :func:`image_files`, an unreadable or truncated
            file, images of different sizes, 16-bit or float images; each names the file.
    """
    from PIL import Image, UnidentifiedImageError  # here: only image folders need Pillow

    if mode is not None:
        mode = check_choice(_upper(mode), "mode", MODES)
    files, labels, classes = image_files(path)
    if len(files) < MIN_ROWS:
        raise ValueError(
            f"{path} holds {_plural(len(files), 'image')}; at least {MIN_ROWS} are needed "
            "(one each for train, validation and test)"
        )
    # Pass 1 reads only the headers: sizes and modes decide the array before any decoding.
    size, first = None, files[0]
    modes = set()
    errors = (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    )
    for f in files:
        try:
            with Image.open(f) as img:
                this, kind = img.size, img.mode
        except errors as e:
            raise _unreadable(f, e) from None
        if size is None:
            size = this
        elif this != size:
            raise ValueError(
                f"{f} is {this[0]}x{this[1]} (width x height) but {first} is "
                f"{size[0]}x{size[1]}; every image must have the same size: resize them first"
            )
        if kind.startswith("I") or kind == "F":  # I, I;16, I;16B...: 32- or 16-bit integers
            raise ValueError(
                f"{f} has 16-bit or float pixels (Pillow mode {kind}); flowforge reads 8-bit "
                "images (256 levels): convert it, or save the levels in an .npy array"
            )
        modes.add(kind)
    chosen = mode or ("L" if modes <= set(_GREY_MODES) else "RGB")
    width, height = size or (0, 0)  # files is never empty, so size is set
    channels = MODES[chosen]
    values = np.empty((len(files), height, width, channels), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                pixels = np.asarray(img.convert(chosen), dtype=np.uint8)
        except errors as e:
            raise _unreadable(f, e) from None
        values[i] = pixels.reshape(height, width, channels)
    y = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    given = "given" if mode else f"from {_listing(sorted(modes))}"
    how = f"{len(files)} images of {width}x{height}, mode {chosen} ({given}), 256 levels"
    if classes:
        how += (
            f", {len(classes)} class folders ({_listing(list(classes), len(classes))})"
            if y is not None
            else f", one class folder {classes[0]!r} (no labels)"
        )
    return ImageValues(
        values=torch.from_numpy(values).permute(0, 3, 1, 2).contiguous(),
        levels=IMAGE_LEVELS,
        labels=y,
        label_names=classes if y is not None else None,
        how=how,
    )


# -- dequantisation ---------------------------------------------------------------------------
def dequantize_images(values: Tensor, levels: int, generator: torch.Generator) -> Tensor:
    r""":func:`~flowforge.data.dequantize` in chunks of images, :math:`x = (v + u) / L`.

    Memory stays bounded by the float64 noise of one chunk; the result is float32.
    """
    out = torch.empty(values.shape, dtype=torch.float32)
    for start in range(0, len(values), _CHUNK):
        part = values[start : start + _CHUNK]
        out[start : start + _CHUNK] = dequantize(part.to(torch.int64), levels, generator)
    return out


# -- the dataset ------------------------------------------------------------------------------
def load_image_dataset(
    source: str | os.PathLike,
    *,
    seed: int = 0,
    image: bool = True,
    key: str | None = None,
    label: str | int | None = None,
    layout: str | None = None,
    levels: int | None = None,
    mode: str | None = None,
) -> Dataset:
    r"""A :class:`Dataset` of the user's images: a folder of PNG/JPEG files or an image array.

    The images are shuffled with ``seed`` and split 80/10/10 % like every file
    (:func:`~flowforge.data.split_array`), then each split is dequantised,
    :math:`x = (v + u) / L` with noise drawn from a generator seeded with ``seed``, so
    ``x`` lies in :math:`[0, 1)` and ``Dataset.levels`` and ``Dataset.dequantization`` say how
    to evaluate bits per dimension exactly. A float array without ``levels`` is continuous
    data: its values are kept as they are (``levels`` is ``None``).

    Args:
        source: a folder (see :func:`image_files`) or an ``.npy`` / ``.npz`` file.
        seed: seed of the shuffle and of the dequantisation noise.
        image: keep ``(N, C, H, W)``; ``False`` flattens to ``(N, C*H*W)`` (``image_shape``
            still says how to show them).
        key: ``.npz`` only: the array of images.
        label: ``.npz`` only: the array of class labels (a folder's come from its sub-folders).
        layout: arrays only: ``"NCHW"``, ``"NHWC"`` or ``"NHW"``; detected by default.
        levels: arrays only: the number of values a pixel takes (default: 256 for ``uint8``,
            the largest value + 1 for other integers).
        mode: folders only: ``"L"``, ``"RGB"`` or ``"RGBA"``; by default grey if every image
            is, else RGB.

    Raises:
        ValueError: see :func:`read_image_folder` and :func:`read_image_array`; an option that
            does not apply to the source.

    Example:
        >>> import numpy as np, os, tempfile
        >>> from flowforge.data import load_image_dataset
        >>> path = os.path.join(tempfile.mkdtemp(), "images.npy")
        >>> np.save(path, np.random.default_rng(0).integers(0, 256, (50, 8, 8, 3), np.uint8))
        >>> ds = load_image_dataset(path)
        >>> ds.event_shape, ds.levels, ds.dequantization, ds.sizes
        ((3, 8, 8), 256, 'uniform', (40, 5, 5))
    """
    path = Path(source)
    if path.is_dir():
        for option, value in (("key", key), ("label", label), ("layout", layout)):
            if value is not None:
                raise ValueError(
                    f"{option}={value!r} applies to image arrays; {path} is a folder (its labels "
                    "are its class sub-folders)"
                )
        if levels is not None:
            raise ValueError(f"levels={levels!r} applies to arrays; image files have 256 levels")
        read = read_image_folder(path, mode=mode)
    else:
        if mode is not None:
            raise ValueError(f"mode={mode!r} applies to image folders; {path} is an array file")
        if label is not None and not isinstance(label, str):
            raise TypeError(f"label must name an array of {path}, got {label!r}")
        read = read_image_array(path, name=key, layout=layout, levels=levels, label=label)
    values = read.values
    c, h, w = values.shape[1:]
    parts = list(split_array(values, FILE_FRACTIONS, seed=seed))
    if read.levels is not None:
        g = torch.Generator().manual_seed(seed)
        parts = [dequantize_images(p, read.levels, g) for p in parts]
    if not image:
        parts = [p.reshape(len(p), -1) for p in parts]
    labels = None
    if read.labels is not None:
        labels = dict(zip(SPLITS, split_array(read.labels, FILE_FRACTIONS, seed=seed), strict=True))
    train, val, test = parts
    discrete = read.levels is not None
    dequantised = f", dequantised ({DEQUANTIZATION}) to [0, 1)" if discrete else ""
    return Dataset(
        name=str(path),
        train=train,
        val=val,
        test=test,
        event_shape=tuple(train.shape[1:]),
        labels=labels,
        num_classes=len(read.label_names) if read.label_names else None,
        label_names=read.label_names,
        levels=read.levels,
        dequantization=DEQUANTIZATION if discrete else None,
        image_shape=(c, h, w),
        description=f"images ({c}, {h}, {w}) from {path}: {read.how}{dequantised}",
    )
