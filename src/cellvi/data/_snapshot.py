"""Undo a failed registration: what cellvi writes on an AnnData, captured before it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anndata import AnnData

from cellvi.data._constants import INTERNAL_PREFIX, MANAGER_UUID_KEY, SETUP_UUID_KEY

_MISSING = object()


@dataclass
class RegistrationSnapshot:
    """cellvi's own obs columns, obsm entries and uns keys of an AnnData at one moment."""

    obs: dict[str, Any] = field(default_factory=dict)
    obsm: dict[str, Any] = field(default_factory=dict)
    uns: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def take(cls, adata: AnnData) -> RegistrationSnapshot:
        """Capture cellvi's entries of ``adata`` (cheap: codes and small tables only)."""
        return cls(
            obs={k: adata.obs[k].copy() for k in adata.obs.columns if _ours(k)},
            obsm={k: adata.obsm[k].copy() for k in adata.obsm.keys() if _ours(k)},
            uns={k: adata.uns.get(k, _MISSING) for k in (SETUP_UUID_KEY, MANAGER_UUID_KEY)},
        )

    def restore(self, adata: AnnData) -> None:
        """Put cellvi's entries of ``adata`` back as they were when captured."""
        added_obs = [k for k in adata.obs.columns if _ours(k) and k not in self.obs]
        adata.obs.drop(columns=added_obs, inplace=True)
        for key, column in self.obs.items():
            adata.obs[key] = column
        for key in [k for k in adata.obsm.keys() if _ours(k) and k not in self.obsm]:
            del adata.obsm[key]
        for key, value in self.obsm.items():
            adata.obsm[key] = value
        for key, value in self.uns.items():
            if value is _MISSING:
                adata.uns.pop(key, None)
            else:
                adata.uns[key] = value


def _ours(key: str) -> bool:
    return str(key).startswith(INTERNAL_PREFIX)
