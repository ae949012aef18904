"""Data sources: where the images come from. Each returns raw arrays (N, C, H, W) or (N, D), and labels or None.

Named sets come through torchvision into a cache folder (downloaded when online, read offline); `.npz` files
hold `x` and optionally `y`; a folder in ImageFolder layout (see `folders`: what is read, ignored or refused);
`sample`, a small MNIST extract shipped with genaudit for offline use.

A `.npz` file is a zip archive of `.npy` arrays. Only `x` and `y` are read, and each is checked before anything
is allocated for it: a plain array (never unpickled: an object array is refused), whose .npy header agrees with
the size the archive records for it, held in the file (not past its end) and not expanding more than
NPZ_BOMB_RATIO times when it is larger than NPZ_BOMB_FLOOR (a decompression bomb: a small file that claims
gigabytes). Reading an array thus allocates at most max(NPZ_BOMB_FLOOR, NPZ_BOMB_RATIO x the file's size).
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genaudit.data import cache
from genaudit.data.folders import IMAGE_EXTENSIONS, load_folder
from genaudit.errors import GenauditError, did_you_mean, first_line
from genaudit.files import write_atomic

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "mnist_sample.npz"
# name -> (torchvision class, folder it creates under the root, how the split is chosen)
NAMED = {
    "mnist": ("MNIST", "MNIST", "train"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST", "train"),
    "kmnist": ("KMNIST", "KMNIST", "train"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "train"),
    "cifar100": ("CIFAR100", "cifar-100-python", "train"),
    "svhn": ("SVHN", "svhn", "split"),
}


def to_nchw(x: np.ndarray) -> np.ndarray:
    """Bring image arrays to (N, C, H, W): (N, H, W) gains a channel, channels-last is transposed."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim in (2, 4):
        return x
    raise GenauditError(f"Image arrays must have 2 to 4 dimensions (N,D / N,H,W / N,C,H,W / N,H,W,C); got {x.shape}.")


