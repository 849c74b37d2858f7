"""Reference mapping onto a reference that scvi-tools trained and saved (``model.pt``).

Needs scvi-tools' own environment (``make bench-env``, or the python named by
``CELLVI_REFERENCE_PYTHON``) to save the reference; skipped without one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anndata
import numpy as np
import pytest
import torch

import cellvi
from cellvi.model import SCVI

from ._model_helpers import TRAIN_KW

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_PYTHON = Path(
    os.environ.get("CELLVI_REFERENCE_PYTHON", ROOT / ".venv-scvi-tools" / "bin" / "python")
)
SAVE = """
import sys, numpy as np, scvi
scvi.settings.seed = 0
adata = scvi.data.synthetic_iid(batch_size=50, n_genes=30, n_batches=2)
adata.obs["donor"] = np.random.default_rng(0).choice(["a", "b"], size=adata.n_obs)
scvi.model.SCVI.setup_anndata(adata, batch_key="batch", categorical_covariate_keys=["donor"])
model = scvi.model.SCVI(adata, n_hidden=16, n_latent=3, encode_covariates=True)
model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
model.save(sys.argv[1], save_anndata=True)
"""


@pytest.fixture(scope="module")
def scvi_tools_reference(tmp_path_factory) -> Path:
    if not REFERENCE_PYTHON.exists():
        pytest.skip(f"no scvi-tools environment at {REFERENCE_PYTHON} (make bench-env)")
    directory = tmp_path_factory.mktemp("scvi_tools") / "reference"
    subprocess.run(
        [str(REFERENCE_PYTHON), "-c", SAVE, str(directory)], check=True, capture_output=True
    )
    return directory


def _query(reference: Path):
    genes = anndata.read_h5ad(reference / "adata.h5ad").var_names
    query = cellvi.data.synthetic_iid(batch_size=40, n_genes=len(genes), n_batches=1)
    query.var_names = genes
    query.obs["batch"] = query.obs["batch"].cat.rename_categories(["new"])
    query.obs["donor"] = np.random.default_rng(1).choice(["a", "c"], size=query.n_obs)
    return query


def test_a_query_maps_onto_an_scvi_tools_reference_by_directory_or_loaded(
    scvi_tools_reference,
):
    loaded = SCVI.load(scvi_tools_reference, accelerator="cpu")
    reference = loaded.module.state_dict()
    by_model = SCVI.load_query_data(_query(scvi_tools_reference), loaded, accelerator="cpu")
    by_path = SCVI.load_query_data(
        _query(scvi_tools_reference), scvi_tools_reference, accelerator="cpu"
    )
    for query in (by_model, by_path):
        assert query.summary_stats.n_batch == 3
        state = query.module.state_dict()
        for name, tensor in reference.items():
            part = state[name][tuple(slice(0, size) for size in tensor.shape)]
            assert torch.equal(part, tensor), name
    by_path.train(max_epochs=2, **TRAIN_KW)
    state = by_path.module.state_dict()
    for name in ("z_encoder.encoder.linears.0.weight", "decoder.px_decoder.linears.0.weight"):
        assert torch.equal(state[name], reference[name])
    table = "z_encoder.encoder.linears.0.cat_weights.0"
    assert torch.equal(state[table][:2], reference[table])
    assert by_path.get_latent_representation().shape == (40, 3)
    names = SCVI.prepare_query_anndata(
        _query(scvi_tools_reference), scvi_tools_reference, return_reference_var_names=True
    )
    assert len(names) == 30
