"""One reader per dataset source (the recipe's ``dataset.source``), each returning a ``RawData``.

Every problem is a ``DatasetError`` naming the file (or folder) and what is wrong with it. Files are read without
unpickling anything, and never from outside the data root (``..`` or a symlink that leaves it).
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from compression_pipeline.errors import ArtifactError, DatasetError, PipelineError
from compression_pipeline.settings import resolve_inside

BUILTIN_ROWS = {"sklearn_digits": 1797}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNEL_COUNTS = (1, 3, 4)  # grayscale, RGB, RGBA: how a channel axis is told from an image side
LAYOUT_FORMS = {"NF": "(n, features)", "NHW": "(n, h, w)", "NHWC": "(n, h, w, c)", "NCHW": "(n, c, h, w)"}
LAYOUT_NDIM = {"NF": 2, "NHW": 3, "NHWC": 4, "NCHW": 4}


@dataclass(frozen=True)
class RawData:
    """A dataset as read: samples in the canonical layout ((n, C, H, W) images, (n, F) feature vectors) with the
    source's own values and dtype, int64 labels, the name of each label 0..n-1, and the source's own test split
    when it has one (kept as the test split)."""

    X: np.ndarray
    y: np.ndarray
    source: str  # the file or folder read: every error and gate names it
    class_names: tuple[str, ...] = ()
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return "image" if self.X.ndim == 4 else "features"

    @property
    def rows(self) -> int:
        return len(self.X) + (0 if self.X_test is None else len(self.X_test))

    def labels(self) -> np.ndarray:
        return self.y if self.y_test is None else np.concatenate([self.y, self.y_test])

    def arrays(self) -> dict[str, np.ndarray]:
        """What the raw_dataset artifact stores (plain arrays: read back without unpickling)."""
        out = {"X": self.X, "y": self.y, "class_names": np.array(self.class_names, dtype=str)}
        if self.X_test is not None:
            out |= {"X_test": self.X_test, "y_test": self.y_test}
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str) -> RawData:
        if "class_names" not in arrays:
            raise ArtifactError(f"the raw dataset of {source} was stored by an older version (no class names): "
                                f"materialize raw_dataset again")
        return cls(arrays["X"], arrays["y"], source, tuple(str(c) for c in arrays["class_names"]),
                   arrays.get("X_test"), arrays.get("y_test"))


def load_raw(dataset, data_root: str | Path) -> RawData:
    """Read the recipe's dataset (a ``recipe.Dataset``) from its source under ``data_root``."""
    raw = READERS[dataset.source](dataset, Path(data_root))
    raw = replace(raw, class_names=raw.class_names or _class_names(dataset, raw))
    if dataset.value_range is not None and raw.kind == "image":
        raise DatasetError(raw.source, f"value_range {list(dataset.value_range)} applies to feature vectors, but "
                                       f"the data are images of shape {raw.X.shape[1:]} (checked against [0, 1] "
                                       f"after scaling by 1/value_max): remove value_range or declare 'layout: NF'")
    norm = dataset.normalize
    if not isinstance(norm, str) and len(norm.mean) != raw.X.shape[1]:
        what = "channel" if raw.kind == "image" else "feature"
        raise DatasetError(raw.source, f"normalize.mean and normalize.std have {len(norm.mean)} values, but the data "
                                       f"have {raw.X.shape[1]} {what}s (samples of shape {raw.X.shape[1:]}): give "
                                       f"one value per {what}, or 'normalize: train'")
    return raw


def source_path(dataset, data_root: str | Path) -> Path:
    """The file or folder a file-based dataset is read from: inside the data root, and present."""
    if not getattr(dataset, "path", None):
        raise DatasetError(dataset.source, "a built-in dataset has no source file")
    return file_under(data_root, dataset.path, "dataset")


def file_under(data_root: str | Path, rel_path: str, what: str) -> Path:
    """A file or folder the recipe names (its dataset, a baseline's weights or ONNX file): inside the data root, and
    present; otherwise a DatasetError naming the path and what the recipe meant it for."""
    try:
        path = resolve_inside(Path(data_root), rel_path)
    except PipelineError as e:  # '..' or a symlink that leaves the data root
        raise DatasetError(str(Path(data_root) / rel_path), str(e)) from None
    if not path.exists():
        raise DatasetError(str(path), f"file not found (the recipe's {what})")
    return path


