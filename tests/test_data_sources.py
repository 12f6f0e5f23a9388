"""Every dataset source on small data written here (image folders, IDX files, npz in each layout, feature vectors),
the InputSpec each gives, feed() in every layout, normalization, max_rows, the data gates on images and vectors,
and every bad declaration failing at its earliest stage with the file and the field named."""

import gzip
import pickle
import struct
import time

import numpy as np
import pytest
from PIL import Image

from compression_pipeline import data, quality, stages
from compression_pipeline.artifacts import ArtifactStore
from compression_pipeline.errors import DatasetError, RecipeError
from compression_pipeline.recipe import Dataset, parse_recipe
from compression_pipeline.types import InputSpec

from conftest import TINY

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _ds(**fields) -> Dataset:
    return Dataset.model_validate(fields)


# --- image folders ----------------------------------------------------------------------------------------------
def _image(path, color, size=(12, 10), mode="RGB", fmt=None):
    Image.new(mode, size, color).save(path, format=fmt)


@pytest.fixture
def image_root(tmp_path):
    """data/pets: bird (pure red), cat (green), dog (blue), 4 images each, in PNG and JPEG, RGB and grayscale, of
    several sizes."""
    root = tmp_path / "data"
    for name, color in (("dog", BLUE), ("cat", GREEN), ("bird", RED)):
        folder = root / "pets" / name
        folder.mkdir(parents=True)
        _image(folder / "a.png", color)
        _image(folder / "b.PNG", color, size=(8, 8))
        _image(folder / "c.jpg", color, size=(16, 16))
        _image(folder / "d.png", color[0] // 2 + color[1] // 3, mode="L")  # a grayscale file in an RGB dataset
    (root / "pets" / ".DS_Store").write_bytes(b"\0junk")  # hidden files are not classes
    return root


def test_image_folder_rgb_and_grayscale(image_root):
    raw = data.load_raw(_ds(source="image_folder", path="pets", image_size=[8, 8]), image_root)
    assert raw.X.shape == (12, 3, 8, 8) and raw.X.dtype == np.uint8 and raw.kind == "image"
    assert raw.class_names == ("bird", "cat", "dog") and raw.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert raw.source == str(image_root / "pets")
    # PNGs are exact after the resize; the bird (red) is red in channel 0 only
    assert (raw.X[0, 0] == 255).all() and (raw.X[0, 1:] == 0).all() and (raw.X[1, 0] == 255).all()
    assert abs(int(raw.X[2, 0].mean()) - 255) < 8  # the JPEG: lossy, but red
    gray = data.load_raw(_ds(source="image_folder", path="pets", image_size=[6, 4], color="grayscale"), image_root)
    assert gray.X.shape == (12, 1, 6, 4)
    assert (gray.X[0] == round(0.299 * 255)).all()  # Pillow's L conversion of pure red
    parts, spec = data.preprocess(raw, _ds(source="image_folder", path="pets", image_size=[8, 8],
                                           split={"val": 0.25, "test": 0.25}))
    assert spec == InputSpec(kind="image", shape=(3, 8, 8), scale=1 / 255, class_names=("bird", "cat", "dog"))
    assert parts["X_train"].max() == 1.0 and parts["X_train"].dtype == np.float32


def test_image_folder_declared_classes_set_the_label_order(image_root):
    ds = _ds(source="image_folder", path="pets", image_size=[8, 8], classes=["dog", "cat", "bird"])
    raw = data.load_raw(ds, image_root)
    assert raw.class_names == ("dog", "cat", "bird") and (raw.X[raw.y == 0][0, 2] == 255).all()  # dog is blue
    with pytest.raises(DatasetError, match=r"do not match the declared classes .*no folder for \['cow'\].*"
                                           r"undeclared folders \['bird'\]"):
        data.load_raw(_ds(source="image_folder", path="pets", image_size=[8, 8], classes=["dog", "cat", "cow"]),
                      image_root)


def _truncated_png(path):
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("spoil, where, words", [
    (lambda p: [f.unlink() for f in (p / "cat").iterdir()], "pets/cat", ["empty class folder"]),
    (lambda p: (p / "cat" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really"), "pets/cat/a.png",
     ["not a readable image"]),
    (lambda p: _truncated_png(p / "cat" / "a.png"), "pets/cat/a.png", ["not a readable image"]),
    (lambda p: (p / "cat" / "notes.txt").write_text("hi"), "pets/cat/notes.txt", ["not a PNG or JPEG file"]),
    (lambda p: Image.new("RGB", (4, 4)).save(p / "cat" / "e.png", format="BMP"), "pets/cat/e.png",
     ["a BMP image"]),
    (lambda p: _image(p / "stray.png", RED), "pets/stray.png", ["belongs to no class"]),
    (lambda p: [f.rename(p / "bird" / f"{f.parent.name}_{f.name}") for c in ("cat", "dog")
                for f in list((p / c).iterdir())] and [(p / c).rmdir() for c in ("cat", "dog")],
     "pets", ["1 class folder ['bird']", "at least two"]),
])
def test_bad_image_folders_name_the_file(image_root, spoil, where, words):
    spoil(image_root / "pets")
    with pytest.raises(DatasetError) as exc:
        data.load_raw(_ds(source="image_folder", path="pets", image_size=[8, 8]), image_root)
    assert exc.value.source == str(image_root / where), str(exc.value)
    for w in words:
        assert w in str(exc.value)


def test_image_folder_symlink_out_of_the_data_root_is_refused(image_root, tmp_path):
    _image(tmp_path / "secret.png", RED)
    (image_root / "pets" / "cat" / "x.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(DatasetError, match="outside the allowed root") as exc:
        data.load_raw(_ds(source="image_folder", path="pets", image_size=[8, 8]), image_root)
    assert exc.value.source == str(image_root / "pets" / "cat" / "x.png")


# --- IDX --------------------------------------------------------------------------------------------------------
def _idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def _write_idx(folder, n_train=60, n_test=20, gz=True, names=None):
    rng = np.random.default_rng(0)
    names = names or {k: f"{k.replace('_', '-')}-idx{3 if 'images' in k else 1}-ubyte" + (".gz" if gz else "")
                      for k in ("train_images", "train_labels", "t10k_images", "t10k_labels")}
    arrays = {"train_images": rng.integers(0, 256, (n_train, 7, 5)), "train_labels": np.arange(n_train) % 3,
              "t10k_images": rng.integers(0, 256, (n_test, 7, 5)), "t10k_labels": np.arange(n_test) % 3}
    folder.mkdir(parents=True, exist_ok=True)
    for key, a in arrays.items():
        b = _idx_bytes(a)
        (folder / names[key]).write_bytes(gzip.compress(b) if names[key].endswith(".gz") else b)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_keeps_its_test_split_and_takes_val_out_of_train(tmp_path, gz):
    arrays = _write_idx(tmp_path / "fm", gz=gz)
    plain = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    files = {} if gz else {"files": plain}
    ds = _ds(source="idx", path="fm", split={"val": 0.25}, **files)
    raw = data.load_raw(ds, tmp_path)
    assert raw.X.shape == (60, 1, 7, 5) and raw.X_test.shape == (20, 1, 7, 5) and raw.class_names == ("0", "1", "2")
    assert np.array_equal(raw.X[:, 0], arrays["train_images"]) and np.array_equal(raw.y_test, arrays["t10k_labels"])
    parts, spec = data.preprocess(raw, ds)
    assert [len(parts[f"y_{s}"]) for s in data.SPLITS] == [45, 15, 20]
    assert np.array_equal(parts["X_test"], (arrays["t10k_images"][:, None] / np.float32(255)).astype(np.float32))
    assert np.bincount(parts["y_val"]).tolist() == [5, 5, 5]  # stratified
    assert spec.shape == (1, 7, 5) and spec.scale == 1 / 255
    # max_rows: the same share of train and test rows, stratified
    small, _ = data.preprocess(raw, _ds(source="idx", path="fm", split={"val": 0.25}, max_rows=40, **files))
    assert [len(small[f"y_{s}"]) for s in data.SPLITS] == [22, 8, 10]


@pytest.mark.parametrize("spoil, words", [
    (lambda b: b[:-7], ["truncated", "(60, 7, 5)", "2100 bytes of values", "2093"]),
    (lambda b: b + b"\0", ["extra bytes"]),
    (lambda b: b"\x08\x00" + b[2:], ["not an IDX file"]),
    (lambda b: b[:6], ["truncated", "16-byte header"]),
])
def test_bad_idx_files_name_the_file(tmp_path, spoil, words):
    _write_idx(tmp_path / "fm", gz=False, names={"train_images": "ti", "train_labels": "tl", "t10k_images": "si",
                                                 "t10k_labels": "sl"})
    (tmp_path / "fm" / "ti").write_bytes(spoil((tmp_path / "fm" / "ti").read_bytes()))
    ds = _ds(source="idx", path="fm", files={"train_images": "ti", "train_labels": "tl", "test_images": "si",
                                             "test_labels": "sl"})
    with pytest.raises(DatasetError) as exc:
        data.load_raw(ds, tmp_path)
    assert exc.value.source == str(tmp_path / "fm" / "ti")
    for w in words:
        assert w in str(exc.value), str(exc.value)


def test_truncated_gzip_and_mismatched_idx_files(tmp_path):
    _write_idx(tmp_path / "fm")
    labels = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    whole = labels.read_bytes()
    labels.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match="not a readable gzip file") as exc:
        data.load_raw(_ds(source="idx", path="fm"), tmp_path)
    assert exc.value.source == str(labels)
    labels.write_bytes(gzip.compress(_idx_bytes(np.zeros(59, np.uint8))))
    with pytest.raises(DatasetError, match="59 labels for the 60 images of train-images-idx3-ubyte.gz"):
        data.load_raw(_ds(source="idx", path="fm"), tmp_path)
    labels.write_bytes(whole)
    (tmp_path / "fm" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="file not found .*files: "):
        data.load_raw(_ds(source="idx", path="fm"), tmp_path)


# --- npz --------------------------------------------------------------------------------------------------------
def _npz(tmp_path, X, y=None, name="d.npz", **arrays):
    """X and y (labels 0, 1, 2, ...), or the arrays given."""
    np.savez(tmp_path / name, **(arrays or {"X": X, "y": np.arange(len(X)) % 3 if y is None else y}))
    return tmp_path


IMAGES = np.random.default_rng(1).integers(0, 256, (30, 6, 5, 3)).astype(np.uint8)  # NHWC, 3 channels


@pytest.mark.parametrize("X, layout", [
    (IMAGES, None), (IMAGES, "NHWC"), (IMAGES.transpose(0, 3, 1, 2), None), (IMAGES.transpose(0, 3, 1, 2), "NCHW"),
])
def test_npz_image_layouts_declared_or_inferred(tmp_path, X, layout):
    raw = data.load_raw(_ds(source="npz", path="d.npz", layout=layout), _npz(tmp_path, X))
    assert raw.X.shape == (30, 3, 6, 5) and raw.X.flags.c_contiguous
    assert np.array_equal(raw.X, IMAGES.transpose(0, 3, 1, 2))


def test_npz_one_channel_vectors_and_custom_array_names(tmp_path):
    gray = IMAGES[..., 0]
    assert data.load_raw(_ds(source="npz", path="d.npz"), _npz(tmp_path, gray)).X.shape == (30, 1, 6, 5)  # NHW
    raw = data.load_raw(_ds(source="npz", path="d.npz", image_shape=[6, 5]), _npz(tmp_path, gray.reshape(30, 30)))
    assert np.array_equal(raw.X[:, 0], gray)  # flat rows of declared 6x5 images
    vectors = np.random.default_rng(0).normal(size=(30, 4))
    _npz(tmp_path, None, name="v.npz", features=vectors, target=np.arange(30) % 2)
    ds = _ds(source="npz", path="v.npz", arrays={"x": "features", "y": "target"}, classes=["no", "yes"])
    raw = data.load_raw(ds, tmp_path)
    assert raw.kind == "features" and raw.X.shape == (30, 4) and raw.class_names == ("no", "yes")
    parts, spec = data.preprocess(raw, ds)
    assert spec == InputSpec(kind="features", shape=(4,), scale=1.0, class_names=("no", "yes"))
    assert np.array_equal(parts["X_test"], parts["X_test"].astype(np.float64).astype(np.float32))


@pytest.mark.parametrize("X, fields, words", [
    (IMAGES, {"layout": "NCHW"}, ["layout NCHW does not match X of shape (30, 6, 5, 3)", "looks NHWC",
                                  "'layout: NHWC'"]),
    (IMAGES, {"layout": "NHW"}, ["layout NHW reads (n, h, w) arrays, but X has shape (30, 6, 5, 3)"]),
    (IMAGES[:, :3], {}, ["cannot tell the layout of X with shape (30, 3, 5, 3)", "both",
                               "'layout: NHWC'"]),
    (np.zeros((30, 6, 5, 7)), {}, ["cannot tell the layout", "neither dimension 1 nor 3"]),
    (IMAGES, {"image_shape": [5, 6]}, ["X holds 6x5 images, but image_shape declares 5x6"]),
    (IMAGES[..., 0], {"value_range": [0, 1]}, ["value_range [0.0, 1.0] applies to feature vectors"]),
    (IMAGES, {"normalize": {"mean": [0.5], "std": [0.2]}}, ["normalize.mean and normalize.std have 1 values",
                                                             "3 channels"]),
    (IMAGES, {"arrays": {"x": "images", "y": "labels"}}, ["missing arrays ['images', 'labels']",
                                                          "the file holds ['X', 'y']", "arrays: {x:"]),
])
def test_bad_npz_declarations_name_file_and_field(tmp_path, X, fields, words):
    _npz(tmp_path, X)
    with pytest.raises(DatasetError) as exc:
        data.load_raw(_ds(source="npz", path="d.npz", **fields), tmp_path)
    assert exc.value.source == str(tmp_path / "d.npz")
    for w in words:
        assert w in str(exc.value), str(exc.value)


def test_a_pickle_in_place_of_an_npz_is_refused(tmp_path):
    (tmp_path / "d.npz").write_bytes(pickle.dumps({"X": np.zeros((3, 4)), "y": np.zeros(3)}))
    with pytest.raises(DatasetError, match="not a readable .npz file .*pickled"):
        data.load_raw(_ds(source="npz", path="d.npz"), tmp_path)


def test_classes_inferred_declared_or_refused(tmp_path):
    _npz(tmp_path, IMAGES, y=np.arange(30) % 3 + 1)
    with pytest.raises(DatasetError, match=r"the labels are \[1, 2, 3\], not 0..n-1.*declare 'classes'"):
        data.load_raw(_ds(source="npz", path="d.npz"), tmp_path)
    raw = data.load_raw(_ds(source="npz", path="d.npz", classes=["a", "b", "c", "d"]), tmp_path)
    assert raw.class_names == ("a", "b", "c", "d")  # label 0 unused: fine; a label 4 would fail the labels gate
    _npz(tmp_path, IMAGES, y=np.zeros(30, np.int64))
    with pytest.raises(DatasetError, match="every label is 0: a classifier needs at least two classes"):
        data.load_raw(_ds(source="npz", path="d.npz"), tmp_path)


# --- preprocessing, normalization, feed ---------------------------------------------------------------------------
def test_normalize_train_uses_the_training_split_only_and_feed_applies_it(tmp_path):
    X = IMAGES.copy()
    ds = _ds(source="npz", path="d.npz", normalize="train", split={"val": 0.2, "test": 0.2})
    raw = data.load_raw(ds, _npz(tmp_path, X))
    parts, spec = data.preprocess(raw, ds)
    train = parts["X_train"].astype(np.float64)
    assert np.allclose(spec.mean, train.mean(axis=(0, 2, 3))) and np.allclose(spec.std, train.std(axis=(0, 2, 3)))
    everything = (X / 255.0).mean(axis=(0, 1, 2))
    assert not np.allclose(spec.mean, everything)  # not the statistics of all rows
    assert 0.0 <= parts["X_train"].min() and parts["X_train"].max() <= 1.0  # stored splits stay un-normalized
    fed = data.feed(parts["X_train"], spec, "NCHW")
    assert np.allclose(fed.mean(axis=(0, 2, 3)), 0, atol=1e-5) and np.allclose(fed.std(axis=(0, 2, 3)), 1, atol=1e-4)
    nhwc = data.feed(parts["X_train"], spec, "NHWC")
    assert nhwc.shape == (len(train), 6, 5, 3) and nhwc.flags.c_contiguous and nhwc.dtype == np.float32
    assert np.array_equal(nhwc, fed.transpose(0, 2, 3, 1))


def test_feed_in_every_layout():
    X = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2) / 24
    plain = InputSpec(kind="image", shape=(3, 2, 2), class_names=("a", "b"))
    assert np.array_equal(data.feed(X, plain, "NCHW"), X)
    assert data.feed(X, plain, "NHWC")[1, 0, 1, 2] == X[1, 2, 0, 1]
    declared = plain.model_copy(update={"mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 2.0)})
    out = data.feed(X, declared, "NHWC")
    assert np.isclose(out[1, 0, 1, 2], (X[1, 2, 0, 1] - 0.3) / 2.0)
    vectors = InputSpec(kind="features", shape=(4,), mean=(1, 1, 1, 1), std=(2, 2, 2, 2), class_names=("a", "b"))
    V = np.ones((5, 4), np.float64) * 3
    fed = data.feed(V, vectors, "NF")
    assert fed.dtype == np.float32 and (fed == 1.0).all()
    with pytest.raises(ValueError, match="feature vectors are fed as NF, not NCHW"):
        data.feed(V, vectors, "NCHW")
    with pytest.raises(ValueError, match=r"samples of shape \(3, 4\) do not match .* \(3, 2, 2\)"):
        data.feed(np.zeros((2, 3, 4)), plain, "NCHW")


def test_declared_normalization_and_value_max(tmp_path):
    ds = _ds(source="npz", path="d.npz", value_max=510, normalize={"mean": [0.1, 0.2, 0.3], "std": [1, 1, 2]})
    parts, spec = data.preprocess(data.load_raw(ds, _npz(tmp_path, IMAGES)), ds)
    assert spec.scale == 1 / 510 and spec.mean == (0.1, 0.2, 0.3) and spec.std == (1.0, 1.0, 2.0)
    assert parts["X_train"].max() <= 0.5


def test_max_rows_keeps_a_seeded_stratified_subset(tmp_path):
    y = np.repeat([0, 1, 2], [100, 50, 50])
    X = np.random.default_rng(0).normal(size=(200, 3))
    ds = _ds(source="npz", path="d.npz", max_rows=80, split={"val": 0.25, "test": 0.25})
    raw = data.load_raw(ds, _npz(tmp_path, X, y))
    a, _ = data.preprocess(raw, ds)
    b, _ = data.preprocess(raw, ds)
    assert sum(len(a[f"y_{s}"]) for s in data.SPLITS) == 80 and all(np.array_equal(a[k], b[k]) for k in a)
    kept = np.concatenate([a[f"y_{s}"] for s in data.SPLITS])
    assert np.bincount(kept).tolist() == [40, 20, 20]


def test_the_digits_test_size_is_known_at_load():
    assert data.known_test_rows(_ds()) == 360
    assert data.known_test_rows(_ds(max_rows=500)) == 100
    assert data.known_test_rows(_ds(source="idx", path="fm")) is None


# --- the recipe's dataset block -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset, words", [
    ({"source": "image_folder", "path": "pets"}, ["source 'image_folder' needs 'image_size'"]),
    ({"source": "image_folder", "path": "pets", "image_size": [8, 8], "layout": "NHWC"},
     ["'layout' does not apply to source 'image_folder'", "'color'", "'image_size'"]),
    ({"source": "npz", "path": "d.npz", "color": "rgb"}, ["'color' does not apply to source 'npz'"]),
    ({"source": "idx", "path": "fm", "split": {"test": 0.3}}, ["split.test does not apply to source 'idx'"]),
    ({"source": "npz", "path": "d.npz", "layout": "NF", "image_shape": [8, 8]}, ["contradict"]),
    ({"source": "npz", "path": "d.npz", "image_shape": [8, 8], "value_range": [0, 1]},
     ["value_range applies to feature vectors"]),
    ({"source": "npz", "path": "d.npz", "value_range": [1, 0]}, ["low < high"]),
    ({"normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}}, ["gives 1-channel images"]),
    ({"source": "image_folder", "path": "p", "image_size": [8, 8], "normalize": {"mean": [0.5], "std": [0.2]}},
     ["gives 3-channel images"]),
    ({"image_shape": [16, 16]}, ["sklearn_digits images are 8x8"]),
])
def test_bad_dataset_blocks_fail_when_the_recipe_loads(dataset, words):
    with pytest.raises(RecipeError) as exc:
        parse_recipe({**TINY, "dataset": dataset}, "fam.yaml")
    assert exc.value.location.startswith("dataset"), str(exc.value)
    for w in words:
        assert w in str(exc.value), str(exc.value)


@pytest.mark.parametrize("field, value, location, words", [
    ("classes", ["a", 1], "dataset.classes", ["not a mix"]),
    ("classes", ["a", "a"], "dataset.classes", ["each appears once"]),
    ("normalize", {"mean": [0.5], "std": [0]}, "dataset.normalize", ["positive"]),
    ("normalize", "zscore", "dataset.normalize", ["'none'", "'train'"]),
    ("files", {"train_images": "../x"}, "dataset.files.train_images", ["'..'"]),
])
def test_bad_dataset_fields_name_the_field(field, value, location, words):
    source = {"source": "idx", "path": "fm"} if field == "files" else {}
    with pytest.raises(RecipeError) as exc:
        parse_recipe({**TINY, "dataset": {**source, field: value}}, "fam.yaml")
    assert exc.value.location.startswith(location), str(exc.value)
    for w in words:
        assert w in str(exc.value), str(exc.value)


def test_digits_defaults_are_unchanged():
    ds = _ds()
    assert (ds.image_shape, ds.classes, ds.value_max, ds.normalize) == ((8, 8), list(range(10)), 16.0, "none")
    assert _ds(classes=["zero", "one"]).classes == ["zero", "one"]


# --- the stages and the data version --------------------------------------------------------------------------------
def test_stages_record_the_input_spec_and_folders_are_versioned(image_root, tmp_path):
    recipe = parse_recipe({**TINY, "dataset": {"source": "image_folder", "path": "pets", "image_size": [8, 8],
                                               "normalize": "train", "min_rows": 2, "split": {"val": 0.25,
                                                                                             "test": 0.25}}})
    store = ArtifactStore(tmp_path / "artifacts")
    raw = stages.raw_dataset(recipe, store, image_root)
    assert raw.info["rows"] == 12 and raw.info["features"] == 192 and raw.info["labels"] == [0, 1, 2]
    assert raw.info["class_names"] == ["bird", "cat", "dog"] and raw.info["source"] == str(image_root / "pets")
    assert raw.info["source_sha256"] == data.content_version(image_root / "pets")
    handle = stages.splits(recipe, store, raw)
    spec = InputSpec.model_validate(handle.info["input_spec"])
    assert spec.kind == "image" and spec.shape == (3, 8, 8) and spec.mean is not None
    assert handle.info["rows"] == {"train": 6, "val": 3, "test": 3}
    assert [g["name"] for g in handle.info["gates"]] == list(quality.GATES)
    # the folder's version follows its files: a changed, renamed or added image changes it
    before = data.content_version(image_root / "pets")
    _image(image_root / "pets" / "cat" / "a.png", (0, 254, 0))
    changed = data.content_version(image_root / "pets")
    (image_root / "pets" / "cat" / "a.png").rename(image_root / "pets" / "cat" / "z.png")
    assert len({before, changed, data.content_version(image_root / "pets")}) == 3
    assert data.content_bytes(image_root / "pets") == sum(f.stat().st_size for f in (image_root / "pets").rglob("*")
                                                          if f.is_file())


def test_idx_folder_version(tmp_path):
    _write_idx(tmp_path / "fm")
    before = data.content_version(tmp_path / "fm")
    assert before == data.content_version(tmp_path / "fm")
    _write_idx(tmp_path / "fm", n_train=61)
    assert data.content_version(tmp_path / "fm") != before


# --- the data gates -------------------------------------------------------------------------------------------------
def _splits(X, y):
    """60/20/20 of shuffled rows."""
    idx = np.random.default_rng(0).permutation(len(X))
    parts = dict(zip(data.SPLITS, np.split(idx, [len(X) * 6 // 10, len(X) * 8 // 10])))
    return {f"X_{s}": X[i] for s, i in parts.items()} | {f"y_{s}": y[i] for s, i in parts.items()}


def _examples(outcome):
    return [ex for e in outcome.failed for ex in e.get("examples", [])]


def test_gates_on_rgb_images_name_row_and_channel():
    rng = np.random.default_rng(0)
    s = _splits(rng.random((300, 3, 4, 4), dtype=np.float32), np.arange(300) % 3)
    spec = InputSpec(kind="image", shape=(3, 4, 4), class_names=("a", "b", "c"))
    s["X_train"][4, 2, 1, 1] = 1.5
    s["X_val"][7, 1, 0, 0] = np.nan
    s["X_test"][3] = s["X_train"][9]
    s["y_test"][5] = 3
    out = quality.validate_splits(s, spec, 10, 0.05)
    # a label outside the partition also makes the test split's KL divergence infinite
    assert {g for g, o in out.items() if not o.passed} == {"value_range", "no_missing", "no_leakage", "labels",
                                                           "class_balance"}
    assert [e["table"] for e in out["class_balance"].failed] == ["test"]
    assert _examples(out["value_range"]) == [{"max": "1.5", "row": "4", "channel": "2"}]
    assert _examples(out["no_missing"]) == [{"nan": "1", "row": "7", "channel": "1"}]
    assert _examples(out["no_leakage"]) == [{"in_train": "True", "row": "3"}]
    assert _examples(out["labels"]) == [{"label": "3", "row": "5"}]
    assert [e["unexpected_count"] for g in ("value_range", "no_missing", "no_leakage", "labels")
            for e in out[g].failed] == [1, 1, 1, 1]


def test_gates_on_feature_vectors_with_and_without_a_range():
    rng = np.random.default_rng(0)
    s = _splits(rng.normal(size=(300, 5)).astype(np.float32), np.arange(300) % 2)
    spec = InputSpec(kind="features", shape=(5,), class_names=("a", "b"))
    out = quality.validate_splits(s, spec, 10, 0.05)
    assert all(o.passed for o in out.values())
    assert "no value_range declared: checks only that values are finite" in out["value_range"].notes
    s["X_train"][2, 4] = np.inf
    out = quality.validate_splits(s, spec, 10, 0.05)
    assert not out["value_range"].passed and _examples(out["value_range"])[0]["row"] == "2"
    ranged = quality.validate_splits(s, spec, 10, 0.05, value_range=(-1.0, 1.0))
    bad = int(sum(((s[f"X_{k}"] < -1) | (s[f"X_{k}"] > 1)).any(axis=1).sum() for k in ("train", "val", "test")))
    counted = [e["unexpected_count"] for e in ranged["value_range"].failed]
    assert bad > 10 and sum(counted) >= bad  # a row below and above the range counts once for each
    assert "features in the declared value_range [-1.0, 1.0]" in ranged["value_range"].notes


def test_value_gates_check_a_seeded_sample_and_say_so():
    rng = np.random.default_rng(0)
    s = _splits(rng.random((1000, 1, 4, 4), dtype=np.float32), np.arange(1000) % 2)
    spec = InputSpec(kind="image", shape=(1, 4, 4), class_names=("a", "b"))
    out = quality.validate_splits(s, spec, 10, 0.05, gate_rows=100, seed=3)
    assert out["no_missing"].notes == [
        "values on train 100 of 600, val 100 of 200, test 100 of 200 rows (a seeded sample of at most 100)"]
    assert {e["rows_checked"] for e in out["value_range"].expectations} == {100}
    # labels and row counts are judged on every row
    assert [e["observed_value"] for e in out["row_counts"].expectations] == [600, 200, 200]


def test_gates_on_60000_mnist_sized_images():
    """The timing is printed, not asserted (2 shared cores): about 2-4 s here."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (80_000, 1, 28, 28), dtype=np.uint8)
    parts = {"X_train": X[:60_000] / np.float32(255), "X_val": X[60_000:70_000] / np.float32(255),
             "X_test": X[70_000:] / np.float32(255)}
    parts |= {f"y_{s}": np.arange(len(parts[f"X_{s}"])) % 10 for s in data.SPLITS}
    spec = InputSpec(kind="image", shape=(1, 28, 28), scale=1 / 255, class_names=[str(i) for i in range(10)])
    quality.validate_splits({k: v[:500] for k, v in parts.items()}, spec, 100, 0.05)  # imports and warms GX
    t0 = time.perf_counter()
    out = quality.validate_splits(parts, spec, 100, 0.05)
    print(f"\ndata gates on 60,000 + 10,000 + 10,000 images of 1x28x28: {time.perf_counter() - t0:.2f} s")
    assert all(o.passed for o in out.values()), {g: o.failed for g, o in out.items()}
    assert out["value_range"].notes[0].startswith("values on train 20000 of 60000, val 10000 of 10000")
