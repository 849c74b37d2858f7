"""The main cellvi job on a built-in dataset: simulate counts, register them, describe them."""

from __future__ import annotations

import time

import cellvi
from cellvi import REGISTRY_KEYS
from cellvi.data import AnnDataManager
from cellvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
)


def main() -> None:
    """Simulate a dataset, register it as a model would, and print what was registered."""
    cellvi.settings.seed = 0
    start = time.perf_counter()
    adata = cellvi.data.simulate(n_cells=5_000, n_genes=1_000, n_batches=3, n_cell_types=6)
    print(f"Simulated {adata.n_obs} cells x {adata.n_vars} genes in {time.perf_counter() - start:.2f} s")
    print(adata)
    manager = AnnDataManager(
        fields=[
            LayerField(REGISTRY_KEYS.X_KEY, None, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch"),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, "cell_type"),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, None, required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, None),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, None),
        ],
        setup_method_args={"model_name": "demo", "setup_args": {"batch_key": "batch"}},
    )
    manager.register_fields(adata)
    manager.view_registry()


if __name__ == "__main__":
    main()