# A member of a .npz that expands more than NPZ_BOMB_RATIO times and beyond NPZ_BOMB_FLOOR bytes is refused as a
# decompression bomb: image arrays compress 1-10x (MNIST about 5x); only near-constant data compresses 100x.
NPZ_BOMB_RATIO = 100
NPZ_BOMB_FLOOR = 256 << 20
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """`x` and optional `y` of a .npz archive, each checked before it is read (see the module docstring)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            member = {key: next((n for n in (key, f"{key}.npy") if n in names), None) for key in ("x", "y")}
            if member["x"] is None:
                arrays = ", ".join(sorted({n.removesuffix(".npy") for n in names})) or "nothing"
                raise GenauditError(f"{path} has no array named 'x' (it has: {arrays}). Save the inputs as "
                                    "`np.savez(path, x=images, y=labels)`; `y` is optional.")
            x = _npy_member(path, archive, member["x"])
            y = None if member["y"] is None else _npy_member(path, archive, member["y"])
    except GenauditError:
        raise
    except Exception as exc:
        raise GenauditError(f"{path} could not be read as a .npz archive: {first_line(exc)}. Save it with "
                            "numpy.savez(path, x=..., y=...).") from None
    return from_arrays(x, y, str(path))


def _size(n: int) -> str:
    """A byte count for messages: '2.1 GiB', '228 bytes'."""
    for power, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 2**power:
            return f"{n / 2**power:.1f} {unit}"
    return f"{n} bytes"


def _npy_member(path: Path, archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One .npy member read with allow_pickle=False once its header and the archive's records agree on a sane
    size; a GenauditError naming the member otherwise, before anything is allocated for it."""
    info, on_disk = archive.getinfo(name), os.path.getsize(path)
    where = f"{path}: the array '{name.removesuffix('.npy')}'"
    if info.compress_size > on_disk:
        raise GenauditError(f"{where} is damaged: the archive records {_size(info.compress_size)} stored for it, "
                            f"more than the whole {_size(on_disk)} file. Save the arrays again with numpy.savez.")
    with archive.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version not in NPY_HEADERS:
                raise ValueError(f".npy format version {version[0]}.{version[1]}, which numpy.savez writes only for "
                                 "arrays with named fields")
            shape, _, dtype = NPY_HEADERS[version](fh)
        except ValueError as exc:
            reason = first_line(exc).split(". ")[0].rstrip(".")  # numpy goes on to advise trusting the file
            raise GenauditError(f"{where} is not a numpy array numpy.savez wrote ({reason}). Save the arrays with "
                                "numpy.savez(path, x=..., y=...).") from None
        declared = fh.tell() + math.prod(shape) * dtype.itemsize
    if dtype.hasobject:
        raise GenauditError(
            f"{where} holds Python objects (dtype {dtype}), stored pickled; genaudit never unpickles data, since "
            "unpickling can run arbitrary code. Save it as a numeric array, e.g. np.savez(path, "
            "x=np.asarray(images, dtype=np.uint8), y=np.asarray(labels, dtype=np.int64))."
        )
    if info.file_size != declared:
        raise GenauditError(
            f"{where} is damaged: its header declares shape {shape} of {dtype} ({_size(declared)} with the header), "
            f"but the archive records {_size(info.file_size)} for it. Save the arrays again with numpy.savez."
        )
    if info.file_size > NPZ_BOMB_FLOOR and info.file_size > NPZ_BOMB_RATIO * info.compress_size:
        raise GenauditError(
            f"{where} would expand from {_size(info.compress_size)} in the file to {_size(info.file_size)} "
            f"({info.file_size / max(info.compress_size, 1):.0f}x), so genaudit refuses it as a likely decompression "
            f"bomb (image data compresses far less than {NPZ_BOMB_RATIO}x). If the data is genuine, save it "
            "uncompressed, with numpy.savez instead of numpy.savez_compressed."
        )
    with archive.open(info) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def from_arrays(x: np.ndarray, y: np.ndarray | None, where: str = "the arrays") -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs x (N,H,W / N,H,W,C / N,C,H,W / N,D) and optional labels y as genaudit's raw arrays. Refused with
    a message that names the problem: inputs that are not numbers or hold NaN/inf, labels that are not class
    indices (fractions, negative, NaN, text, one-hot), x and y of different lengths."""
    try:
        x = np.asarray(x)
    except Exception as exc:  # ragged lists, objects numpy cannot stack
        raise GenauditError(f"{where}: x could not be read as one array ({exc}). Give x as one numeric array "
                            "(N,H,W / N,H,W,C / N,C,H,W / N,D).") from None
    if x.ndim == 0:
        raise GenauditError(f"{where}: x is a single value, not an array of samples. Give x as an array "
                            "(N,H,W / N,H,W,C / N,C,H,W / N,D).")
    if x.ndim >= 2 and 0 in x.shape[1:]:
        raise GenauditError(f"{where}: x has shape {x.shape}: each sample holds no values. Give x as "
                            "N,H,W / N,H,W,C / N,C,H,W / N,D with non-empty samples.")
    x = check_inputs(x, where)
    if y is not None:
        y = class_indices(y, where)
        if len(y) != len(x):
            raise GenauditError(f"{where}: x has {len(x)} samples but y has {len(y)}; they must match.")
    return to_nchw(x), y


def _first_rows(bad: np.ndarray) -> str:
    """'k sample(s) (the first at index i)' for a boolean mask over samples."""
    where = np.flatnonzero(bad)
    return f"{len(where)} sample{'s' if len(where) != 1 else ''} (the first at index {int(where[0])})"


def check_inputs(x: np.ndarray, where: str = "the arrays") -> np.ndarray:
    """x itself when it holds real numbers that are all finite (also as float32, what models are fed); else a
    GenauditError naming how many samples hold non-finite values and the first one."""
    if x.dtype == bool:
        x = x.astype(np.uint8)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        kind = "complex numbers" if np.issubdtype(x.dtype, np.complexfloating) else f"values of type {x.dtype}"
        raise GenauditError(f"{where}: x holds {kind}, not real-valued pixels or features. Save the inputs as a "
                            "numeric array (uint8 images or floats).")
    if np.issubdtype(x.dtype, np.floating) and len(x):
        bad = np.zeros(len(x), bool)
        for start in range(0, len(x), 4096):  # in blocks: bounded extra memory for large arrays
            with np.errstate(over="ignore"):  # float64 beyond float32's range: counted as non-finite
                block = np.asarray(x[start : start + 4096], np.float32).reshape(min(4096, len(x) - start), -1)
            bad[start : start + len(block)] = ~np.isfinite(block).all(axis=1)
        if bad.any():
            raise GenauditError(
                f"{where}: x holds non-finite values (NaN or inf, or numbers too large for float32) in "
                f"{_first_rows(bad)} of {len(x)}. The diagnostics cannot be computed on them. Drop or repair those "
                "samples before saving: keep the samples (and labels) where "
                "`np.isfinite(x).reshape(len(x), -1).all(axis=1)` is true, or replace the values with np.nan_to_num."
            )
    return x


LABEL_LIMIT = 2**31  # a class index larger than this is not one (and would not fit what bincount allocates)


def class_indices(y, where: str = "the arrays") -> np.ndarray:
    """Labels as int64 class indices; a GenauditError saying what was found when they are not whole numbers
    from 0 up (integral floats such as 3.0 are accepted; an (N, 1) column is taken as a vector)."""
    try:
        y = np.asarray(y)
    except Exception as exc:
        raise GenauditError(f"{where}: y could not be read as one array of labels ({exc}).") from None
    fix = "Save y as one integer class index per sample (0, 1, ..., classes-1), or leave y out to audit without labels."
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = (" It looks like one-hot or per-class scores: save y.argmax(axis=1)." if y.ndim == 2 else "")
        raise GenauditError(f"{where}: y has shape {y.shape}; labels must be one class index per sample.{hint} {fix}")
    if y.dtype == bool:
        return y.astype(np.int64)
    if y.dtype == object:
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise GenauditError(f"{where}: y holds values that are not numbers (e.g. '{y[0]}'). {fix}") from None
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        kind = "text" if y.dtype.kind in "US" else f"{y.dtype}"
        example = f" (e.g. '{y[0]}')" if len(y) else ""
        raise GenauditError(f"{where}: y holds {kind} values{example}, not class indices. Map the class names to "
                            f"indices 0, 1, ... first. {fix}")
    if len(y) == 0:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        finite = np.isfinite(y)
        if not finite.all():
            raise GenauditError(f"{where}: y holds NaN or inf labels in {_first_rows(~finite)}. Drop the unlabelled "
                                f"samples. {fix}")
        fractional = y != np.round(y)
        if fractional.any():
            i = int(np.flatnonzero(fractional)[0])
            raise GenauditError(f"{where}: y holds labels that are not whole numbers in {_first_rows(fractional)}: "
                                f"{y[i]:g}. Labels must be class indices, not scores or regression targets. {fix}")
    negative = y < 0
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise GenauditError(f"{where}: y holds negative labels in {_first_rows(negative)}: {y[i]:g}. Labels must be "
                            f"class indices from 0 up; if -1 marks unlabelled samples, drop them. {fix}")
    if y.max() >= LABEL_LIMIT:
        i = int(np.argmax(y))
        raise GenauditError(f"{where}: y holds a label of {int(y[i])} (index {i}), far beyond any class count. {fix}")
    return y.astype(np.int64)


def load_named(name: str, split: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A torchvision data set from the cache folder, verified against its manifest, fetched first when absent,
    interrupted or corrupt (and online). A lock in the cache root keeps concurrent runs from fetching at once.

    The first read decodes the set with torchvision and keeps the arrays (N, C, H, W) beside it, covered by the
    manifest; later reads memory-map them: no torch import, and only the samples drawn are ever read."""
    cls_name, folder_name, split_kind = NAMED[name]
    folder = data_dir / folder_name
    with cache.lock(data_dir / f".genaudit-{name}.lock"):
        decoded = _decoded(folder, split)
        if decoded is not None:
            return decoded
        from genaudit.models.torch_formats import require

        tvd = require("torchvision.datasets", f"Reading the named data set '{name}' the first time (torchvision "
                      "downloads and decodes it)", ", or pass the data as an .npz file (x, y) or an image folder")

        cls = getattr(tvd, cls_name)
        kwargs = {"split": split} if split_kind == "split" else {"train": split == "train"}
        root = data_dir / "svhn" if name == "svhn" else data_dir
        dataset = _fetch(name, split, lambda download: cls(str(root), download=download, **kwargs), folder)
        x = dataset.data
        x = to_nchw(x.numpy() if hasattr(x, "numpy") else np.asarray(x))
        y = getattr(dataset, "targets", None)
        if y is None:
            y = dataset.labels
        y = np.asarray(y.numpy() if hasattr(y, "numpy") else y, dtype=np.int64)
        _keep_decoded(folder, split, x, y)
    return x, y