def _inside(root: Path, path: Path) -> Path:
    """``path`` (inside a dataset folder) resolved, refused if a symlink takes it out of the data root."""
    try:
        return resolve_inside(root, path)
    except PipelineError as e:
        raise DatasetError(str(path), str(e)) from None


def _class_names(dataset, raw: RawData) -> tuple[str, ...]:
    """The declared class names, or the label values when they are 0..n-1 (n >= 2)."""
    if dataset.classes is not None:
        return tuple(str(c) for c in dataset.classes)
    labels = np.unique(raw.labels())
    shown = labels.tolist() if len(labels) <= 12 else f"{labels[:5].tolist()} ... {labels[-5:].tolist()}"
    if not np.array_equal(labels, np.arange(len(labels))):
        raise DatasetError(raw.source, f"the labels are {shown}, not 0..n-1, and no 'classes' are declared: declare "
                                       f"'classes' in the recipe's dataset (a name or index per label 0..n-1) and "
                                       f"the labels gate reports the rows whose label is not one of them")
    if len(labels) < 2:
        raise DatasetError(raw.source, f"every label is {shown[0]}: a classifier needs at least two classes")
    return tuple(str(i) for i in labels)


# --- sklearn digits -------------------------------------------------------------------------------------------------
def _digits(dataset, data_root: Path) -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    # Values are the integers 0..16: uint8 holds them exactly (value_max 16 scales them as before).
    return RawData(d.images.astype(np.uint8)[:, None], d.target.astype(np.int64), "sklearn.datasets.load_digits")


# --- npz ------------------------------------------------------------------------------------------------------------
def _npz(dataset, data_root: Path) -> RawData:
    path = source_path(dataset, data_root)
    name, xname, yname = str(path), dataset.arrays.x, dataset.arrays.y
    if not path.is_file():
        raise DatasetError(name, "not a file (an .npz dataset is one file)")
    # allow_pickle=False: an object array is a pickle, and unpickling a user's file runs the user's code.
    # Arrays are read inside the try: a corrupt or truncated member fails only when it is decompressed.
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DatasetError(name, f"not an .npz archive (a bare .npy array?); an .npz dataset holds arrays "
                                     f"{xname!r} and {yname!r}")
        with loaded as f:
            missing = [a for a in (xname, yname) if a not in f.files]
            if missing:
                raise DatasetError(name, f"missing arrays {missing}; the file holds {sorted(f.files)}: name the ones "
                                         f"to read in the recipe's dataset, e.g. 'arrays: {{x: images, y: labels}}'")
            X, y = f[xname], f[yname]
    except DatasetError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise DatasetError(name, f"not a readable .npz file ({type(e).__name__}: {e})") from None
    X = _canonical(X, dataset.layout, dataset.image_shape, name, xname)
    if y.ndim == 2 and y.shape[1] == 1:  # (n, 1) label columns are common (Keras' CIFAR loaders write them)
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(X):
        raise DatasetError(name, f"{yname} has shape {y.shape}; expected ({len(X)},), one label per sample of {xname}")
    if X.dtype.kind not in "iuf":
        raise DatasetError(name, f"{xname} has dtype {X.dtype}; expected integer or floating-point values")
    if y.dtype.kind not in "iu":
        raise DatasetError(name, f"{yname} has dtype {y.dtype}; expected integer class labels")
    if len(X) == 0:
        raise DatasetError(name, "the dataset has no rows")
    if min(X.shape[1:]) == 0:
        raise DatasetError(name, f"{xname} has shape {X.shape}: its samples hold no values")
    return RawData(X, y.astype(np.int64), name)


