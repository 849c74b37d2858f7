"""How a registry reads to people: state registries with arrays, and printed tables."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

from cellvi.data import _constants as keys
from cellvi.utils import attrdict

if TYPE_CHECKING:
    from cellvi.data._manager import AnnDataManager


def state_registry_view(state: dict[str, Any], array_entries: tuple[str, ...]) -> attrdict:
    """A read-only copy of a state registry with its lists of names as numpy arrays.

    The registry keeps plain lists (it is saved as JSON); people compare and index names as
    arrays, as in scvi-tools. ``array_entries`` are the entries that list names; a mapping
    of such lists (``mappings`` of a covariate table) becomes a mapping of arrays.
    """
    view = copy.deepcopy(state)
    for name in array_entries:
        if isinstance(view.get(name), dict):
            view[name] = {key: _as_array(value) for key, value in view[name].items()}
        elif isinstance(view.get(name), list):
            view[name] = _as_array(view[name])
    return attrdict(view)


def _as_array(values: list) -> np.ndarray:
    # Names stay Python strings (object dtype, as pandas gives them), not fixed-width '<U'.
    is_text = any(isinstance(value, str) for value in values)
    return np.asarray(values, dtype=object if is_text else None)


def print_registry(manager: AnnDataManager, hide_state_registries: bool = False) -> None:
    """Print a manager's setup: setup arguments, summary, data locations, category codes."""
    registry = manager.registry
    console = Console()
    console.print(
        f"AnnData set up for {registry[keys._MODEL_NAME_KEY] or 'a model'} with cellvi "
        f"{registry[keys._CELLVI_VERSION_KEY]}; setup args: {registry[keys._SETUP_ARGS_KEY]}"
    )
    summary = Table(title="Summary statistics")
    summary.add_column("Statistic")
    summary.add_column("Value")
    for name, value in manager.summary_stats.items():
        summary.add_row(name, str(value))
    console.print(summary)
    locations = Table(title="Data registry")
    locations.add_column("Registry key")
    locations.add_column("AnnData location")
    for key, location in manager.data_registry.items():
        locations.add_row(key, _where(location))
    console.print(locations)
    if hide_state_registries:
        return
    for field in manager.fields:
        table = field.view_state_registry(manager._state_registry(field.registry_key))
        if table is not None:
            console.print(table)


def _where(location: dict[str, str | None]) -> str:
    """``adata.X``, ``adata.obs['_scvi_batch']`` or ``adata.mod['rna'].layers['counts']``."""
    where = "adata"
    if location.get(keys._DR_MOD_KEY) is not None:
        where += f".mod[{location[keys._DR_MOD_KEY]!r}]"
    if location[keys._DR_ATTR_KEY] is None:
        return f"{where}.{location[keys._DR_ATTR_NAME]}"
    return f"{where}.{location[keys._DR_ATTR_NAME]}[{location[keys._DR_ATTR_KEY]!r}]"
