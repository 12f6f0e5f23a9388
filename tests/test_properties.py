"""Property-based tests: generated bad recipes and dataset files raise only the documented errors.

Example counts are bounded so the suite stays fast (about 10 s in all): recipes 300 mutations of a valid recipe
+ 150 arbitrary YAML documents; datasets 150 corrupted byte strings + 150 generated array files. Each property
holds for every example: the input either loads into a valid object or raises RecipeError / DatasetError with
the file (and, for recipes, the field) in its message. Any other exception is a crash, and a failure.
"""

import copy
import io
import string

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compression_pipeline import data
from compression_pipeline.errors import DatasetError, RecipeError
from compression_pipeline.recipe import Dataset, Recipe, load_recipe, parse_recipe

from conftest import TINY

RECIPE_MUTATIONS = 300
YAML_DOCUMENTS = 150
DATASET_BYTES = 150
DATASET_ARRAYS = 150
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                "derandomize": True}

# --- recipes ------------------------------------------------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["baseline", "int8", "npz", "cnn", "torch", "quantize_static",
                                                           "../x.npz", "/etc/passwd", "minmax", "absolute"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8) | st.integers(), inner,
                                                                      max_size=4)), max_leaves=12)


def _paths(obj, prefix=()):
    """Every (path, value) in a nested dict, so a mutation can target any field of the valid recipe."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))


TINY_PATHS = [p for p, _ in _paths(TINY)]


@st.composite
def mutated_recipes(draw):
    r = copy.deepcopy(TINY)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(TINY_PATHS))
        kind = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            r = draw(values) if kind == "replace" else r
            continue
        parent = r
        for k in path[:-1]:
            if not isinstance(parent, dict) or k not in parent:
                break
            parent = parent[k]
        else:
            if not isinstance(parent, dict):
                continue
            if kind == "replace":
                parent[path[-1]] = draw(values)
            elif kind == "delete":
                parent.pop(path[-1], None)
            else:
                parent[draw(st.text(string.ascii_lowercase + "_", min_size=1, max_size=8))] = draw(values)
    return r


WRONG_TYPES = [None, True, 1.5, -3, "x", "", [], [1], {}, {"a": 1}]


@pytest.mark.parametrize("path", TINY_PATHS[1:], ids=lambda p: ".".join(p))
def test_every_field_with_every_wrong_type_raises_recipe_error(path):
    """The exhaustive sweep next to the random one: each field of a valid recipe, each JSON type in turn."""
    for value in WRONG_TYPES:
        doc = copy.deepcopy(TINY)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = value
        out = _recipe_or_error(doc)
        if isinstance(out, RecipeError):  # the error points at the field that was broken
            assert out.location.startswith(".".join(path)), (value, str(out))


def _recipe_or_error(doc, where="gen/bad.yaml"):
    try:
        return parse_recipe(doc, where)
    except RecipeError as e:
        assert e.path == where and e.location and e.problem
        assert str(e).startswith(f"recipe {where}: {e.location}: ")
        return e


@settings(max_examples=RECIPE_MUTATIONS, **SETTINGS)
@given(mutated_recipes())
def test_mutated_recipes_parse_or_raise_recipe_error(doc):
    out = _recipe_or_error(doc)
    if isinstance(out, Recipe):  # a mutation that happened to stay valid must really be valid
        for name in out.variants:
            assert out.chain(name)[0] == "baseline"


@settings(max_examples=YAML_DOCUMENTS, **SETTINGS)
@given(st.one_of(values.map(lambda v: yaml.safe_dump(v)), st.text(max_size=200)))
def test_arbitrary_yaml_files_load_or_raise_recipe_error(tmp_path, text):
    path = tmp_path / "gen.yaml"
    path.write_text(text)
    try:
        load_recipe(path)
    except RecipeError as e:
        assert e.path == str(path) and e.location


# --- datasets -----------------------------------------------------------------------------------------------------
def _valid_npz_bytes(tmp_path) -> bytes:
    rng = np.random.default_rng(0)
    p = tmp_path / "valid.npz"
    np.savez_compressed(p, X=rng.integers(0, 17, (40, 64)).astype(np.float64), y=rng.integers(0, 10, 40))
    return p.read_bytes()


@st.composite
def corrupted(draw, valid: bytes):
    kind = draw(st.sampled_from(["truncate", "flip", "random", "splice", "npy"]))
    if kind == "npy":  # a bare .npy array (np.load returns an array, not an archive), maybe truncated
        buf = io.BytesIO()
        np.save(buf, np.zeros(draw(st.integers(0, 20))))
        return buf.getvalue()[: draw(st.integers(1, len(buf.getvalue())))]
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "flip":
        b = bytearray(valid)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
        return bytes(b)
    if kind == "random":
        return draw(st.binary(max_size=400))
    i = draw(st.integers(0, len(valid)))
    return valid[:i] + draw(st.binary(min_size=1, max_size=64)) + valid[i:]


_VALID = None


def _load(path, root):
    """Load the file as vectors (layout inferred) and as 8x8 images (image_shape declared): each either loads into
    what the rest of the pipeline expects, or raises a DatasetError naming the file."""
    out = None
    for ds in (Dataset(source="npz", path=path.name), Dataset(source="npz", path=path.name, image_shape=(8, 8))):
        try:
            raw = data.load_raw(ds, root)
            parts, spec = data.preprocess(raw, ds)
        except DatasetError as e:
            assert e.source == str(path) and e.problem
            continue
        assert raw.X.dtype.kind in "iuf" and raw.X.ndim in (2, 4) and len(raw.X) > 0 and min(raw.X.shape) > 0
        assert raw.X.shape[1:] == ((1, 8, 8) if ds.image_shape else raw.X.shape[1:])
        assert raw.y.dtype == np.int64 and raw.y.shape == (len(raw.X),) and raw.source == str(path)
        assert spec.shape == raw.X.shape[1:] and spec.num_classes >= 2
        assert all(parts[f"X_{s}"].dtype == np.float32 and len(parts[f"X_{s}"]) > 0 for s in data.SPLITS)
        out = raw
    return out


@settings(max_examples=DATASET_BYTES, **SETTINGS)
@given(st.data())
def test_corrupt_dataset_files_raise_dataset_error(tmp_path, data_):
    global _VALID
    _VALID = _VALID or _valid_npz_bytes(tmp_path)
    path = tmp_path / "gen.npz"
    path.write_bytes(data_.draw(corrupted(_VALID)))
    _load(path, tmp_path)


dtypes = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int8, np.uint8, np.bool_, np.complex64,
                          "U3", "S2", "datetime64[s]", object])
shapes = st.lists(st.integers(0, 70), min_size=0, max_size=3).map(tuple)


@st.composite
def arrays(draw):
    dtype, shape = draw(dtypes), draw(shapes)
    size = int(np.prod(shape)) if shape else 1
    if size > 5000:
        shape, size = (size % 50,), size % 50
    base = np.arange(size) % 17
    if dtype is object:
        a = np.empty(size, dtype=object)
        a[:] = [draw(st.sampled_from([None, 1, "x", (1, 2)])) for _ in range(size)]
        return a.reshape(shape)
    return base.astype(dtype).reshape(shape)


@settings(max_examples=DATASET_ARRAYS, **SETTINGS)
@given(st.dictionaries(st.sampled_from(["X", "y", "Z", "x"]), arrays(), max_size=3), st.booleans())
def test_generated_dataset_arrays_load_or_raise_dataset_error(tmp_path, arrs, compressed):
    path = tmp_path / "gen.npz"
    # Object arrays can only be written as pickles: exactly what loading must refuse.
    (np.savez_compressed if compressed else np.savez)(path, **arrs, allow_pickle=True)
    out = _load(path, tmp_path)
    if out is not None:
        assert arrs["X"].dtype != object and arrs["y"].dtype != object
