"""Recipes: the declarative layer. One YAML file in assets/ declares one model family.

``load_recipe`` parses a file into typed, validated models. Every problem is a ``RecipeError`` naming
the file, the field (e.g. ``variants.int8.calibration``), the bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Discriminator,
    Field,
    SerializeAsAny,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from compression_pipeline.errors import RecipeError
from compression_pipeline.methods import MethodConfig, get_method, methods_for
from compression_pipeline.types import (
    SOURCE_TAGS,
    Framework,
    ImportModel,
    OnnxModel,
    Strict,
    TrainingSetup,
    ZooModel,
    relative_path,
    source_of,
)

FRAMEWORKS = ("torch", "tensorflow")
# A family's models exist per framework; a user's ONNX baseline is its own: "onnx" (only ONNX-level methods).
# PyTorch eager, a compiled tf.function, the LiteRT (TFLite) interpreter, ONNX Runtime: each model is measured on
# every listed runtime that can run it (a PyTorch model on torch and onnxruntime; a Keras model on tensorflow,
# tflite and onnxruntime; a TFLite variant on tflite; an ONNX variant on onnxruntime).
RUNTIMES = ("onnxruntime", "torch", "tensorflow", "tflite")
Runtime = Literal["onnxruntime", "torch", "tensorflow", "tflite"]


def _unique(v: list) -> list:
    if len(set(v)) != len(v):
        raise ValueError(f"each entry may appear once, got {v}")
    return v


ImageSide = Annotated[int, Field(ge=2, le=4096)]  # the CNN pools by 2, so a side of 1 leaves nothing


class Split(Strict):
    val: float = Field(0.15, gt=0, lt=0.5)
    test: float = Field(0.2, gt=0, lt=0.5)


class ArrayNames(Strict):
    """The arrays of an .npz dataset file: samples and labels."""

    x: str = Field("X", min_length=1)
    y: str = Field("y", min_length=1)


class IdxFiles(Strict):
    """The IDX files of an ``idx`` dataset, inside its folder (gzipped or not): Fashion-MNIST's names by default."""

    train_images: str = "train-images-idx3-ubyte.gz"
    train_labels: str = "train-labels-idx1-ubyte.gz"
    test_images: str = "t10k-images-idx3-ubyte.gz"
    test_labels: str = "t10k-labels-idx1-ubyte.gz"

    _inside_folder = field_validator("*")(classmethod(lambda cls, v: relative_path(v)))


class Normalize(Strict):
    """A declared normalization: what a model is fed is (stored - mean) / std, per channel or feature."""

    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _pairs(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}: one of each per channel "
                             f"or feature")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        return self


# A declared normalization is a mapping; a tag picks the branch, so an error names its field rather than the union's.
NormalizeField = Annotated[Annotated[Literal["none", "train"], Tag("name")] | Annotated[Normalize, Tag("declared")],
                           Discriminator(lambda v: "name" if isinstance(v, str) else "declared")]
# Left out of an error's location: the user wrote no such field ("one"/"many": a baseline or a list of them).
UNION_TAGS = (*SOURCE_TAGS, "name", "declared", "one", "many")

DIGITS_SHAPE = (8, 8)
# The fields each source takes besides the ones every source takes; a field of another source is refused.
SOURCE_FIELDS = {
    "sklearn_digits": {"image_shape"},
    "npz": {"path", "arrays", "layout", "image_shape", "value_range"},
    "image_folder": {"path", "image_size", "color"},
    "idx": {"path", "files"},
}
REQUIRED_FIELDS = {"npz": ("path",), "image_folder": ("path", "image_size"), "idx": ("path",)}


