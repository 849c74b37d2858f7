"""Undo a failed registration: what cellvi writes on an AnnData, captured before it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anndata import AnnData

from cellvi.data._constants import INTERNAL_PREFIX, MANAGER_UUID_KEY, SETUP_UUID_KEY
from cellvi.data._mudata import AnnOrMuData, modalities

_MISSING = object()


@dataclass
class _PartSnapshot:
    """cellvi's entries of one AnnData (or of a MuData's own obs, obsm and uns)."""

    obs_columns: list[Any] = field(default_factory=list)
    obs: dict[str, Any] = field(default_factory=dict)
    obsm: dict[str, Any] = field(default_factory=dict)
    uns: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def take(cls, adata: AnnData) -> _PartSnapshot:
        return cls(
            obs_columns=list(adata.obs.columns),
            obs={k: adata.obs[k].copy() for k in adata.obs.columns if _ours(k)},
            obsm={k: adata.obsm[k].copy() for k in adata.obsm.keys() if _ours(k)},
            uns={k: adata.uns.get(k, _MISSING) for k in (SETUP_UUID_KEY, MANAGER_UUID_KEY)},
        )

    def restore(self, adata: AnnData) -> None:
        # Every column added since goes, not only cellvi's: a field may fill a missing column.
        kept = set(self.obs_columns)
        adata.obs.drop(columns=[k for k in adata.obs.columns if k not in kept], inplace=True)
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


@dataclass
class RegistrationSnapshot:
    """cellvi's obs columns, obsm entries and uns keys of an AnnData (or of a MuData and each
    of its modalities) at one moment."""

    parts: dict[str | None, _PartSnapshot] = field(default_factory=dict)

    @classmethod
    def take(cls, adata: AnnOrMuData) -> RegistrationSnapshot:
        """Capture cellvi's entries of ``adata`` (cheap: codes and small tables only)."""
        return cls({key: _PartSnapshot.take(part) for key, part in modalities(adata).items()})

    def restore(self, adata: AnnOrMuData) -> None:
        """Put cellvi's entries of ``adata`` back as they were when captured."""
        for key, part in modalities(adata).items():
            if key in self.parts:
                self.parts[key].restore(part)


def _ours(key: str) -> bool:
    return str(key).startswith(INTERNAL_PREFIX)
