"""Storing any PyTorch model this pipeline produced (pruned, factorized) in one safetensors file, without pickle.

The file holds the state dict and, in its metadata, what rebuilds the module: the model source, the input spec, and
the edits compression made to the built module, found on save by comparing the module with a fresh build of its
source: modules replaced by an allowed class (``pytorch_layers.REPLACEMENTS``) and each module's changed plain
attributes (in/out channels, features, groups, num_features, ...). ``load`` builds the source (no seed, no weights
file), applies the edits, gives every parameter and buffer its stored shape and loads the state dict strictly.

A stored model names its builder, which ``load`` imports and calls, as building the recipe does: load model files
this pipeline wrote (the artifact root), as you would run the recipe they came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import TypeAdapter
from torch import nn

from compression_pipeline.errors import ArtifactError, ModelError
from compression_pipeline.frameworks.pytorch_build import construct, describe, mismatches, origin
from compression_pipeline.frameworks.pytorch_layers import REPLACEMENTS
from compression_pipeline.types import InputSpec, ModelSource

FORMAT = "compression_pipeline.torch/1"
_PLAIN = (bool, int, float, str, type(None))


def _plain_attributes(module: nn.Module) -> dict:
    """The module's public plain-valued attributes (numbers, strings, tuples of them): its configuration."""
    def plain(v):
        return isinstance(v, _PLAIN) or (isinstance(v, (tuple, list)) and all(plain(x) for x in v))

    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training" and plain(v)}


def _fresh(source, spec) -> nn.Module:
    # Building draws initial weights; they are thrown away, so the caller's random stream is left as it was.
    with torch.random.fork_rng(devices=[]):
        return construct(source, spec)


def edits_of(model: nn.Module) -> dict:
    """How ``model`` differs from a fresh build of its source, as JSON values; refuses what cannot be rebuilt."""
    source, spec = origin(model)
    reference = _fresh(source, spec)
    replaced, attributes = [], {}
    for name, module in model.named_modules():  # parents before children: a replacement's children follow it
        try:
            ref = reference.get_submodule(name)
        except AttributeError:
            raise ModelError(f"cannot store the model: module {name!r} ({type(module).__name__}) is not in a fresh "
                             f"build of {describe(source)} nor inside an allowed replacement") from None
        if type(module) is not type(ref):
            cls = type(module).__name__
            if REPLACEMENTS.get(cls) is not type(module):
                raise ModelError(f"cannot store the model: module {name!r} is a {cls} in place of the "
                                 f"{type(ref).__name__} {describe(source)} builds; only {sorted(REPLACEMENTS)} "
                                 f"(compression_pipeline.frameworks.pytorch_layers) may replace a module")
            args = module.init_args() if hasattr(module, "init_args") else {}
            reference.set_submodule(name, REPLACEMENTS[cls](**args))
            replaced.append({"module": name, "class": cls, "args": args})
            ref = reference.get_submodule(name)
        before = _plain_attributes(ref)
        changed = {k: v for k, v in _plain_attributes(module).items() if k not in before or before[k] != v}
        if changed:
            attributes[name] = changed
    gone = sorted(set(dict(reference.named_modules())) - set(dict(model.named_modules())))
    extra = sorted(set(model.state_dict()) ^ set(reference.state_dict()))
    if gone or extra:
        raise ModelError(f"cannot store the model: it differs from a fresh build of {describe(source)} in ways a "
                         f"rebuild cannot repeat: modules removed {gone}, state entries differing {extra[:8]} (a "
                         f"reparametrization such as torch.nn.utils.prune still attached? remove it first)")
    return {"replaced": replaced, "attributes": attributes}


def metadata(model: nn.Module) -> dict[str, str]:
    """What rebuilds ``model`` besides its tensors (strings, as safetensors metadata holds them)."""
    source, spec = origin(model)
    return {"format": FORMAT, "source": source.model_dump_json(), "spec": spec.model_dump_json(),
            "edits": json.dumps(edits_of(model))}


def save(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    meta = metadata(model)
    # Copies: tied (shared) tensors would be refused by save_file, and nothing of the live model is handed out.
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def _as_stored(value, current):
    # JSON turns tuples into lists; give an attribute back the kind of value the fresh module holds.
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(_as_stored(v, c) for v, c in zip(value, current)) if len(value) == len(current) else tuple(value)
    return value


def _apply(model: nn.Module, edits: dict, path: Path) -> None:
    try:
        for r in edits["replaced"]:
            if r["class"] not in REPLACEMENTS:
                raise ArtifactError(f"{path}: module {r['module']!r} is stored as a {r['class']}, which is not one "
                                    f"of the allowed replacements {sorted(REPLACEMENTS)}")
            model.set_submodule(r["module"], REPLACEMENTS[r["class"]](**r["args"]))
        for name, attrs in edits["attributes"].items():
            module = model.get_submodule(name)
            for k, v in attrs.items():
                setattr(module, k, _as_stored(v, getattr(module, k, None)))
    except (KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{path}: its stored edits do not apply to a fresh build of the model: "
                            f"{type(e).__name__}: {e}") from None


def _reshape(model: nn.Module, state: dict) -> None:
    """Give every parameter and buffer the stored shape and dtype (a pruned layer's are smaller than a fresh one's)."""
    for key, tensor in state.items():
        owner_name, _, leaf = key.rpartition(".")
        try:
            owner = model.get_submodule(owner_name)
        except AttributeError:
            continue  # an entry the model has no place for: reported by the strict check that follows
        current = getattr(owner, leaf, None)
        if not isinstance(current, torch.Tensor) or (current.shape, current.dtype) == (tensor.shape, tensor.dtype):
            continue
        empty = torch.empty_like(tensor)
        setattr(owner, leaf, nn.Parameter(empty, current.requires_grad) if isinstance(current, nn.Parameter) else empty)


def load(path: Path) -> nn.Module:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:  # a pickle (torch.save) in its place, a truncated file: never unpickled
        raise ArtifactError(f"{path} is not a readable safetensors model file ({e}); model files are never "
                            f"unpickled") from None
    return rebuild(meta, state, path)


def rebuild(meta: dict[str, str], state: dict, path) -> nn.Module:
    """The module ``metadata`` described, with the tensors of ``state`` (a safetensors file's, or the compact
    format's); ``path`` names where they came from in errors."""
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{path} is a safetensors file without this project's model metadata (format {FORMAT!r}, "
                            f"source, spec, edits): its tensors alone cannot rebuild a model")
    try:
        source = TypeAdapter(ModelSource).validate_json(meta["source"])
        spec = InputSpec.model_validate_json(meta["spec"])
        edits = json.loads(meta["edits"])
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"{path}: its model metadata is malformed: {e}") from None
    model = _fresh(source, spec)
    _apply(model, edits, path)
    _reshape(model, state)
    problems = mismatches(model.state_dict(), state)
    if problems:
        raise ArtifactError(f"{path}: its tensors do not fit the rebuilt {describe(source)}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model.eval()