class Dataset(Strict):
    """Where the data come from and how they are split, scaled and gated.

    Sources: ``sklearn_digits`` (built in: 1797 8x8 images, values 0..16); ``npz`` (one file: arrays ``arrays.x``
    (n, features), (n, h, w), (n, h, w, c) or (n, c, h, w) and ``arrays.y`` (n,); ``layout`` declared or inferred;
    flat (n, h*w) images with ``image_shape``); ``image_folder`` (one subfolder of PNG/JPEG images per class, resized
    to ``image_size`` in ``color``); ``idx`` (MNIST's IDX files in a folder, ``files``; their test split is kept and
    ``split.val`` is the share of their training rows held out for validation).
    """

    source: Literal["sklearn_digits", "npz", "image_folder", "idx"] = "sklearn_digits"
    path: str | None = None  # a file (npz) or folder (image_folder, idx), relative to the data root
    arrays: ArrayNames = ArrayNames()
    layout: Literal["NF", "NHW", "NHWC", "NCHW"] | None = None  # None: inferred from the array's shape
    image_shape: tuple[ImageSide, ImageSide] | None = None  # flat (n, h*w) npz arrays are 1-channel h x w images
    image_size: tuple[ImageSide, ImageSide] | None = None  # image_folder: every image resized to [height, width]
    color: Literal["grayscale", "rgb"] = "rgb"
    files: IdxFiles = IdxFiles()
    # The label names, in label order (label i is classes[i]): names, or the indices 0..n-1. Absent: the class
    # folder names, or the label values (which must then be 0..n-1). The labels gate checks the data against them,
    # and the model has one output per class.
    classes: list[int | str] | None = Field(None, min_length=2)
    value_max: float | None = Field(None, gt=0)  # raw values are scaled by 1/value_max (default: 255 for integer
    # images, 1 for floating-point data and integer features, 16 for sklearn_digits)
    value_range: tuple[float, float] | None = None  # feature vectors: the range the value gate checks (after scaling)
    normalize: NormalizeField = "none"  # train: per channel/feature mean and std of train
    max_rows: int | None = Field(None, ge=1)  # a seeded, stratified subset of this many rows before splitting
    gate_rows: int = Field(20_000, ge=1)  # the value gates check at most this many rows per split (a seeded sample)
    split: Split = Split()
    seed: int = 0
    min_rows: int = Field(100, ge=1)  # the row-count gate on the training split
    max_class_kl: float = Field(0.05, gt=0)  # the class-balance gate: KL(split || uniform)

    @model_validator(mode="before")
    @classmethod
    def _digits_defaults(cls, data):
        # What the built-in digits are is known without reading them: the old code paths read these fields.
        if isinstance(data, dict) and data.get("source", "sklearn_digits") == "sklearn_digits":
            data = {"image_shape": DIGITS_SHAPE, "classes": list(range(10)), "value_max": 16.0, **data}
        return data

    @field_validator("classes")
    @classmethod
    def _names_or_output_indices(cls, v):
        if v is None:
            return v
        if all(isinstance(c, int) for c in v):
            if v != list(range(len(v))):
                raise ValueError(f"classes are the model's output indices 0..{len(v) - 1}, in order (or names)")
        elif all(isinstance(c, str) for c in v):
            if any(not c.strip() for c in v) or len(set(v)) != len(v):
                raise ValueError("class names are non-empty and each appears once")
        else:
            raise ValueError("classes are all names (strings) or all output indices 0..n-1, not a mix")
        return v

    _path_stays_in_data_root = field_validator("path")(classmethod(lambda cls, v: relative_path(v)))

    @model_validator(mode="after")
    def _fields_match_source(self):
        own = SOURCE_FIELDS[self.source]
        common = set(type(self).model_fields) - set().union(*SOURCE_FIELDS.values())
        foreign = sorted(self.model_fields_set - own - common)
        if foreign:
            raise ValueError(f"{', '.join(repr(f) for f in foreign)} do{'es' if len(foreign) == 1 else ''} not apply "
                             f"to source {self.source!r}; its own fields: {sorted(own) or 'none'}")
        for f in REQUIRED_FIELDS.get(self.source, ()):
            if getattr(self, f) is None:
                raise ValueError(f"source {self.source!r} needs {f!r}" + (" (relative to the data root)"
                                                                            if f == "path" else ""))
        if self.source == "sklearn_digits" and tuple(self.image_shape) != DIGITS_SHAPE:
            raise ValueError(f"sklearn_digits images are 8x8, got image_shape {list(self.image_shape)}")
        if self.layout == "NF" and self.image_shape:
            raise ValueError("layout NF (feature vectors) and image_shape (images) contradict each other: "
                             "declare one")
        if self.value_range is not None:
            if not self.value_range[0] < self.value_range[1]:
                raise ValueError(f"value_range is [low, high] with low < high, got {list(self.value_range)}")
            if self.image_shape or self.layout not in (None, "NF"):
                raise ValueError("value_range applies to feature vectors (layout NF); images are checked "
                                 "against [0, 1] after scaling by 1/value_max")
        if self.source == "idx" and "test" in self.split.model_fields_set:
            raise ValueError("split.test does not apply to source 'idx': its test files are the test split "
                             "(split.val is the share of its training rows held out for validation)")
        channels = {"sklearn_digits": 1, "image_folder": 1 if self.color == "grayscale" else 3}.get(self.source)
        if not isinstance(self.normalize, str) and channels and len(self.normalize.mean) != channels:
            raise ValueError(f"normalize has {len(self.normalize.mean)} values per statistic, but source "
                             f"{self.source!r} gives {channels}-channel images: one mean and std per channel")
        return self


