"""Models saved by scvi-tools load into cellvi as data only, and compute the same numbers.

The numeric comparison needs scvi-tools' own environment (``make bench-env``, or the python
named by ``CELLVI_REFERENCE_PYTHON``) to save the reference models; it is skipped without one.
The restricted reader and the files of scvi-tools' test suite are checked everywhere.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import cellvi
from cellvi.model import SCVI, CondSCVI
from cellvi.model.base import ModelFileError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_PYTHON = Path(
    os.environ.get("CELLVI_REFERENCE_PYTHON", ROOT / ".venv-scvi-tools" / "bin" / "python")
)
PEER_TESTS = ROOT.parent / "shared" / "peer-tests" / "scvi-tools-1.4.2-tests.tar.gz"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    if not REFERENCE_PYTHON.exists():
        pytest.skip(f"no scvi-tools environment at {REFERENCE_PYTHON} (make bench-env)")
    out = tmp_path_factory.mktemp("reference")
    script = ROOT / "benchmarks" / "_scvi_tools_reference.py"
    subprocess.run(
        [str(REFERENCE_PYTHON), str(script), "--out", str(out)], check=True, capture_output=True
    )
    return out


def _cellvi_outputs(model, adata) -> dict[str, np.ndarray]:
    module = model.module
    loader = model._make_dataloader(adata=adata, indices=np.arange(64), batch_size=64)
    tensors = next(iter(loader))
    with torch.no_grad():
        inference = module.inference(**module._get_inference_input(tensors))
        qz = inference["qz"]
        # Means instead of draws, so both libraries decode the same point.
        means = {"z": qz.loc}
        if inference.get("ql") is not None:
            means["library"] = inference["ql"].loc
        generative_inputs = module._get_generative_input(tensors, {**inference, **means})
        px = module.generative(**generative_inputs)["px"]
    values = {"qz_loc": qz.loc, "qz_scale": qz.scale}
    for name in ("mu", "theta", "zi_logits", "rate", "loc", "scale"):
        if isinstance(getattr(px, name, None), torch.Tensor):
            values[f"px_{name}"] = getattr(px, name)
    return {name: value.numpy() for name, value in values.items()}


NAMES = [
    "scvi_default",
    "scvi_covariates",
    "scvi_embedding",
    "scvi_gene_label",
    "scvi_gene_cell",
    "condscvi_batches",
    "condscvi_weighted",
]


@pytest.mark.parametrize("name", NAMES)
def test_an_scvi_tools_model_computes_the_same_in_cellvi(reference, name, tmp_path) -> None:
    directory = reference / name
    model_class = {"SCVI": SCVI, "CondSCVI": CondSCVI}[
        json.loads((reference / "index.json").read_text())[name]
    ]
    model = model_class.load(directory, accelerator="cpu")
    assert model.is_trained_ and model.history_ is not None
    expected = dict(np.load(directory / "outputs.npz"))
    got = _cellvi_outputs(model, model.adata)
    for key, value in expected.items():
        if key == "px_scale" and key not in got:
            continue  # scvi-tools' Normal likelihood stores its std as ``scale``
        got_value, value = np.broadcast_arrays(got[key], value)
        np.testing.assert_allclose(got_value, value, rtol=1e-4, atol=1e-5, err_msg=key)
    # Saved again, it is a cellvi model: safetensors and JSON, and the same numbers.
    model.save(tmp_path / "again", save_anndata=True)
    again = model_class.load(tmp_path / "again", accelerator="cpu")
    assert not list((tmp_path / "again").glob("*.pt"))
    # The posterior's moments (a logistic-normal latent's mean is a Monte Carlo estimate).
    for moment, expected_moment in zip(
        again.get_latent_representation(return_dist=True),
        model.get_latent_representation(return_dist=True),
        strict=True,
    ):
        np.testing.assert_array_equal(moment, expected_moment)


def _peer_test_file(member: str, target: Path) -> Path:
    if not PEER_TESTS.exists():
        pytest.skip(f"{PEER_TESTS} is absent (../shared beside the project)")
    with tarfile.open(PEER_TESTS) as archive:
        target.write_bytes(archive.extractfile(member).read())
    return target


def test_the_condscvi_file_of_scvi_tools_tests_loads(tmp_path) -> None:
    directory = tmp_path / "condscvi"
    directory.mkdir()
    _peer_test_file("tests/test_data/condscvi_pre_batch/model.pt", directory / "model.pt")
    adata = cellvi.data.synthetic_iid(n_batches=1, n_labels=5)
    model = CondSCVI.load(directory, adata=adata, accelerator="cpu")
    latent = model.get_latent_representation()
    assert latent.shape == (adata.n_obs, 5) and np.isfinite(latent).all()
    assert list(model.history_)[:2] == ["train_loss", "elbo_train"]


class _Payload:
    """What a malicious pickle does: call something on load."""

    def __reduce__(self):
        return (os.system, ("echo should not run",))


def _model_pt(content: object, path: Path) -> Path:
    torch.save(content, path)
    return path


def test_the_reader_refuses_a_file_that_would_run_code(tmp_path, capfd) -> None:
    directory = tmp_path / "evil"
    directory.mkdir()
    content = {"model_state_dict": {}, "attr_dict": {"registry_": _Payload()}, "var_names": []}
    _model_pt(content, directory / "model.pt")
    with pytest.raises(ModelFileError, match=r"asks to run (posix|os)\.system"):
        SCVI.load(directory, adata=cellvi.data.synthetic_iid())
    assert "should not run" not in capfd.readouterr().out


def test_the_reader_refuses_other_model_classes_and_non_model_files(tmp_path) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    registry = {"model_name": "TOTALVI", "setup_args": {}, "field_registries": {}}
    _model_pt(
        {"model_state_dict": {}, "attr_dict": {"registry_": registry}}, directory / "model.pt"
    )
    with pytest.raises(ModelFileError, match="scvi-tools TOTALVI model"):
        SCVI.load(directory, adata=cellvi.data.synthetic_iid())
    _model_pt([1, 2, 3], directory / "model.pt")
    with pytest.raises(ModelFileError, match="not an scvi-tools model file"):
        SCVI.load(directory, adata=cellvi.data.synthetic_iid())


def test_tensors_arrays_and_containers_are_read(tmp_path) -> None:
    from cellvi.model.base._scvi_tools_files import _RestrictedPickle

    content = {"t": torch.arange(3.0), "a": np.array(["x", "y"], dtype=object), "n": [1, (2,)]}
    buffer = io.BytesIO()
    torch.save(content, buffer)
    buffer.seek(0)
    back = torch.load(buffer, pickle_module=_RestrictedPickle, weights_only=False)
    assert torch.equal(back["t"], content["t"]) and back["a"].tolist() == ["x", "y"]
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue())) and pickle.HIGHEST_PROTOCOL >= 2
