"""The keys cellvi writes on an AnnData when it registers it."""

from __future__ import annotations

# The names below keep scvi-tools' spelling on purpose: users' notebooks read
# ``adata.uns["_scvi_uuid"]`` and ``adata.obs["_scvi_batch"]``, and the seed-004 walk-through
# must run unchanged with ``import cellvi as scvi``.
SETUP_UUID_KEY = "_scvi_uuid"
MANAGER_UUID_KEY = "_scvi_manager_uuid"
INTERNAL_PREFIX = "_scvi_"
