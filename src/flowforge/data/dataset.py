"""A dataset as the trainer sees it, and :func:`load`: a built-in name or a file, one call."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .._checks import check_bool, check_choice, check_count, check_int, check_seed, did_you_mean
from .files import SUFFIXES, load_array, read_columns, read_labelled, split_array
from .toy import TOY_DENSITIES

SPLITS = ("train", "val", "test")
"""Names of the three splits, the keys of :attr:`Dataset.labels`."""

TOY_SIZES = (100_000, 10_000, 20_000)
"""Default numbers of train / validation / test samples drawn from a 2-D toy density."""

FILE_FRACTIONS = (0.8, 0.1, 0.1)
"""Train / validation / test fractions of the rows of a user's file."""

_SHOWN_FILES = 3  # data files named when a directory is given: enough to point at the right one

_DEQUANTIZATIONS = ("uniform",)  # how levels become continuous; variational ones may follow
_MAX_LEVELS = 256  # dequantize keeps floor(L x) exact in float32 up to 8 bits (digits.py)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train, validation and test data of one source, with what is known about its density.

    Data are in the user's units; a model is fit to standardised data through
    :class:`~flowforge.data.Standardize`, which maps its samples back.

    Attributes:
        name: the built-in name, or the file's path.
        train: ``(N_train, *event_shape)`` float32.
        val: ``(N_val, *event_shape)`` float32.
        test: ``(N_test, *event_shape)`` float32.
        event_shape: shape of one sample, ``(D,)`` or ``(C, H, W)``.
        labels: class labels per split, ``{"train": (N_train,), ...}`` int64, or ``None``.
        log_prob: the exact log-density in data units, ``(B, *event_shape) -> (B,)``, or
            ``None`` where none is known.
        entropy: the entropy of the data distribution in nats, the floor of any model's test
            NLL, or ``None``.
        entropy_stderr: the standard error of ``entropy`` (0 for a closed form), or ``None``.
        levels: number of discrete levels the data were dequantised from (17 for the digits,
            256 for 8-bit images), for the bits/dim correction ``D log(levels)``; ``None`` for
            continuous data. With levels every value lies in ``[0, 1)`` and the level of a
            value ``x`` is ``floor(levels * x)`` exactly (:meth:`quantized`).
        description: one line for people.
        image_shape: ``(C, H, W)`` when the samples are images (flat or not), so plots can
            show them as images; ``None`` otherwise.
        columns: one name per feature of ``(N, D)`` data, from a CSV file's header row (or a
            structured array's fields), for axis labels and the header of written samples;
            ``None`` where the source names none (the built-ins, a headerless file).
        num_classes: ``K``, the number of classes of :attr:`labels` (labels are ``0..K-1``),
            or ``None`` without labels.
        label_names: what each label index stands for (the digit, a CSV column's text, an
            image folder's class sub-folder), or ``None`` where the index is the name.
        dequantization: how the levels were made continuous: ``"uniform"``, ``x = (v + u) / L``
            with ``u ~ U[0, 1)`` (:func:`~flowforge.data.dequantize`), the default whenever
            ``levels`` is set; ``None`` for continuous data.
    """

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    event_shape: tuple[int, ...]
    labels: dict[str, Tensor] | None = None
    log_prob: Callable[[Tensor], Tensor] | None = None
    entropy: float | None = None
    entropy_stderr: float | None = None
    levels: int | None = None
    description: str = ""
    image_shape: tuple[int, int, int] | None = None
    columns: tuple[str, ...] | None = None
    num_classes: int | None = None
    label_names: tuple[str, ...] | None = None
    dequantization: str | None = None

    def __post_init__(self) -> None:
        # Others build Datasets too: catch inconsistent pieces here, not deep in training.
        shape = tuple(self.event_shape)
        object.__setattr__(self, "event_shape", shape)
        for split in SPLITS:
            x = getattr(self, split)
            if not isinstance(x, Tensor):
                raise TypeError(f"{split} must be a torch.Tensor, got {type(x).__name__}")
            if tuple(x.shape[1:]) != shape or x.shape[0] < 1:
                raise ValueError(
                    f"{split} must have shape (N, {', '.join(map(str, shape))}) with N >= 1 "
                    f"for event_shape {shape}, got {tuple(x.shape)}"
                )
        if self.labels is not None:
            unknown = set(self.labels) - set(SPLITS)
            if unknown:
                raise ValueError(f"labels keys must be among {SPLITS}, got {sorted(unknown)}")
            for split, y in self.labels.items():
                n = getattr(self, split).shape[0]
                if not isinstance(y, Tensor) or tuple(y.shape) != (n,):
                    got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
                    raise ValueError(f"labels[{split!r}] must have shape ({n},), got {got}")
                if y.dtype != torch.int64:
                    raise TypeError(f"labels[{split!r}] must be int64, got {y.dtype}")
            k = self.num_classes
            if k is None:
                k = 1 + max(int(y.max()) for y in self.labels.values())
                object.__setattr__(self, "num_classes", k)
            for split, y in self.labels.items():
                if int(y.min()) < 0 or int(y.max()) >= k:
                    raise ValueError(
                        f"labels[{split!r}] must lie in 0..{k - 1} (num_classes={k}), got "
                        f"{int(y.min())}..{int(y.max())}"
                    )
            if self.label_names is not None and len(self.label_names) != k:
                raise ValueError(
                    f"label_names must name each of the {k} classes, got {len(self.label_names)}"
                )
        elif self.num_classes is not None or self.label_names is not None:
            raise ValueError("num_classes and label_names describe labels; this dataset has none")
        if self.columns is not None:
            columns = tuple(self.columns)
            if not all(isinstance(c, str) for c in columns):
                raise TypeError(f"columns must be strings, got {columns!r}")
            if len(shape) != 1 or len(columns) != shape[0]:
                raise ValueError(
                    f"columns must give one name per feature of (N, D) data, event_shape "
                    f"{shape}, got {len(columns)} names"
                )
            object.__setattr__(self, "columns", columns)
        self._check_levels()

    def _check_levels(self) -> None:
        if self.levels is None:
            if self.dequantization is not None:
                raise ValueError(
                    f"dequantization={self.dequantization!r} describes discrete data, but "
                    "levels is None; give the number of levels"
                )
            return
        check_int(self.levels, "levels", 2, maximum=_MAX_LEVELS)
        if self.dequantization is None:
            object.__setattr__(self, "dequantization", _DEQUANTIZATIONS[0])
        check_choice(self.dequantization, "dequantization", _DEQUANTIZATIONS)
        for split in SPLITS:
            x = getattr(self, split)
            # The exact bits/dim correction assumes x = (v + u) / L lies in [0, 1).
            low, high = float(x.min()), float(x.max())
            if low < 0 or high >= 1:
                raise ValueError(
                    f"{split} must lie in [0, 1) for data dequantised from {self.levels} levels, "
                    f"got values in [{low:g}, {high:g}]; dequantise with "
                    "flowforge.data.dequantize(values, levels, generator)"
                )

    def quantized(self, split: str = "train") -> Tensor:
        """The integer levels ``floor(levels * x)`` of a split of discrete data, int64.

        Exact for dequantised data (:func:`~flowforge.data.dequantize`), so the noise can be
        redrawn, e.g. once per epoch: ``dequantize(ds.quantized(), ds.levels, generator)``.

        Raises:
            ValueError: the dataset is continuous (``levels`` is ``None``), an unknown split.
        """
        check_choice(split, "split", SPLITS)
        if self.levels is None:
            raise ValueError(f"{self.name} is continuous data (levels is None); it has no levels")
        return torch.floor(getattr(self, split).double() * self.levels).long()

    @property
    def dim(self) -> int:
        """``D``, the number of values of one sample (64 for the digits, flat or as images)."""
        return math.prod(self.event_shape)

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Numbers of train, validation and test samples."""
        return (len(self.train), len(self.val), len(self.test))


def available() -> list[str]:
    """Names of the built-in datasets: the 2-D toy densities, then ``digits``."""
    return [*TOY_DENSITIES, "digits"]


def describe(name: str) -> str:
    """One line describing the built-in dataset ``name`` (for ``flowforge datasets``)."""
    if name in TOY_DENSITIES:
        return "2-D: " + TOY_DENSITIES[name].summary
    if name == "digits":
        from .digits import DIGITS_SUMMARY  # here: digits.py imports this module

        return DIGITS_SUMMARY
    raise ValueError(_unknown(name))


def load(
    source: str | os.PathLike,
    *,
    seed: int = 0,
    image: bool | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    key: str | None = None,
    label: str | int | None = None,
    layout: str | None = None,
    levels: int | None = None,
    mode: str | None = None,
) -> Dataset:
    """Load a built-in dataset by name, the user's ``.npy`` / ``.npz`` / ``.csv`` file, or a
    folder of images.

    - **2-D toy densities** (``checkerboard``, ``8gaussians``, ...): ``n_train``, ``n_val``
      and ``n_test`` samples (default 100 000 / 10 000 / 20 000) drawn from the sampler with
      generator seeds ``3 * seed``, ``3 * seed + 1`` and ``3 * seed + 2``: distinct for every
      split and every ``seed``. ``checkerboard`` and ``8gaussians`` carry their exact
      ``log_prob`` and entropy.
    - **digits**: :func:`~flowforge.data.load_digits_dataset`, the fixed 1000/350/447 split;
      ``seed`` chooses the dequantisation noise, ``image=True`` gives ``(N, 1, 8, 8)``.
    - **a file**: :func:`~flowforge.data.load_array`, rows shuffled with ``seed`` and split
      80/10/10 % by :func:`~flowforge.data.split_array`. ``(N, C, H, W)`` arrays are flattened
      to ``(N, C*H*W)`` unless ``image=True``.
    - **images**: a folder of PNG/JPEG files (class sub-folders as labels), or an ``.npy`` /
      ``.npz`` array with ``image=True``: :func:`~flowforge.data.load_image_dataset`, split
      80/10/10 % and dequantised, :math:`x = (v + u) / L` in :math:`[0, 1)`, with ``levels``
      and ``dequantization`` recorded. A folder gives ``(N, C, H, W)`` unless ``image=False``.

    A name of the built-ins takes precedence over a file of the same name.

    Args:
        source: a name from :func:`available`, or a path ending in ``.npy``, ``.npz``, ``.csv``.
        seed: seed of the draw (toy), the dequantisation (digits) or the shuffle (file).
        image: keep images as ``(N, C, H, W)``: ``digits``, image arrays (``(N, H, W)``,
            ``(N, H, W, C)`` or ``(N, C, H, W)``, read by
            :func:`~flowforge.data.read_image_array`) and folders. ``None`` (the default):
            images for a folder, flat rows for everything else; ``False`` flattens a folder.
        n_train: toy densities only: number of training samples.
        n_val: toy densities only: number of validation samples.
        n_test: toy densities only: number of test samples.
        key: ``.npz`` files only: the name of the array to load, when the file holds several.
        label: files only: where the class labels are: a ``.csv`` column (its header name or
            its position counted from 1; integers or text), or the name of an ``.npz`` array of
            ``(N,)`` labels. The built-ins carry their labels already (the digit; the mixture
            component of ``8gaussians``, the arm, blade, ring, moon or circle of the others), a
            folder its class sub-folders.
        layout: image arrays only: ``"NCHW"``, ``"NHWC"`` or ``"NHW"`` (any case); detected
            when ``None`` and said in ``description``.
        levels: image arrays only: the number of values a pixel takes (default 256 for
            ``uint8``, the largest value + 1 for other integers; needed for float arrays of
            whole numbers, which are continuous images without it).
        mode: image folders only: ``"L"`` (grey), ``"RGB"`` or ``"RGBA"``; default grey when
            every image is grey, else RGB.

    Returns:
        The :class:`Dataset`.

    Raises:
        FileNotFoundError: ``source`` names a ``.npy``/``.npz``/``.csv`` file that does not exist.
        ValueError: an unknown name (the message lists the built-ins), a bad file (see
            :func:`~flowforge.data.load_array`), an option that does not apply to ``source``.
        TypeError: an argument of the wrong type.

    Example:
        >>> import flowforge as ff
        >>> ds = ff.data.load("checkerboard", n_train=1000, n_val=100, n_test=100)
        >>> ds.train.shape, round(ds.entropy, 3)
        (torch.Size([1000, 2]), 3.466)
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a dataset name or a path (str), got {type(source).__name__}"
        )
    check_seed(seed)
    if image is not None:
        check_bool(image, "image")
    sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    given = [k for k, v in sizes.items() if v is not None]
    name = os.fspath(source)

    images = {"layout": layout, "levels": levels, "mode": mode}
    if name in TOY_DENSITIES:
        _only(name, image=image, key=key, label=label, **images)
        counts = [
            check_count(d if v is None else v, option)
            for (option, v), d in zip(sizes.items(), TOY_SIZES, strict=True)
        ]
        return _load_toy(name, seed, counts)
    is_file = Path(name).suffix.lower() in SUFFIXES
    if name != "digits" and not is_file:
        if Path(name).is_dir():
            from .images import is_image_folder, load_image_dataset  # images.py imports this

            if not is_image_folder(Path(name)):
                raise ValueError(_directory(Path(name)))
            if given:
                raise ValueError(f"{', '.join(given)}: sizes apply to the 2-D toy datasets only")
            keep = True if image is None else image
            return load_image_dataset(
                name,
                seed=seed,
                image=keep,
                key=key,
                label=label,
                layout=layout,
                levels=levels,
                mode=mode,
            )
        if Path(name).is_file():
            load_array(name)  # raises the error that names the unsupported suffix
        raise ValueError(_unknown(name))
    if given:
        fixed = "its fixed 1000/350/447 split" if name == "digits" else "80/10/10 % of its rows"
        raise ValueError(
            f"{', '.join(given)}: sizes apply to the 2-D toy datasets only; {name!r} uses {fixed}"
        )
    if name == "digits":
        from .digits import load_digits_dataset  # here: digits.py imports this module

        _only(name, key=key, label=label, **images)
        return load_digits_dataset(image=bool(image), seed=seed)
    path = Path(name)
    if path.suffix.lower() in (".npy", ".npz") and (
        image or layout is not None or levels is not None
    ):
        from .images import load_image_dataset  # here: images.py imports this module

        return load_image_dataset(
            path,
            seed=seed,
            image=bool(image),
            key=key,
            label=label,
            layout=layout,
            levels=levels,
            mode=mode,
        )
    for option, value in images.items():
        if value is not None:
            raise ValueError(
                f"{option}={value!r} applies to images (an .npy/.npz array with image=True, or "
                f"a folder); {path} is a {path.suffix} file"
            )
    return _load_file(path, seed, bool(image), key, label)


def _only(name: str, **options: object) -> None:
    """Refuse options that have no meaning for the built-in ``name``."""
    for option, value in options.items():
        if value not in (None, False):
            raise ValueError(f"{option}={value!r} does not apply to the built-in dataset {name!r}")


def _unknown(name: str) -> str:
    return (
        f"unknown dataset {name!r}: {did_you_mean(name, available())}"
        f"built-in datasets are {', '.join(available())}; "
        f"a file path must end with {', '.join(SUFFIXES)}"
    )


def _directory(path: Path) -> str:
    """Why a directory is no dataset, and the data files inside it that would be one."""
    inside = sorted(f.name for f in path.iterdir() if f.suffix.lower() in SUFFIXES and f.is_file())
    shown = ", ".join(inside[:_SHOWN_FILES]) + (", ..." if len(inside) > _SHOWN_FILES else "")
    holds = f"; it holds {shown}" if inside else ""
    return (
        f"{path} is a directory; a dataset is a built-in name ({', '.join(available())}), "
        f"a folder of images (.png, .jpg, .jpeg; class sub-folders as labels) "
        f"or a file ending with {', '.join(SUFFIXES)}{holds}"
    )


def _load_toy(name: str, seed: int, counts: list[int]) -> Dataset:
    toy = TOY_DENSITIES[name]
    # Seeds 3s, 3s+1, 3s+2: the splits of one seed never share a draw, nor do two seeds.
    labels = None
    if toy.labelled is not None:
        drawn = [toy.sample_with_labels(n, seed=3 * seed + k) for k, n in enumerate(counts)]
        (train, y_train), (val, y_val), (test, y_test) = drawn
        labels = {"train": y_train, "val": y_val, "test": y_test}
    else:
        train, val, test = (toy.sample(n, seed=3 * seed + k) for k, n in enumerate(counts))
    entropy = toy.entropy() if toy.entropy is not None else None
    return Dataset(
        name=name,
        train=train,
        val=val,
        test=test,
        event_shape=(2,),
        log_prob=toy.log_prob,
        entropy=entropy.nats if entropy is not None else None,
        entropy_stderr=entropy.stderr if entropy is not None else None,
        description="2-D: " + toy.summary,
        labels=labels,
        num_classes=toy.labels[1] if toy.labels is not None else None,
    )


def _load_file(
    path: Path, seed: int, image: bool, key: str | None, label: str | int | None
) -> Dataset:
    if key is not None and path.suffix.lower() != ".npz":
        raise ValueError(f"key={key!r} selects an array of an .npz file, but {path} is not one")
    labels, names = None, None
    if label is None:
        x, columns = read_columns(path, name=key)
    else:
        x, columns, y, names = read_labelled(path, label, name=key)
        labels = dict(zip(SPLITS, split_array(y, FILE_FRACTIONS, seed=seed), strict=True))
    if image and x.ndim != 4:
        raise ValueError(
            f"image=True needs (N, C, H, W) images, but {path} holds rows of shape {tuple(x.shape)}"
        )
    if not image and x.ndim == 4:
        x = x.reshape(len(x), -1)
    train, val, test = split_array(x, FILE_FRACTIONS, seed=seed)
    return Dataset(
        name=str(path),
        train=train,
        val=val,
        test=test,
        event_shape=tuple(x.shape[1:]),
        description=f"{len(x)} samples of shape {tuple(x.shape[1:])} from {path}"
        + (f", {len(names)} classes ({label!r})" if names is not None else ""),
        columns=columns if x.ndim == 2 else None,
        labels=labels,
        num_classes=len(names) if names is not None else None,
        label_names=names,
    )