class Training(Strict):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    # How this baseline trains: the family's `training` block with the fields given here replaced (parse_recipe
    # merges them), e.g. augmentation for a PyTorch baseline beside a Keras one; None: the family's block.
    training: TrainingSetup | None = None


class ZooBaseline(ZooModel, Training):
    # The same architecture is built and trained in each framework, on the same splits.
    frameworks: list[Framework] = Field(default_factory=lambda: ["torch"], min_length=1)

    _unique_frameworks = field_validator("frameworks")(classmethod(lambda cls, v: _unique(v)))

    def model_source(self) -> ZooModel:
        """Where the model comes from, without how it is trained (what a stored model records)."""
        return ZooModel.model_validate(self.model_dump(include=set(ZooModel.model_fields)))


class ImportBaseline(ImportModel, Training):
    train: bool = True  # train (or fine-tune the given weights) here; false: evaluate and compress as given

    def model_source(self) -> ImportModel:
        return ImportModel.model_validate(self.model_dump(include=set(ImportModel.model_fields)))

    @property
    def frameworks(self) -> list[str]:
        return [self.framework]


class OnnxBaseline(OnnxModel):
    @property
    def frameworks(self) -> list[str]:
        return ["onnx"]


Baseline = Annotated[Annotated[ZooBaseline, Tag("zoo")] | Annotated[ImportBaseline, Tag("import")]
                     | Annotated[OnnxBaseline, Tag("onnx")], Discriminator(source_of)]
# One baseline (the zoo's may be built in several frameworks), or a list of them, one per framework: a family whose
# PyTorch and Keras models are different networks (a ResNet and a MobileNet) on the same data.
Baselines = Annotated[Annotated[Baseline, Tag("one")] | Annotated[list[Baseline], Tag("many")],
                      Discriminator(lambda v: "many" if isinstance(v, list) else "one")]


class Tolerance(Strict):
    """How far a variant's accuracy may fall below the baseline's, and how that is decided on a finite test set.

    ``decide: point`` (the default) passes when the measured drop is within ``value``; ``upper_bound`` only when the
    top of the drop's ``confidence`` interval is (a guarantee at that confidence, which needs a test set large
    enough: see ``gates``). Every gate states the drop, its interval and the number of test images either way.
    """

    value: float = Field(ge=0)
    mode: Literal["absolute", "relative"] = "absolute"
    decide: Literal["point", "upper_bound"] = "point"
    confidence: float = Field(0.95, ge=0.5, lt=1)


class Gates(Strict):
    accuracy_floor: float = Field(0.95, ge=0, le=1)
    max_accuracy_drop: Tolerance = Tolerance(value=0.01, mode="absolute")
    parity_atol: float = Field(1e-3, gt=0)  # max |logit difference| between a model and its ONNX export