DECODED = "genaudit-arrays"  # sub-folder of a set's folder: the decoded arrays of each split, as .npy


def _decoded(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The split's decoded arrays, memory-mapped, when the manifest lists them and every file matches it."""
    record = cache.read_manifest(folder)
    names = [f"{DECODED}/{split}-{part}.npy" for part in ("x", "y")]
    if record is None or any(n not in record["files"] for n in names) or cache.verify(folder, record):
        return None
    return np.load(folder / names[0], mmap_mode="r"), np.load(folder / names[1])


def _keep_decoded(folder: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """Save the decoded arrays (each written whole, then renamed) and record them and the set's files in the
    manifest; skipped quietly where the cache is read-only (still readable, just not verified)."""
    target = folder / DECODED
    try:
        target.mkdir(exist_ok=True)
        for part, array in (("x", x), ("y", y)):
            write_atomic(target / f"{split}-{part}.npy", lambda fh, a=array: np.save(fh, np.ascontiguousarray(a)))
        cache.write_manifest(folder)
    except (OSError, GenauditError):
        pass


def _fetch(name: str, split: str, make: Callable[[bool], Any], folder: Path) -> Any:
    """The torchvision data set read from `folder` (svhn: its files sit right in it); `make(download)` builds it.

    Files that differ from the folder's manifest, or that torchvision cannot read when no manifest vouches for
    them (an interrupted or damaged download), are deleted and fetched again when online. The caller records
    the files in the manifest once it has added its own (see _keep_decoded).
    """
    offline = bool(os.environ.get("GENAUDIT_OFFLINE"))
    record = cache.read_manifest(folder)
    bad = cache.verify(folder, record)
    why = "These files no longer match the manifest genaudit wrote when it first read them"
    dataset = None
    if not bad:
        try:
            dataset = make(False)
        except Exception as exc:  # absent, or present but unreadable: torchvision raises various errors
            present = cache.data_files(folder) if folder.is_dir() else []
            if present and record is None:
                bad = present
                why = f"torchvision could not read these files ({' '.join(str(exc).split()) or type(exc).__name__})"
    if dataset is None:
        if not offline:
            if bad:
                cache.clear(folder)
            try:
                with cache.fetching(folder):  # a failed download leaves no empty folders behind
                    dataset = make(True)
            except Exception:
                dataset = None
        if dataset is None:
            raise _corrupt(name, split, folder, bad, why, offline) if bad else _absent(name, split, folder)
    return dataset


def _absent(name: str, split: str, folder: Path) -> GenauditError:
    root, cls_name = folder.parent, NAMED[name][0]
    return GenauditError(
        f"Data set '{name}' ({split} split) is not in the cache at {folder} and could not be "
        f"downloaded (offline?). Connect to the network and run again, or copy torchvision's files for "
        f"{cls_name} into {root} (torchvision layout: {folder}/...), or point --data-dir "
        "(or $GENAUDIT_DATA_DIR) at a folder that has them."
    )


def _corrupt(name: str, split: str, folder: Path, bad: list[str], why: str, offline: bool) -> GenauditError:
    shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
    state = ("genaudit is offline ($GENAUDIT_OFFLINE is set), so it left them as they are" if offline else
             "genaudit deleted them but could not download fresh copies (offline?)")
    return GenauditError(
        f"Data set '{name}' ({split} split) in the cache at {folder} is incomplete or damaged: {shown}. {why}, "
        f"which usually means an interrupted download or a changed file; {state}. Connect to the network and run "
        f"again (genaudit then re-downloads it), or replace the files in {folder} with intact torchvision files "
        f"for {NAMED[name][0]} (and delete {cache.MANIFEST} there, if any), or point --data-dir "
        "(or $GENAUDIT_DATA_DIR) at a folder that has them."
    )


def load_source(spec: Any, split: str, data_dir: Path,
                size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Resolve a data spec: 'sample', a named set, a .npz file, an image folder (whose images of other sizes
    are resized to `size` as they are decoded), or arrays from Python: `(x, y)` or `{"x": x, "y": y}`."""
    if isinstance(spec, dict):
        if "x" not in spec:
            raise GenauditError(f"Data given as a dict needs an 'x' entry (it has: {', '.join(map(str, spec))}).")
        return from_arrays(spec["x"], spec.get("y"))
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise GenauditError(f"Data given as a tuple must be (x, y) or (x, None); it has {len(spec)} items.")
        return from_arrays(*spec)
    spec = str(spec)
    if spec == "sample":
        return load_npz(SAMPLE)
    if spec.lower() in NAMED:
        return load_named(spec.lower(), split, data_dir)
    path = Path(spec)
    if path.suffix == ".npz" and path.is_file():
        return load_npz(path)
    if path.is_dir():
        return load_folder(path, size)
    raise GenauditError(
        f"Unknown data '{spec}':{did_you_mean(spec.lower(), ['sample', *NAMED])} Not a named data set "
        f"({', '.join(NAMED)}), not an existing .npz file, not a folder of images ({'/'.join(IMAGE_EXTENSIONS)}). "
        "Use --data sample for the shipped offline sample."
    )
