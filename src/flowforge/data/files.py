"""The user's own data: ``.npy``, ``.npz`` and ``.csv`` files, validated on load, and splits.

Every problem with a file becomes one ``ValueError`` (``FileNotFoundError`` for a missing file)
that names the file and says what is wrong where: how many rows, which rows and columns. CSV
positions count from 1, as an editor or spreadsheet shows them (``line 7``, ``column 2``);
NumPy positions are 0-based indices, as ``x[i]`` reads them. Nothing is ever unpickled.
"""

from __future__ import annotations

import csv
import io
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor

from .._checks import check_seed, did_you_mean, is_real

SUFFIXES = (".npy", ".npz", ".csv")
"""The file types :func:`load_array` reads."""

MIN_ROWS = 3
"""Fewest rows a file may hold: one each for the train, validation and test splits."""

_SHOWN = 5
"""How many offending rows or columns an error message lists before saying "..."."""


# -- messages ---------------------------------------------------------------------------------
def _listing(items: Sequence[object], total: int | None = None) -> str:
    """``a, b, c, ...`` with at most ``_SHOWN`` items, ``...`` when ``total`` says more exist."""
    total = len(items) if total is None else total
    text = ", ".join(str(i) for i in items[:_SHOWN])
    return text + (", ..." if total > _SHOWN else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# -- entry points -----------------------------------------------------------------------------
def load_array(path: str | os.PathLike, name: str | None = None) -> Tensor:
    """Load and validate the user's data file: rows of samples as a float32 tensor.

    ``.npy``: one array, ``(N, D)`` rows or ``(N, C, H, W)`` images, of a numeric dtype (a 1-D
    structured array with numeric fields is read as one column per field). ``.npz``: the one
    array it holds, or the one called ``name``. ``.csv``: comma-separated numbers, one sample
    per line; an optional header row of column names is recognised by holding no number;
    blank lines and lines starting with ``#`` are skipped.

    Args:
        path: the file; its suffix (``.npy``, ``.npz`` or ``.csv``, any case) says how to read it.
        name: for ``.npz`` only, the name of the array to load.

    Returns:
        ``(N, D)`` or ``(N, C, H, W)`` float32 tensor, ``N >= 3``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TypeError: ``path`` is not a string or path, ``name`` not a string.
        ValueError: anything wrong with the file, said precisely: unsupported suffix, empty file,
            not a valid ``.npy``/``.npz`` (truncated, corrupt), arrays needing pickle, several
            arrays and no ``name``, ragged CSV rows, non-numeric columns, NaN or infinite
            values, values beyond float32, a shape that is not ``(N, D)`` / ``(N, C, H, W)``,
            fewer than 3 rows.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from flowforge.data import load_array
        >>> path = os.path.join(tempfile.mkdtemp(), "points.npy")
        >>> np.save(path, np.random.default_rng(0).normal(size=(100, 2)))
        >>> load_array(path).shape
        torch.Size([100, 2])
    """
    return read_columns(path, name)[0]


def read_columns(
    path: str | os.PathLike, name: str | None = None
) -> tuple[Tensor, tuple[str, ...] | None]:
    """:func:`load_array`, and the names of the columns where the file gives them.

    The names come from a CSV file's header row (an empty name becomes ``x{j}``, counting
    from 1) or from the fields of a structured ``.npy``/``.npz`` array; a headerless CSV, a
    plain array or images give ``None``.

    Returns:
        ``(x, columns)``: the tensor of :func:`load_array`, and one name per column of
        ``(N, D)`` rows, or ``None``.

    Example:
        >>> import tempfile, os
        >>> from flowforge.data import read_columns
        >>> path = os.path.join(tempfile.mkdtemp(), "points.csv")
        >>> _ = open(path, "w").write("height,weight\\n1.7,60\\n1.8,75\\n1.6,55\\n")
        >>> x, columns = read_columns(path)
        >>> x.shape, columns
        (torch.Size([3, 2]), ('height', 'weight'))
    """
    path = _existing_file(path)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    suffix = path.suffix.lower()
    if name is not None and suffix != ".npz":
        raise ValueError(f"name={name!r} selects an array of an .npz file, but {path} is {suffix}")
    if suffix == ".csv":
        values, header, lines, _ = _read_csv(path)
        x = _validate(values, str(path), columns=header, lines=lines)
        named = None if header is None else [h or f"x{j + 1}" for j, h in enumerate(header)]
        return x, None if named is None else tuple(named)
    if suffix == ".npy":
        with open(path, "rb") as f:
            array = _read_npy(f, lambda: open(path, "rb"), f"{path} is not a valid .npy file")
        where = str(path)
    else:
        array, where = _read_npz(path, name)
    return _validate(_numeric(array, where), where), array.dtype.names


def read_labelled(
    path: str | os.PathLike, label: str | int, name: str | None = None
) -> tuple[Tensor, tuple[str, ...] | None, Tensor, tuple[str, ...]]:
    """:func:`read_columns` of a file whose samples carry class labels.

    ``.csv``: ``label`` names the label column (its header name, or its position counted from
    1); the column may hold integers or text and is left out of the data. ``.npz``: ``label``
    names the array of ``(N,)`` labels; the data are the array ``name``, or the only other one.

    Returns:
        ``(x, columns, labels, label_names)``: the data, their column names (or ``None``), the
        ``(N,)`` int64 labels ``0..K-1`` and the class each index stands for (see
        :func:`encode_labels`).
    """
    path = _existing_file(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        values, header, lines, raw = _read_csv(path, label)
        x = _validate(values, str(path), columns=header, lines=lines)
        named = None if header is None else tuple(h or f"x{j + 1}" for j, h in enumerate(header))
        labels, names = encode_labels(raw or [], f"{path} column {label!r}")
        return x, named, labels, names
    if suffix != ".npz":
        raise ValueError(
            f"label={label!r} names a CSV column or an .npz array, but {path} is a {suffix} file; "
            "save the data and the labels together with numpy.savez(path, x=..., y=...)"
        )
    if not isinstance(label, str):
        raise TypeError(f"label must name an array of {path}, got {label!r}")
    if name is None:
        with zipfile.ZipFile(path) as archive:
            others = [m[:-4] for m in archive.namelist() if m.endswith(".npy") and m[:-4] != label]
        if len(others) == 1:
            name = others[0]
    array, where = _read_npz(path, label)
    if array.ndim != 1 or array.dtype.kind not in "biuU":
        raise ValueError(
            f"{where} must hold one class label per sample, an (N,) array of integers or "
            f"strings, got shape {array.shape} and dtype {array.dtype}"
        )
    x, columns = read_columns(path, name)
    if len(array) != len(x):
        raise ValueError(
            f"{where} holds {len(array)} labels but the data hold {len(x)} samples; "
            "one label per sample"
        )
    labels, names = encode_labels(array.tolist(), where)
    return x, columns, labels, names


def split_array(
    x: Tensor, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Shuffle the rows of ``x`` with a fixed seed and cut them into train / val / test.

    The validation and test sets get ``round(f * N)`` rows each (at least 1), the training set
    the rest, so the three partition ``x``. The same ``x`` and ``seed`` always give the same
    split.

    Args:
        x: ``(N, *event_shape)`` data, ``N >= 3``.
        fractions: ``(train, val, test)`` fractions, positive and summing to 1.
        seed: seed of the shuffling permutation.

    Returns:
        ``(train, val, test)``, each ``(N_i, *event_shape)``.

    Example:
        >>> import torch
        >>> from flowforge.data import split_array
        >>> train, val, test = split_array(torch.randn(100, 2))
        >>> len(train), len(val), len(test)
        (80, 10, 10)
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] < MIN_ROWS:
        raise ValueError(
            f"x must hold at least {MIN_ROWS} rows (one per split), got shape {tuple(x.shape)}"
        )
    check_seed(seed)
    fractions = tuple(fractions)
    if (
        len(fractions) != 3
        or not all(is_real(f) and f > 0 for f in fractions)
        # decimal fractions such as 0.7 + 0.2 + 0.1 miss 1 by a rounding error
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9)
    ):
        raise ValueError(
            f"fractions must be three positive numbers (train, val, test) summing to 1, "
            f"got {fractions}"
        )
    n = x.shape[0]
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(
            f"fractions {fractions} leave no training rows out of {n}; give train a larger share"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return x[perm[:n_train]], x[perm[n_train : n_train + n_val]], x[perm[n_train + n_val :]]


# -- finding and reading files ----------------------------------------------------------------
def _existing_file(path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(
            f"unsupported file type {path.suffix or '(no suffix)'!r} for {path}: "
            f"expected one of {', '.join(SUFFIXES)}"
        )
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a {path.suffix} file")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes)")
    return path


def _read_npy(f: IO[bytes], reopen: Callable[[], IO[bytes]], invalid: str) -> np.ndarray:
    """Read one ``.npy`` stream, checking its header first so errors can say what it promised.

    ``f`` is the open stream, ``reopen()`` opens it again at the start for the full read, and
    ``invalid`` begins every error message ("data.npy is not a valid .npy file").
    """
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        raise ValueError(
            f"{invalid}: it does not start with the .npy signature (write it with numpy.save)"
        ) from None
    # Headers of versions 1 and 2 are read here to name the promised shape in errors; the
    # rare version 3 (non-Latin-1 field names) is left to read_array.
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    header = None
    try:
        if version in readers:
            header = readers[version](f)
    except ValueError as e:
        raise ValueError(f"{invalid}: its header is corrupt ({e})") from None
    if header is not None and header[2].hasobject:
        raise ValueError(
            f"{invalid}: it holds Python objects (dtype {header[2]}), which would need unpickling; "
            f"save a numeric array, e.g. numpy.save(path, x.astype(float))"
        )
    with reopen() as g:
        try:
            return np.lib.format.read_array(g, allow_pickle=False)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:
            promised = f" (its header promises shape {header[0]}, {header[2]})" if header else ""
            raise ValueError(f"{invalid}: it is truncated or corrupt{promised}: {e}") from None


def _read_npz(path: Path, name: str | None) -> tuple[np.ndarray, str]:
    """Read the array ``name`` (or the only array) of an ``.npz`` archive."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"{path} is not a valid .npz file (truncated, or not a zip archive; write it with "
            f"numpy.savez): {e}"
        ) from None
    with archive:
        members = {m[: -len(".npy")]: m for m in archive.namelist() if m.endswith(".npy")}
        keys = ", ".join(repr(k) for k in members)
        if not members:
            raise ValueError(f"{path} holds no arrays")
        if name is None:
            if len(members) > 1:
                raise ValueError(
                    f"{path} holds {len(members)} arrays ({keys}); say which one to load: "
                    f"load(..., key=NAME), or --data-option key=NAME on the command line"
                )
            name = next(iter(members))
        elif name not in members:
            raise ValueError(f"{path} has no array named {name!r}; it holds {keys}")
        where = f"{path}[{name!r}]"
        member = members[name]
        try:
            with archive.open(member) as f:
                invalid = f"{path} is not a valid .npz file: its array {name!r} is corrupt"
                return _read_npy(f, lambda: archive.open(member), invalid), where
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{path} is not a valid .npz file: {name!r} is corrupt: {e}") from None


def _read_csv(
    path: Path, label: str | int | None = None
) -> tuple[np.ndarray, list[str] | None, list[int], list[str] | None]:
    """Parse a CSV file of numbers: ``(N, D)`` float64 values, header names, file line numbers,
    and the raw fields of the ``label`` column (a header name or a 1-based position), which is
    left out of the values and may hold text."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a UTF-8 text file, as a .csv must be: {e}") from None
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            fields = [f.strip() for f in row]
            # Blank lines, and rows of only empty fields (spreadsheets export them), hold no data.
            if not any(fields) or fields[0].startswith("#"):
                continue
            if header is None and not rows and not any(_is_number(f) for f in fields):
                header = fields
                continue
            rows.append(fields)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise ValueError(f"{path} is not a valid CSV file: line {reader.line_num}: {e}") from None
    if not rows:
        what = "a header row but no data rows" if header else "no data rows"
        raise ValueError(f"{path} has {what}")

    width = len(header) if header is not None else len(rows[0])
    first = "the header" if header is not None else f"the first row (line {lines[0]})"
    ragged = [(line, len(r)) for r, line in zip(rows, lines, strict=True) if len(r) != width]
    if ragged:
        shown = _listing([f"line {line} has {k}" for line, k in ragged], len(ragged))
        raise ValueError(
            f"{path}: {_plural(len(ragged), 'row')} of {len(rows)} "
            f"{'does' if len(ragged) == 1 else 'do'} not have the {width} fields of {first} "
            f"({shown}); every row needs one value per column"
        )
    labels = None
    if label is not None:
        j = _label_column(path, label, header, width)
        labels = [r[j] for r in rows]
        rows = [r[:j] + r[j + 1 :] for r in rows]
        header = None if header is None else header[:j] + header[j + 1 :]
        width -= 1
        if width == 0:
            raise ValueError(f"{path}: the label column {label!r} is its only column; no data")

    values = np.empty((len(rows), width), dtype=np.float64)
    bad: dict[int, list[tuple[int, str]]] = {}
    for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
        for j, field in enumerate(row):
            try:
                values[i, j] = float(field)
            except ValueError:
                bad.setdefault(j, []).append((line, field))
    if bad:
        parts = []
        for j, hits in sorted(bad.items()):
            line, field = hits[0]
            parts.append(
                f"{_column_name(j, header)} ({_plural(len(hits), 'row')}, "
                f"e.g. {field!r} on line {line})"
            )
        raise ValueError(
            f"{path}: non-numeric values in {_plural(len(bad), 'column')}: {_listing(parts)}; "
            f"every column must hold numbers: drop or encode text columns, fill empty cells"
        )
    return values, header, lines, labels


def _label_column(path: Path, label: str | int, header: list[str] | None, width: int) -> int:
    """The 0-based index of the label column, named by its header name or 1-based position."""
    if isinstance(label, int) and not isinstance(label, bool):
        if not 1 <= label <= width:
            raise ValueError(
                f"label={label}: {path} has columns 1..{width}; give a column number in that "
                "range or a header name"
            )
        return label - 1
    if not isinstance(label, str):
        raise TypeError(f"label must be a column name or a 1-based column number, got {label!r}")
    if header is None:
        if label.isdigit():
            return _label_column(path, int(label), header, width)
        raise ValueError(
            f"label={label!r}: {path} has no header row to name columns by; give the label "
            f"column's number (1..{width})"
        )
    if label not in header:
        raise ValueError(
            f"label={label!r}: {path} has no column of that name; "
            f"{did_you_mean(label, header)}its columns are {', '.join(header)}"
        )
    return header.index(label)


def encode_labels(raw: Sequence[object], where: str) -> tuple[Tensor, tuple[str, ...]]:
    """Class labels from a file as indices ``0..K-1`` and the class names they stand for.

    Integer labels that are already ``0..K-1`` keep their values; any other set of values
    (text, or integers such as 1..3 or -1/1) is numbered in sorted order (numerically when
    all are numbers), and the names record what each index was.

    Raises:
        ValueError: an empty label, a float label that is not a whole number, or one class.
    """
    fields = [str(v).strip() for v in raw]
    empty = [i for i, f in enumerate(fields) if not f]
    if empty:
        raise ValueError(
            f"{where}: {_plural(len(empty), 'row')} without a label (e.g. row {empty[0] + 1})"
        )
    numeric = all(_is_number(f) for f in fields)
    if numeric:
        values = [float(f) for f in fields]
        fractional = [f for f, v in zip(fields, values, strict=True) if not float(v).is_integer()]
        if fractional:
            raise ValueError(
                f"{where}: labels must be classes (integers or names), got {fractional[0]!r}; a "
                "continuous column is a feature: condition on it with context_dim instead"
            )
        keys = sorted({int(v) for v in values})
        index = {k: i for i, k in enumerate(keys)}
        labels = torch.tensor([index[int(v)] for v in values], dtype=torch.int64)
        names = tuple(str(k) for k in keys)
    else:
        keys_s = sorted(set(fields))
        index_s = {k: i for i, k in enumerate(keys_s)}
        labels = torch.tensor([index_s[f] for f in fields], dtype=torch.int64)
        names = tuple(keys_s)
    if len(names) < 2:
        raise ValueError(
            f"{where}: the labels hold one class ({names[0]!r}); nothing to condition on"
        )
    return labels, names


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _column_name(j: int, header: list[str] | None) -> str:
    """A CSV column as a person finds it: its header name, and its position counted from 1."""
    return f"column {j + 1}" + (f" {header[j]!r}" if header is not None else "")


# -- checking the array -----------------------------------------------------------------------
def _numeric(array: np.ndarray, where: str) -> np.ndarray:
    """``array`` as float64, after checking its dtype holds real numbers."""
    if array.dtype.names is not None:
        fields = array.dtype.names
        if array.ndim != 1:
            raise ValueError(
                f"{where} is a structured array of shape {array.shape}; "
                f"a table of named columns must be 1-D (one record per row)"
            )
        bad = [f for f in fields if array.dtype[f].kind not in "biuf" or array.dtype[f].shape]
        if bad:
            shown = _listing([f"{f!r} ({array.dtype[f]})" for f in bad], len(bad))
            raise ValueError(
                f"{where}: non-numeric {'field' if len(bad) == 1 else 'fields'} {shown}; "
                f"every column must hold real numbers"
            )
        return np.stack([array[f].astype(np.float64) for f in fields], axis=1)
    if array.dtype.kind not in "biuf":
        kinds = {"c": "complex numbers", "U": "text", "S": "bytes", "M": "dates", "m": "times"}
        what = kinds.get(array.dtype.kind, "values that are not real numbers")
        raise ValueError(
            f"{where} holds {what} (dtype {array.dtype}); it must hold real numbers "
            f"(integers or floats)"
        )
    return array.astype(np.float64, copy=False)


def _validate(
    values: np.ndarray,
    where: str,
    columns: list[str] | None = None,
    lines: list[int] | None = None,
) -> Tensor:
    """Check the shape, the number of rows and finiteness; return a float32 tensor.

    For a CSV file, ``lines`` maps row indices to file line numbers and ``columns`` holds the
    header names, if any.
    """
    shape = tuple(values.shape)
    if values.ndim not in (2, 4):
        hint = {
            0: "a single number",
            1: "one value per row: store a single feature as x.reshape(-1, 1)",
            3: "images without a channel axis? store them as (N, C, H, W), e.g. x[:, None]",
        }.get(values.ndim, "too many axes")
        raise ValueError(
            f"{where} has shape {shape}; expected (N, D) rows or (N, C, H, W) images ({hint})"
        )
    if 0 in shape[1:]:
        raise ValueError(f"{where} has shape {shape}: its rows hold no values")
    if shape[0] < MIN_ROWS:
        raise ValueError(
            f"{where} has {_plural(shape[0], 'row')}; at least {MIN_ROWS} are needed "
            f"(one each for train, validation and test)"
        )
    flat = values.reshape(shape[0], -1)
    finite = np.isfinite(flat)
    if not finite.all():
        raise ValueError(
            f"{where}: NaN or infinite values in "
            + _offenders(~finite, shape, columns, lines)
            + "; remove or fill those rows"
        )
    with np.errstate(over="ignore"):  # overflow is reported below, with rows and columns
        x = torch.from_numpy(flat.astype(np.float32).reshape(shape))
    too_big = ~torch.isfinite(x.reshape(shape[0], -1))
    if bool(too_big.any()):
        raise ValueError(
            f"{where}: values beyond the float32 range (|x| > 3.4e38) in "
            + _offenders(too_big.numpy(), shape, columns, lines)
            + "; rescale the data"
        )
    return x


def _offenders(
    bad: np.ndarray, shape: tuple[int, ...], columns: list[str] | None, lines: list[int] | None
) -> str:
    """``k of N rows (lines 3, 8, ...), in 2 columns: ...`` for a ``(N, F)`` mask of bad values."""
    bad_rows = np.flatnonzero(bad.any(axis=1))
    bad_cols = np.flatnonzero(bad.any(axis=0))
    if lines is not None:
        shown = _listing([lines[i] for i in bad_rows[:_SHOWN]], len(bad_rows))
        where_rows = ("line " if len(bad_rows) == 1 else "lines ") + shown
        names = [_column_name(int(j), columns) for j in bad_cols[:_SHOWN]]
    else:
        shown = _listing(bad_rows[:_SHOWN].tolist(), len(bad_rows))
        where_rows = ("row index " if len(bad_rows) == 1 else "row indices ") + shown
        if len(shape) == 2:
            names = [str(int(j)) for j in bad_cols[:_SHOWN]]
        else:  # images: say which (channel, row, column) pixels
            pixels = [np.unravel_index(j, shape[1:]) for j in bad_cols[:_SHOWN]]
            names = [str(tuple(int(i) for i in p)) for p in pixels]
    if len(shape) == 2:
        label = "column" if len(bad_cols) == 1 else "columns"
    else:
        label = "pixel (c, h, w)" if len(bad_cols) == 1 else "pixels (c, h, w)"
    return (
        f"{len(bad_rows)} of {_plural(shape[0], 'row')} ({where_rows}), "
        f"in {len(bad_cols)} {label}: {_listing(names, len(bad_cols))}"
    )