class Benchmark(Strict):
    runtimes: list[Runtime] = Field(default_factory=lambda: list(RUNTIMES), min_length=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)  # None: one per core
    warmup_runs: int = Field(10, ge=0)
    warmup_s: float = Field(1.0, ge=0)
    min_runs: int = Field(50, ge=1)
    min_time_s: float = Field(1.0, ge=0)
    # The interleaved session (interleave.py): every cell gets slice_s seconds per round, in a new order each
    # round; rounds go on until every speedup's interval is within target_half_width of its value, or budget_s.
    slice_s: float = Field(0.1, gt=0, le=10)
    min_rounds: int = Field(6, ge=2)
    processes: int = Field(2, ge=1, le=16)  # the rounds are split among this many processes, one after the other
    budget_s: float = Field(120.0, gt=0)
    target_half_width: float = Field(0.05, gt=0, lt=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)

    _unique_runtimes = field_validator("runtimes")(classmethod(lambda cls, v: _unique(v)))

    @model_validator(mode="after")
    def _rounds_for_an_interval(self):
        from compression_pipeline.stats import rounds_needed

        need = rounds_needed(self.confidence)
        if self.min_rounds < need:
            raise ValueError(f"min_rounds {self.min_rounds} is too few for an interval at confidence "
                             f"{self.confidence}: the median of per-round ratios needs at least {need} rounds")
        return self

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v):
        if any(b < 1 for b in v):
            raise ValueError("batch sizes must be >= 1")
        return v


class Select(Strict):
    """How the deployment candidate is picked among the models whose gates passed."""

    objective: Literal["latency_p50", "latency_p90", "latency_p99", "throughput", "file_bytes", "accuracy"] = \
        "latency_p50"  # latency_*: lowest wins at (runtime, precision, batch_size); throughput/accuracy: highest
    runtime: Runtime = "onnxruntime"
    precision: Literal["fp32", "fp16"] = "fp32"
    batch_size: int = Field(1, ge=1)
    max_file_bytes: int | None = Field(None, ge=1)  # a size limit on the deployable file
    min_accuracy: float | None = Field(None, ge=0, le=1)  # an extra floor on top of the gates
    require_gates: bool = True  # only models whose gates all passed may be chosen


