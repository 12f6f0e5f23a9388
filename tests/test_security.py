"""Security: nothing untrusted is ever unpickled, user paths stay inside their roots, the UI listens on loopback.

(No secrets in run metadata or logs is checked against a real Postgres password in test_postgres.py.)
"""

import ast
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from compression_pipeline import data, stages
from compression_pipeline.artifacts import Artifact, ArtifactStore, Handle, HandleStore, sha256_file
from compression_pipeline.errors import ArtifactError, DatasetError, PipelineError
from compression_pipeline.recipe import Dataset, parse_recipe
from compression_pipeline.settings import PROJECT_ROOT

from conftest import TINY

PACKAGE = PROJECT_ROOT / "compression_pipeline"

# Calls that deserialize by running code from the file, unless made safe by the keyword shown.
UNSAFE_LOADERS = {"pickle.load", "pickle.loads", "cPickle.load", "dill.load", "dill.loads", "cloudpickle.load",
                  "cloudpickle.loads", "joblib.load", "marshal.load", "marshal.loads", "shelve.open",
                  "pd.read_pickle", "pandas.read_pickle", "yaml.unsafe_load", "yaml.full_load", "yaml.load",
                  "jsonpickle.decode", "eval", "exec"}
SAFE_ONLY_WITH = {"torch.load": ("weights_only", True), "np.load": ("allow_pickle", False),
                  "numpy.load": ("allow_pickle", False), "keras.models.load_model": ("safe_mode", True),
                  "keras.saving.load_model": ("safe_mode", True)}


def _name(func) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "<expr>")  # x().eval() is a method, not eval()
    return ".".join(reversed(parts))


def test_the_package_never_calls_an_unpickling_loader():
    """A guard for every future change: loaders that run code from a file are banned; torch.load needs
    weights_only=True, np.load allow_pickle=False, Keras load_model safe_mode=True, spelled out."""
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {name}"
            if name in UNSAFE_LOADERS:
                offences.append(where)
            for suffix, (kw, safe) in SAFE_ONLY_WITH.items():
                if name == suffix or name.endswith("." + suffix):
                    given = {k.arg: k.value for k in node.keywords}
                    if not (kw in given and isinstance(given[kw], ast.Constant) and given[kw].value is safe):
                        offences.append(f"{where} without {kw}={safe}")
    assert offences == []