def _canonical(X: np.ndarray, layout: str | None, image_shape, where: str, xname: str) -> np.ndarray:
    """``X`` as (n, C, H, W) images or (n, F) vectors, from its declared or inferred layout."""
    if X.ndim not in (2, 3, 4):
        raise DatasetError(where, f"{xname} has shape {X.shape}; expected {', '.join(LAYOUT_FORMS.values())}")
    if layout is None and image_shape and X.ndim == 2:  # flat 1-channel images of a declared shape
        h, w = image_shape
        if X.shape[1] != h * w:
            raise DatasetError(where, f"{xname} has shape {X.shape}; expected (n, {h * w}) or (n, {h}, {w}) for "
                                      f"image_shape {h}x{w}")
        return X.reshape(len(X), 1, h, w)
    layout = layout or _infer_layout(X, where, xname)
    if X.ndim != LAYOUT_NDIM[layout]:
        raise DatasetError(where, f"layout {layout} reads {LAYOUT_FORMS[layout]} arrays, but {xname} has shape "
                                  f"{X.shape}: declare the layout it has ({', '.join(LAYOUT_FORMS.values())})")
    if X.ndim == 4:
        looks = _looks(X.shape)
        if looks not in (None, layout):
            c = X.shape[3] if layout == "NHWC" else X.shape[1]
            raise DatasetError(where, f"layout {layout} does not match {xname} of shape {X.shape}: it would read "
                                      f"{c} channels, while the array looks {looks} {LAYOUT_FORMS[looks]}; declare "
                                      f"'layout: {looks}'")
    if layout == "NHW":
        X = X[:, None]
    elif layout == "NHWC":
        X = X.transpose(0, 3, 1, 2)
    if image_shape and X.ndim == 4 and X.shape[2:] != tuple(image_shape):
        raise DatasetError(where, f"{xname} holds {X.shape[2]}x{X.shape[3]} images, but image_shape declares "
                                  f"{image_shape[0]}x{image_shape[1]}")
    return np.ascontiguousarray(X)


def _looks(shape) -> str | None:
    last, second = shape[3] in CHANNEL_COUNTS, shape[1] in CHANNEL_COUNTS
    return "NHWC" if last and not second else "NCHW" if second and not last else None


def _infer_layout(X: np.ndarray, where: str, xname: str) -> str:
    if X.ndim < 4:
        return "NF" if X.ndim == 2 else "NHW"
    looks = _looks(X.shape)
    if looks is None:
        why = ("dimensions 1 and 3 both could be a channel count" if X.shape[1] in CHANNEL_COUNTS else
               f"neither dimension 1 nor 3 is a channel count {CHANNEL_COUNTS}")
        raise DatasetError(where, f"cannot tell the layout of {xname} with shape {X.shape}: {why}; declare it in the "
                                  f"recipe's dataset: 'layout: NHWC' for (n, h, w, c) or 'layout: NCHW' for "
                                  f"(n, c, h, w)")
    return looks


# --- image folder ---------------------------------------------------------------------------------------------------
def _image_folder(dataset, data_root: Path) -> RawData:
    folder = source_path(dataset, data_root)
    if not folder.is_dir():
        raise DatasetError(str(folder), "not a folder (an image_folder dataset is a folder with one subfolder of "
                                        "PNG/JPEG images per class)")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))  # .DS_Store, .git, ...
    stray = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        raise DatasetError(str(stray[0]), "an image directly in the dataset folder belongs to no class: put each "
                                          "image in the subfolder of its class")
    names = _folder_classes(dataset, folder, [p.name for p in entries if p.is_dir()])
    files = []
    for label, name in enumerate(names):
        members = sorted(p for p in (folder / name).iterdir() if not p.name.startswith("."))
        if not members:
            raise DatasetError(str(folder / name), "empty class folder: every class needs at least one image")
        for f in members:
            if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES:
                raise DatasetError(str(f), f"not a PNG or JPEG file: a class folder holds only image files "
                                           f"({', '.join(IMAGE_SUFFIXES)})")
            files.append((_inside(data_root, f), label))
    h, w = dataset.image_size
    gray = dataset.color == "grayscale"
    X = np.empty((len(files), h, w) if gray else (len(files), h, w, 3), np.uint8)
    for i, (f, _) in enumerate(files):
        X[i] = _read_image(f, "L" if gray else "RGB", (w, h))
    X = X[:, None] if gray else np.ascontiguousarray(X.transpose(0, 3, 1, 2))
    return RawData(X, np.array([label for _, label in files], np.int64), str(folder), tuple(names))


