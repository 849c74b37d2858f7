"""MuData support without importing mudata: a MuData exists only if mudata was imported."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeAlias

from anndata import AnnData

if TYPE_CHECKING:
    from mudata import MuData

AnnOrMuData: TypeAlias = "AnnData | MuData"


def is_mudata(data: Any) -> bool:
    """Whether ``data`` is a :class:`mudata.MuData` (mudata stays an optional dependency)."""
    mudata = sys.modules.get("mudata")
    return mudata is not None and isinstance(data, mudata.MuData)


def get_modality(data: AnnOrMuData, mod_key: str | None) -> AnnOrMuData:
    """The modality ``mod_key`` of a MuData, or the data themselves for ``mod_key=None``.

    Raises
    ------
    ValueError
        If ``mod_key`` is given for an AnnData, or names no modality of the MuData.
    """
    if mod_key is None:
        return data
    if not is_mudata(data):
        raise ValueError(
            f"This field reads modality {mod_key!r} of a MuData, but got a "
            f"{type(data).__name__}; register a MuData, or use the AnnData field instead."
        )
    if mod_key not in data.mod:
        raise ValueError(f"Modality {mod_key!r} is not in mdata.mod (present: {list(data.mod)}).")
    return data.mod[mod_key]


def modalities(data: AnnOrMuData) -> dict[str | None, AnnOrMuData]:
    """The objects a registration may write to: the data (key None) and each modality."""
    parts: dict[str | None, AnnOrMuData] = {None: data}
    if is_mudata(data):
        parts.update(data.mod)
    return parts