class Variant(Strict):
    parent: str = Field(alias="from")
    method: str
    config: SerializeAsAny[MethodConfig]
    max_accuracy_drop: Tolerance | None = None  # overrides the recipe's gate for this variant
    # The frameworks this variant is built in (default: all of its parent's). A method one framework lacks
    # (e.g. share_weights in TensorFlow) is limited to the others here.
    frameworks: list[Framework] | None = Field(None, min_length=1)
    # How this variant trains: the family's `training` block with the fields given here replaced (parse_recipe
    # merges and validates them together); None: the family's block.
    training: TrainingSetup | None = None

    _unique_frameworks = field_validator("frameworks")(classmethod(lambda cls, v: v if v is None else _unique(v)))


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    dataset: Dataset = Dataset()
    baseline: Baselines = ZooBaseline()
    gates: Gates = Gates()
    variants: dict[str, Variant] = Field(default_factory=dict)
    training: TrainingSetup = TrainingSetup()  # how the models that train here train (devices, precision, ...)
    benchmark: Benchmark = Benchmark()
    select: Select = Select()
    schedule: str = "0 2 * * *"
    source_path: str = ""

    @field_validator("baseline")
    @classmethod
    def _one_baseline_per_framework(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("a list of baselines has at least one (one per framework)")
            seen = {}
            for i, b in enumerate(v):
                for fw in b.frameworks:
                    if fw in seen:
                        raise ValueError(f"baseline[{seen[fw]}] and baseline[{i}] are both {fw} models: a family "
                                         f"has one baseline per framework")
                    seen[fw] = i
        return v

    @property
    def baselines(self) -> dict[str, Any]:
        """Each framework's baseline (one zoo baseline serves every framework it lists)."""
        items = self.baseline if isinstance(self.baseline, list) else [self.baseline]
        return {fw: b for b in items for fw in b.frameworks}

    # --- lineage helpers -------------------------------------------------------------------------
    def chain(self, name: str) -> list[str]:
        """Names from the baseline down to ``name`` (inclusive)."""
        out = [name]
        while out[-1] != "baseline":
            out.append(self.variants[out[-1]].parent)
        return out[::-1]

    def frameworks_of(self, name: str) -> list[str]:
        """The frameworks a model exists in: the baseline's, narrowed by each variant's ``frameworks`` on its chain."""
        if name == "baseline":
            return list(self.baselines)
        v = self.variants[name]
        parent = self.frameworks_of(v.parent)
        return [f for f in parent if v.frameworks is None or f in v.frameworks]

    def form(self, name: str, framework: str) -> str:
        if name == "baseline":
            return framework
        v = self.variants[name]
        return get_method(v.method).output_form(self.form(v.parent, framework))

    def training_for(self, name: str, framework: str | None = None) -> TrainingSetup:
        """How model ``name`` trains: its variant's (or ``framework``'s baseline's, so the baseline needs one) merged
        ``training`` block, else the family's."""
        if name != "baseline":
            return self.variants[name].training or self.training
        if framework not in self.baselines:
            raise ValueError(f"training_for('baseline') needs one of the baseline's frameworks {list(self.baselines)}, "
                             f"got {framework!r}")
        return getattr(self.baselines[framework], "training", None) or self.training

    def trains(self, name: str, framework: str) -> bool:
        """Whether building model ``name`` in ``framework`` trains a network (a training baseline, distillation,
        fine-tuning after a method): what the ``training`` block applies to."""
        if name == "baseline":
            b = self.baselines.get(framework)
            return framework in FRAMEWORKS and b is not None and getattr(b, "train", True) and b.source != "onnx"
        v = self.variants[name]
        if self.form(v.parent, framework) not in FRAMEWORKS or self.form(name, framework) not in FRAMEWORKS:
            return False
        return hasattr(v.config, "student") or getattr(v.config, "finetune_epochs", 0) > 0

    def tolerance(self, name: str) -> Tolerance:
        v = self.variants.get(name)
        return (v and v.max_accuracy_drop) or self.gates.max_accuracy_drop

    def entries(self, *sections: str) -> dict[str, Any]:
        """The validated recipe sections (e.g. ``dataset``, ``variants.int8``) as JSON values, defaults spelled out."""
        out = {}
        for section in sections:
            head, _, rest = section.partition(".")
            value = self.baselines if head == "baseline" and rest else getattr(self, head)
            value = value.get(rest) if rest else value
            if isinstance(value, list):
                out[section] = [v.model_dump(mode="json", by_alias=True) for v in value]
                continue
            out[section] = value.model_dump(mode="json", by_alias=True) if value is not None else None
        return out

    def entry_version(self, *sections: str) -> str:
        """Code version of an asset: a hash of the validated recipe sections it is built from (e.g. ``dataset``,
        ``variants.int8``) and the library version. Spelling out a default does not change it."""
        from compression_pipeline import __version__

        blob = json.dumps([__version__, sections, list(self.entries(*sections).values())], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fmt_loc(loc) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _raise_from(path, err: ValidationError, prefix=()):
    e = err.errors()[0]
    # A tagged union (a model source) adds its tag to the location: the user wrote no such field.
    parts = [p for i, p in enumerate(e["loc"])
             if not (p in UNION_TAGS and i > 0 and isinstance(e["loc"][i - 1], str | int))]
    loc = _fmt_loc(tuple(prefix) + tuple(parts))
    bad = e.get("input")
    # A whole block's problem (a model validator) names its fields itself: the block is not repeated.
    shown = "" if e["type"] == "missing" or isinstance(bad, dict) and e["type"] == "value_error" else f" (got {bad!r})"
    allowed = ""
    ctx = e.get("ctx") or {}
    if "expected" in ctx:
        allowed = f"; allowed: {ctx['expected']}"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = f"unknown field {str(e['loc'][-1])!r}"
    raise RecipeError(path, loc, f"{msg}{shown}{allowed}") from None


# The rest of a variant is its method's config.
VARIANT_KEYS = ("from", "method", "max_accuracy_drop", "frameworks", "training")


def parse_recipe(data: Any, path: str | Path = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(path, "(top level)", f"a recipe is a mapping of fields, got {type(data).__name__}")
    raw_variants = data.get("variants") or {}
    if not isinstance(raw_variants, dict):
        raise RecipeError(path, "variants", f"must be a mapping of variant name to settings, got {raw_variants!r}")
    variants = {}
    for vname, spec in raw_variants.items():
        where = f"variants.{vname}"
        if not isinstance(spec, dict):
            raise RecipeError(path, where, f"must be a mapping with 'from' and 'method', got {spec!r}")
        if vname == "baseline" or not str(vname).replace("_", "").isalnum() or not str(vname)[:1].isalpha():
            raise RecipeError(path, where, "a variant name is letters, digits and '_', starts with a letter, "
                                           "and is not 'baseline'")
        for key in ("from", "method"):
            if key not in spec:
                raise RecipeError(path, f"{where}.{key}", "field required")
        if not isinstance(spec["method"], str):
            raise RecipeError(path, f"{where}.method", f"must be a method name (a string), got {spec['method']!r}")
        try:
            method = get_method(spec["method"])
        except KeyError as e:
            raise RecipeError(path, f"{where}.method", e.args[0]) from None
        params = {k: v for k, v in spec.items() if k not in VARIANT_KEYS}
        try:
            config = method.config.model_validate(params)
        except ValidationError as err:
            _raise_from(path, err, ("variants", vname))
        variants[vname] = {"from": spec["from"], "method": spec["method"], "config": config,
                           **{k: spec[k] for k in VARIANT_KEYS[2:] if k in spec}}
        if "training" in spec:
            variants[vname]["training"] = _merged_training(path, data.get("training"), spec["training"], where)
    try:
        recipe = Recipe.model_validate({**data, "baseline": _baselines_merged(path, data), "variants": variants,
                                        "source_path": str(path)})
    except ValidationError as err:
        _raise_from(path, err)
    _check_graph(recipe, path)
    _check_training(recipe, path)
    _check_select(recipe, path)
    _check_tolerances(recipe, path)
    return recipe


def _baselines_merged(path, data: dict):
    """The recipe's ``baseline`` (one or a list) with each entry's own ``training`` block merged over the family's,
    as a variant's is; the rest is validated with the recipe."""
    raw = data.get("baseline", {})
    entries = raw if isinstance(raw, list) else [raw]
    merged = []
    for i, b in enumerate(entries):
        if isinstance(b, dict) and b.get("training") is not None:
            where = f"baseline.{i}" if isinstance(raw, list) else "baseline"
            b = {**b, "training": _merged_training(path, data.get("training"), b["training"], where)}
        merged.append(b)
    return merged if isinstance(raw, list) else merged[0]


def _merged_training(path, family, own, where: str) -> TrainingSetup:
    """A variant's ``training`` block: the family's with the fields the variant gives replaced, validated together
    (a variant asking for fp16 in a family that trains on CUDA is fine; the same fields alone would not be)."""
    for block, at in ((family, "training"), (own, f"{where}.training")):
        if block is not None and not isinstance(block, dict):
            raise RecipeError(path, at, f"must be a mapping of training settings, got {block!r}")
    merged = {**(family or {}), **own}
    try:
        return TrainingSetup.model_validate(merged)
    except ValidationError as err:
        _raise_from(path, err, (*where.split("."), "training"))


# Fields of the training block that Keras models do not take (they train in one process, fp32, unaugmented).
KERAS_REFUSES = {"processes": 1, "precision": "fp32", "augment": []}


def _check_keras(path, where: str, setup: TrainingSetup, what: str, trains: list[str]) -> None:
    """Refuse the PyTorch-only fields of ``setup`` where ``what`` also trains in tensorflow."""
    if "tensorflow" not in trains:
        return
    for field, default in KERAS_REFUSES.items():
        if getattr(setup, field) != default:
            raise RecipeError(path, f"{where}.{field}", f"{getattr(setup, field)!r} applies to PyTorch models, but "
                              f"{what} also trains in tensorflow (Keras models train in one process, fp32, "
                              f"unaugmented); allowed there: {default!r}; or build {what} in torch only "
                              f"('frameworks: [torch]'), or give a PyTorch baseline its own 'training' block")


def _check_training(recipe: Recipe, path) -> None:
    """The ``training`` blocks against what each model that trains can do: Keras models train in one process in
    fp32 without augmentation (tf.distribute is not wired: see README "Training on devices"); a teacher's logits
    are computed once on unaugmented images, so augmentation and a teacher exclude each other; weight sharing's
    centroid fine-tune runs in one process; a variant's own block on a model that never trains is a mistake."""
    baselines = recipe.baseline if isinstance(recipe.baseline, list) else [recipe.baseline]
    for i, b in enumerate(baselines):
        trains = [fw for fw in b.frameworks if recipe.trains("baseline", fw)]
        own, at = getattr(b, "training", None), f"baseline.{i}" if isinstance(recipe.baseline, list) else "baseline"
        if own is not None and not trains:
            raise RecipeError(path, f"{at}.training", "this baseline is taken as given (train: false), so a "
                                                      "training block does not apply to it")
        if trains:
            _check_keras(path, "training" if own is None else f"{at}.training", own or recipe.training,
                         "the baseline", trains)
    for name in recipe.variants:
        where = "training" if recipe.variants[name].training is None else f"variants.{name}.training"
        setup = recipe.training_for(name)
        fws = recipe.frameworks_of(name)
        trains = [fw for fw in fws if recipe.trains(name, fw)]
        if recipe.variants[name].training is not None and not trains:
            raise RecipeError(path, where, f"variant {name!r} ({recipe.variants[name].method}) trains nothing in "
                                           f"{fws}, so a training block does not apply to it (a method trains with "
                                           f"finetune_epochs > 0, or distill)")
        if not trains:
            continue
        what = f"variant {name!r}"
        _check_keras(path, where, setup, what, trains)
        config = recipe.variants[name].config
        teacher = hasattr(config, "student") or getattr(config, "finetune_teacher", "none") == "parent"
        if teacher and setup.augment:
            raise RecipeError(path, f"{where}.augment", f"{what} learns from a teacher whose logits are computed "
                                                        f"once on unaugmented images: augmentation would pair them "
                                                        f"with other images; allowed: [] for this variant")
        if recipe.variants[name].method == "share_weights" and setup.processes > 1:
            raise RecipeError(path, f"{where}.processes", f"{setup.processes} (share_weights fine-tunes its "
                                                          f"centroids in one process); allowed: 1")


def _check_tolerances(recipe: Recipe, path) -> None:
    """Refuse a tolerance the test set cannot resolve, where its size is known at load (a built-in dataset): one
    below a single test image, or an ``upper_bound`` below the lowest interval top that n images allow. For a file
    dataset the gate itself says so (its size is known once the file is read)."""
    from compression_pipeline.data import known_test_rows
    from compression_pipeline.stats import smallest_upper_bound

    n = known_test_rows(recipe.dataset)
    if n is None:
        return
    tolerances = {"gates.max_accuracy_drop": recipe.gates.max_accuracy_drop}
    tolerances |= {f"variants.{k}.max_accuracy_drop": v.max_accuracy_drop for k, v in recipe.variants.items()
                   if v.max_accuracy_drop is not None}
    for where, tol in tolerances.items():  # a relative drop is never smaller than the absolute one: same bounds
        if 0 < tol.value < 1 / n:
            raise RecipeError(path, f"{where}.value", f"{tol.value} is smaller than one test image (1/{n} = "
                                                      f"{1 / n:.4f}): the {n}-image test split cannot resolve it; "
                                                      f"allowed: 0 (no drop at all) or >= {1 / n:.4f}")
        lowest = smallest_upper_bound(n, tol.confidence)
        if tol.decide == "upper_bound" and tol.value < lowest:
            raise RecipeError(path, f"{where}.decide", f"'upper_bound' with {tol.value} can never pass on {n} test "
                                                       f"images: even a model that agrees with the baseline on every "
                                                       f"image has an interval top of {lowest:.4f}; allowed: a "
                                                       f"tolerance >= {lowest:.4f}, 'point', or a larger test split")


def _check_select(recipe: Recipe, path) -> None:
    """The candidate is chosen on a cell the benchmark really measures."""
    sel, bm = recipe.select, recipe.benchmark
    if sel.objective.startswith("latency") or sel.objective == "throughput":
        if sel.runtime not in bm.runtimes:
            raise RecipeError(path, "select.runtime", f"{sel.runtime!r} is not benchmarked; allowed: {bm.runtimes}")
        if sel.batch_size not in bm.batch_sizes:
            raise RecipeError(path, "select.batch_size",
                              f"batch size {sel.batch_size} is not benchmarked; allowed: {bm.batch_sizes}")


def _check_graph(recipe: Recipe, path) -> None:
    names = set(recipe.variants) | {"baseline"}
    for vname, v in recipe.variants.items():
        if v.parent not in names:
            raise RecipeError(path, f"variants.{vname}.from",
                              f"unknown parent {v.parent!r}; allowed: {sorted(names - {vname})}")
        seen, cur = {vname}, v.parent
        while cur != "baseline":
            if cur in seen:
                raise RecipeError(path, f"variants.{vname}.from", f"the 'from' chain has a cycle through {cur!r}")
            seen.add(cur)
            cur = recipe.variants[cur].parent
    for vname, v in recipe.variants.items():
        parent_fws = recipe.frameworks_of(v.parent)
        if v.frameworks is not None and not set(v.frameworks) <= set(parent_fws):
            raise RecipeError(path, f"variants.{vname}.frameworks",
                              f"{sorted(set(v.frameworks) - set(parent_fws))} not among the frameworks of parent "
                              f"{v.parent!r}; allowed: {parent_fws}")
        method = get_method(v.method)
        for fw in recipe.frameworks_of(vname):
            parent_form = recipe.form(v.parent, fw)
            if not method.accepts(parent_form):
                others = [f for f in recipe.frameworks_of(vname) if f != fw]
                limit = (f"; or build this variant in the others only: 'frameworks: [{', '.join(others)}]'"
                         if others else "")
                why = (" (the baseline is the user's ONNX file: a method that needs the framework's model cannot "
                       "apply)" if fw == "onnx" else "")
                raise RecipeError(
                    path, f"variants.{vname}.method",
                    f"{v.method!r} works on {sorted(method.impls)} models, but parent {v.parent!r} is a "
                    f"{parent_form} model for framework {fw!r}{why}; methods for {parent_form} models: "
                    f"{methods_for(parent_form)}{limit}",
                )
        student = getattr(v.config, "student", None)
        if isinstance(student, ImportModel) and recipe.frameworks_of(vname) != [student.framework]:
            raise RecipeError(path, f"variants.{vname}.student.framework",
                              f"a {student.framework} student, but the variant is built in "
                              f"{recipe.frameworks_of(vname)}: a student is trained in its teacher's framework; "
                              f"add 'frameworks: [{student.framework}]' to the variant")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(path, "(file)", "file not found") from None
    except yaml.YAMLError as e:
        raise RecipeError(path, "(file)", f"not valid YAML: {e}") from None
    return parse_recipe(data, path)


def load_recipes(directory: str | Path) -> list[Recipe]:
    files = sorted(Path(directory).glob("*.yaml")) + sorted(Path(directory).glob("*.yml"))
    recipes = [load_recipe(f) for f in files]
    names = [r.name for r in recipes]
    for n in set(names):
        if names.count(n) > 1:
            dup = [r.source_path for r in recipes if r.name == n]
            raise RecipeError(dup[1], "name", f"family {n!r} is already declared by {dup[0]}")
    return recipes