def _folder_classes(dataset, folder: Path, found: list[str]) -> list[str]:
    """The class folders, in label order: the declared classes' order, else sorted by name."""
    names = found if dataset.classes is None else [str(c) for c in dataset.classes]
    if set(names) != set(found):
        missing, extra = sorted(set(names) - set(found)), sorted(set(found) - set(names))
        raise DatasetError(str(folder), f"the class folders {found} do not match the declared classes {names}"
                                        + (f"; no folder for {missing}" if missing else "")
                                        + (f"; undeclared folders {extra}" if extra else ""))
    if len(names) < 2:
        raise DatasetError(str(folder), f"{len(names)} class folder{'' if len(names) == 1 else 's'} {found}: a "
                                        f"classifier needs at least two (one subfolder of images per class)")
    return names


def _read_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format not in ("PNG", "JPEG"):
                raise DatasetError(str(path), f"a {im.format} image; image folders hold PNG or JPEG files")
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                raise DatasetError(str(path), f"a {im.mode} image (16-bit or floating point): 8-bit grayscale, RGB "
                                              f"or palette images are read")
            im = im.convert(mode)
            if im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except DatasetError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(str(path), f"not a readable image ({type(e).__name__}: {e})") from None


# --- IDX (MNIST's format) -------------------------------------------------------------------------------------------
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}


def _idx(dataset, data_root: Path) -> RawData:
    folder = source_path(dataset, data_root)
    if not folder.is_dir():
        raise DatasetError(str(folder), "not a folder (an idx dataset is a folder holding the train and test "
                                        "images and labels as IDX files, optionally gzipped)")
    f = dataset.files
    parts = []
    for images, labels in ((f.train_images, f.train_labels), (f.test_images, f.test_labels)):
        X, y = _read_idx(_inside(data_root, folder / images), 3), _read_idx(_inside(data_root, folder / labels), 1)
        if len(X) != len(y):
            raise DatasetError(str(folder / labels), f"{len(y)} labels for the {len(X)} images of {images}")
        if y.dtype.kind not in "iu":
            raise DatasetError(str(folder / labels), f"labels of type {y.dtype}; expected integer class labels")
        if len(X) == 0:
            raise DatasetError(str(folder / images), "no images")
        parts.append((X[:, None], y.astype(np.int64)))
    (X, y), (X_test, y_test) = parts
    return RawData(X, y, str(folder), (), X_test, y_test)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (two zero bytes, a type code, the number of dimensions, each dimension as a big-endian uint32,
    then the values, big-endian), gzipped or not."""
    name = str(path)
    if not path.is_file():
        raise DatasetError(name, "file not found (name the IDX files in the recipe's dataset: 'files: "
                                 "{train_images: ..., train_labels: ..., test_images: ..., test_labels: ...}')")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(name, f"not a readable gzip file ({type(e).__name__}: {e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise DatasetError(name, "not an IDX file: it does not start with the IDX magic number (0, 0, a type code "
                                 f"in {sorted(IDX_TYPES)}, the number of dimensions)")
    what = "images (n, h, w)" if ndim == 3 else "labels (n,)"
    if raw[3] != ndim:
        raise DatasetError(name, f"{raw[3]} dimensions; expected {ndim}: {what}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(name, f"truncated: {len(raw)} bytes, shorter than the {header}-byte header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_TYPES[raw[2]]).newbyteorder(">")
    need, have = math.prod(dims) * dtype.itemsize, len(raw) - header
    if have != need:
        raise DatasetError(name, f"{'truncated' if have < need else 'extra bytes'}: the header says {what} of shape "
                                 f"{dims} ({need} bytes of values), the file holds {have}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


READERS = {"sklearn_digits": _digits, "npz": _npz, "image_folder": _image_folder, "idx": _idx}
