"""The on-disk model format: safetensors weights, a JSON description, optionally the AnnData.

A model directory holds ``<prefix>model.safetensors`` (the module's tensors),
``<prefix>model.json`` (class, init parameters, data registry, training state, cellvi
version, and the checksum of every file of the model, its own content included) and,
optionally, ``<prefix>adata.h5ad``. Reading it never executes code: safetensors, JSON and
h5ad are data only, unlike pickles. How a save replaces a model whole, and how readers are
kept from a half-written one, is in :mod:`cellvi.model.base._directory`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata
import torch
from anndata import AnnData
from safetensors.torch import load_file, save_file

from cellvi.model.base._directory import Staging, locked, recover, sha256, staging_folders

FORMAT_NAME = "cellvi-model"
FORMAT_VERSION = 2
# Far above what a real model writes (the split indices of 35 million cells take ~0.3 GB),
# far below what would exhaust memory when parsed.
MAX_DESCRIPTION_BYTES = 1 << 30
MAX_DESCRIPTION_DEPTH = 64
_SELF_CHECKSUM = "description_sha256"


class ModelFileError(ValueError):
    """A model directory that is missing, corrupt, tampered with, or of an unknown format."""


@dataclass(frozen=True)
class ModelPaths:
    """Where the files of one saved model live."""

    directory: Path
    prefix: str

    @property
    def weights(self) -> Path:
        """Module tensors (safetensors)."""
        return self.directory / f"{self.prefix}model.safetensors"

    @property
    def description(self) -> Path:
        """Everything else (JSON)."""
        return self.directory / f"{self.prefix}model.json"

    @property
    def adata(self) -> Path:
        """The AnnData, when saved with it (h5ad)."""
        return self.directory / f"{self.prefix}adata.h5ad"


@dataclass
class SavedModel:
    """What a model directory holds, read and checked.

    ``source`` is ``"cellvi"``, or ``"scvi-tools"`` when the weights carry scvi-tools'
    names and layouts (see :meth:`weights_for`).
    """

    description: dict[str, Any]
    weights: dict[str, torch.Tensor]
    adata: AnnData | None
    source: str = "cellvi"

    def weights_for(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The saved weights under ``module``'s names, ready for ``load_state_dict``."""
        if self.source == "cellvi":
            return self.weights
        try:
            return module.state_dict_from_scvi_tools(self.weights)
        except ValueError as error:
            raise ModelFileError(
                f"The scvi-tools weights do not fit {type(module).__name__}: {error}"
            ) from error


# Writing ----------------------------------------------------------------------------------


def write_model_files(
    paths: ModelPaths,
    state_dict: dict[str, torch.Tensor],
    description: dict[str, Any],
    overwrite: bool,
    write_adata: Callable[[Path], None] | None = None,
) -> None:
    """Save a model so that the directory holds the previous model or this one, whole.

    The files are written to a staging folder, flushed and committed in one atomic step
    (see :mod:`cellvi.model.base._directory`) under an exclusive lock of the directory.
    Files that cellvi did not write are never replaced or removed: a save that would have to
    is refused before anything is written.
    """
    directory = paths.directory
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with locked(directory, exclusive=True):
            recover(directory)
            previous = _check_targets(paths, overwrite, save_anndata=write_adata is not None)
            staging = Staging(directory)
            try:
                _write_staged(paths, staging, state_dict, description, write_adata, previous)
            finally:
                staging.discard()
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty: another process may have saved there too
        raise


