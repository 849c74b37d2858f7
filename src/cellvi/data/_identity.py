"""The identity of a registered AnnData: its ``adata.uns["_scvi_uuid"]``, one per object."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from uuid import uuid4

from anndata import AnnData

from cellvi.data._constants import SETUP_UUID_KEY

if TYPE_CHECKING:
    from cellvi.data._manager import AnnDataManager


def stamp_identity(adata: AnnData) -> str:
    """Give ``adata`` a UUID if it has none yet (an existing one is kept); return it."""
    return adata.uns.setdefault(SETUP_UUID_KEY, str(uuid4()))


def separate_copy(adata: AnnData, holders: Iterable[AnnDataManager | None]) -> None:
    """Give ``adata`` a fresh UUID when one of ``holders`` holds another AnnData under its UUID.

    ``adata.copy()`` copies ``uns`` and with it the source's UUID, so the copy would be
    mistaken for the source in every store keyed by UUID; this is the one place that tells
    them apart. Managers whose AnnData was dropped hold nothing and never conflict.
    """
    uuid = adata.uns.get(SETUP_UUID_KEY)
    for holder in holders:
        held = None if holder is None else holder.adata
        if held is not None and held is not adata and held.uns.get(SETUP_UUID_KEY) == uuid:
            adata.uns[SETUP_UUID_KEY] = str(uuid4())
            return