class _Planted:
    """Unpickling this object runs code: it creates the file named in it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_planted_pickle_in_a_dataset_file_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Planted(str(marker))
    np.savez(tmp_path / "digits.npz", X=evil, y=np.zeros(1, np.int64))
    with pytest.raises(DatasetError, match="allow_pickle=False"):
        data.load_raw(Dataset(source="npz", path="digits.npz"), tmp_path)
    assert not marker.exists()


def test_a_planted_pickle_behind_a_valid_looking_handle_is_refused_and_never_run(tmp_path, digits_splits,
                                                                                 digits_spec):
    """Even an attacker who writes both the model file and its handle (with the right sha256) runs nothing:
    models are loaded from safetensors plus a spec, splits with allow_pickle=False."""
    import torch

    recipe = parse_recipe(TINY)
    store = ArtifactStore(tmp_path)
    marker = tmp_path / "pwned"
    for folder in ("tiny/torch_baseline", "tiny/splits"):
        (tmp_path / folder).mkdir(parents=True)
    model_file = tmp_path / "tiny/torch_baseline/evil.safetensors"
    torch.save({"w": _Planted(str(marker))}, model_file)
    model = Handle(artifact=Artifact(path="tiny/torch_baseline/evil.safetensors", format="safetensors",
                                     framework="torch", sha256=sha256_file(model_file),
                                     bytes=model_file.stat().st_size), info={"name": "baseline", "framework": "torch"})
    splits = Handle(artifact=store.write_bytes("tiny/splits", data.to_npz_bytes(digits_splits), "npz", "npz"),
                    info={"input_spec": digits_spec.model_dump(mode="json")})
    with pytest.raises(ArtifactError, match="evil.safetensors is not a readable safetensors model file"):
        stages.export_onnx(recipe, store, model, splits)
    evil_splits = tmp_path / "tiny/splits/evil.npz"
    obj = np.empty(1, dtype=object)
    obj[0] = _Planted(str(marker))
    np.savez(evil_splits, X_train=obj)
    bad = Handle(artifact=Artifact(path="tiny/splits/evil.npz", format="npz", sha256=sha256_file(evil_splits),
                                   bytes=evil_splits.stat().st_size), info=splits.info)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        stages.baseline(recipe, store, bad, "torch")
    assert not marker.exists()


def test_artifact_and_handle_paths_stay_inside_the_artifact_root(tmp_path):
    root, outside = tmp_path / "artifacts", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.onnx").write_bytes(b"not yours")
    store = ArtifactStore(root)
    (root / "fam").mkdir()
    (root / "fam/link").symlink_to(outside, target_is_directory=True)
    escape = Artifact(path="fam/link/secret.onnx", format="onnx", sha256="0" * 64, bytes=9)
    with pytest.raises(PipelineError, match="outside the allowed root"):
        store.path(escape)
    with pytest.raises(PipelineError, match="outside the allowed root"):
        store.write_bytes("fam/link", b"x", "bin", "bin")  # a symlinked folder cannot redirect a write either
    with pytest.raises(PipelineError, match="outside the allowed root"):
        store.path(escape.model_copy(update={"path": "/etc/passwd"}))
    with pytest.raises(PipelineError, match="outside the allowed root"):
        HandleStore(root).folder(("..", "..", "etc"))
    assert not list(outside.glob("*.bin")) and (outside / "secret.onnx").read_bytes() == b"not yours"


def test_dataset_symlinks_out_of_the_data_root_are_refused_naming_the_file(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    np.savez(tmp_path / "elsewhere.npz", X=np.zeros((3, 64)), y=np.zeros(3, np.int64))
    (root / "digits.npz").symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(DatasetError) as exc:
        data.load_raw(Dataset(source="npz", path="digits.npz"), root)
    assert str(root / "digits.npz") in str(exc.value) and "outside the allowed root" in str(exc.value)
    # A symlink that stays inside the root is an ordinary file.
    np.savez(root / "real.npz", X=np.zeros((3, 64)), y=np.zeros(3, np.int64))
    (root / "alias.npz").symlink_to(root / "real.npz")
    assert data.load_raw(Dataset(source="npz", path="alias.npz", classes=[0, 1]), root).X.shape == (3, 64)


def _ui_command(*overrides) -> str:
    out = subprocess.run(["make", "-n", "ui", *overrides], capture_output=True, text=True, cwd=PROJECT_ROOT,
                         check=True, env={**os.environ, "MAKEFLAGS": ""}).stdout
    (line,) = [ln for ln in out.splitlines() if "dagster dev" in ln]
    return line


def test_the_ui_listens_on_loopback_unless_told_otherwise():
    assert " -h 127.0.0.1 " in _ui_command()
    assert " -h 0.0.0.0 " in _ui_command("UI_HOST=0.0.0.0")
    # And `dagster dev` / `dagster-webserver` without a host also default to loopback.
    from dagster_webserver import cli

    (host,) = [p for p in cli.dagster_webserver.params if p.name == "host"]
    assert host.default == "127.0.0.1"


def test_dataset_files_are_read_only_from_the_configured_data_root(tmp_path, monkeypatch):
    """The data root comes from the environment (COMPRESSION_PIPELINE_DATA), never from the recipe."""
    from compression_pipeline.settings import Settings

    monkeypatch.setenv("COMPRESSION_PIPELINE_DATA", str(tmp_path / "team_data"))
    assert Settings.from_env().data_root == tmp_path / "team_data"
    assert Path(parse_recipe({**TINY, "dataset": {"source": "npz", "path": "a/b.npz"}}).dataset.path) == Path("a/b.npz")