def _unshared(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors on the CPU, each in its own memory, as safetensors requires.

    Modules may hold tensors that share memory (a Pyro AutoGuide initialised to the prior
    mean keeps a view of the model's buffer): each such tensor is written as its own copy.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key in seen or tensor.numel() * tensor.element_size() != storage.nbytes():
            tensor = tensor.clone()
        seen.add((tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()))
        tensors[name] = tensor
    return tensors


def _write_staged(
    paths: ModelPaths,
    staging: Staging,
    state_dict: dict[str, torch.Tensor],
    description: dict[str, Any],
    write_adata: Callable[[Path], None] | None,
    previous: dict[str, str],
) -> None:
    save_file(_unshared(state_dict), str(staging.file(paths.weights.name)))
    names = [paths.weights.name]
    if write_adata is not None:
        write_adata(staging.file(paths.adata.name))
        names.append(paths.adata.name)
    files = {name: sha256(staging.file(name)) for name in names}
    sealed = seal({**description, "files": files})
    staging.file(paths.description.name).write_text(json.dumps(sealed, indent=1, allow_nan=True))
    obsolete = {name: digest for name, digest in previous.items() if name not in files}
    staging.commit([*names, paths.description.name], obsolete)


def _check_targets(paths: ModelPaths, overwrite: bool, save_anndata: bool) -> dict[str, str]:
    """Refuse a save that would replace a model without ``overwrite`` or a file not cellvi's.

    Returns the files of the model saved there before (name -> checksum), empty if none.
    """
    previous: dict[str, str] = {}
    if paths.description.exists():
        try:
            description = read_description(paths)
        except ModelFileError as error:
            raise FileExistsError(
                f"{paths.description} exists but is not a valid cellvi model ({error}); cellvi "
                "does not replace files it did not write. Move it, or save elsewhere or with "
                "another prefix."
            ) from error
        if not overwrite:
            raise FileExistsError(
                f"{paths.description} already holds a saved model; pass overwrite=True to "
                "replace it."
            )
        previous = saved_files(paths, description)
    targets = [paths.weights] + ([paths.adata] if save_anndata else [])
    for target in targets:
        if target.exists() and (
            target.name not in previous or sha256(target) != previous[target.name]
        ):
            raise FileExistsError(
                f"{target} exists and was not written by cellvi for the model saved there (or "
                "was changed since); cellvi does not replace it. Move it, or save elsewhere or "
                "with a prefix."
            )
    return previous


def seal(description: dict[str, Any]) -> dict[str, Any]:
    """``description`` with the checksum of its own content added."""
    return {**description, _SELF_CHECKSUM: _content_checksum(description)}


def _content_checksum(description: dict[str, Any]) -> str:
    content = {key: value for key, value in description.items() if key != _SELF_CHECKSUM}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return sha256_of_text(canonical)


def sha256_of_text(text: str) -> str:
    """Hex SHA-256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


# Reading ----------------------------------------------------------------------------------


def read_model_files(paths: ModelPaths, model_class: str, read_adata: bool) -> SavedModel:
    """Read and check a model's description, weights and (if asked) AnnData.

    No code is executed. An interrupted save is finished first (or, without write access,
    reported); the files are then read under a shared lock, so a save running meanwhile is
    either wholly before or wholly after this read.
    """
    if not paths.description.is_file():
        raise ModelFileError(
            f"No saved model at {paths.directory} (missing {paths.description.name}); check the "
            "path and the prefix."
        )
    _finish_interrupted_saves(paths.directory)
    with locked(paths.directory, exclusive=False):
        description = read_description(paths)
        if description["model_class"] != model_class:
            raise ModelFileError(
                f"{paths.directory} holds a {description['model_class']} model; load it with "
                f"{description['model_class']}.load, not {model_class}.load."
            )
        files = saved_files(paths, description)
        weights = _read_weights(paths, files)
        adata = _read_adata(paths, files) if read_adata else None
    return SavedModel(description, weights, adata)


def read_description(paths: ModelPaths) -> dict[str, Any]:
    """Parse and check ``model.json``: size and nesting limits, format, its own checksum."""
    path = paths.description
    size = path.stat().st_size
    if size > MAX_DESCRIPTION_BYTES:
        raise ModelFileError(
            f"{path} is {size / 2**20:.0f} MiB, more than any model description needs "
            f"({MAX_DESCRIPTION_BYTES // 2**20} MiB at most): it is not a cellvi model file."
        )
    try:
        description = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path} is not valid JSON (corrupt file): {error}") from error
    except RecursionError as error:
        raise ModelFileError(f"{path} is nested too deeply to be a model description.") from error
    if _depth(description) > MAX_DESCRIPTION_DEPTH:
        raise ModelFileError(f"{path} is nested too deeply to be a model description.")
    _check_description(description, path)
    return description


def saved_files(paths: ModelPaths, description: dict[str, Any]) -> dict[str, str]:
    """The files of a saved model besides its description: name -> checksum."""
    if description["format_version"] == 1:
        # Version 1 recorded only the weights' checksum.
        files = {paths.weights.name: description["weights_sha256"]}
        if paths.adata.is_file():
            files[paths.adata.name] = sha256(paths.adata)
        return files
    return dict(description["files"])


def _finish_interrupted_saves(directory: Path) -> None:
    if not staging_folders(directory):
        return
    try:
        with locked(directory, exclusive=True):
            recover(directory)
    except OSError as error:
        if any((folder / "commit.json").exists() for folder in staging_folders(directory)):
            raise ModelFileError(
                f"A save into {directory} was interrupted after it committed, and finishing it "
                f"needs write access ({error}). Load it once where the directory is writable."
            ) from error


def _read_weights(paths: ModelPaths, files: dict[str, str]) -> dict[str, torch.Tensor]:
    name = paths.weights.name
    if not paths.weights.is_file():
        raise ModelFileError(f"{paths.weights} is missing; the saved model is incomplete.")
    if name not in files or sha256(paths.weights) != files[name]:
        raise ModelFileError(
            f"{paths.weights} does not match the checksum recorded in "
            f"{paths.description.name}: the file was modified, swapped or is corrupt."
        )
    try:
        return load_file(str(paths.weights))
    except Exception as error:  # safetensors raises its own error types
        raise ModelFileError(f"{paths.weights} cannot be read as safetensors: {error}") from error


def _read_adata(paths: ModelPaths, files: dict[str, str]) -> AnnData:
    name = paths.adata.name
    if name not in files or not paths.adata.is_file():
        raise ModelFileError(
            f"{paths.directory} holds no AnnData (saved without save_anndata=True); pass the "
            "data: load(dir_path, adata=adata)."
        )
    if sha256(paths.adata) != files[name]:
        raise ModelFileError(
            f"{paths.adata} does not match the checksum recorded in {paths.description.name}: "
            "it was modified or swapped for other data. Pass the data explicitly "
            "(load(dir_path, adata=adata)) or restore the saved file."
        )
    return anndata.read_h5ad(paths.adata)


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _check_description(description: Any, path: Path) -> None:
    if not isinstance(description, dict) or description.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not a cellvi model description.")
    version = description.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses model format version {version!r}, but this cellvi reads versions up "
            f"to {FORMAT_VERSION} (the file was written by cellvi "
            f"{description.get('cellvi_version', '?')}). Upgrade cellvi to load it."
        )
    required = {
        "model_class": str,
        "init_params": dict,
        "registry": dict,
        "attributes": dict,
        **({"weights_sha256": str} if version == 1 else {"files": dict, _SELF_CHECKSUM: str}),
    }
    for key, kind in required.items():
        if not isinstance(description.get(key), kind):
            raise ModelFileError(f"{path} lacks a valid {key!r} entry (corrupt or tampered).")
    if version >= 2 and description[_SELF_CHECKSUM] != _content_checksum(description):
        raise ModelFileError(
            f"{path} does not match its own recorded checksum: it was edited or is corrupt. "
            "Restore the saved file; cellvi does not load a model whose description changed."
        )
