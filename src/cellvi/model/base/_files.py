"""The on-disk model format: safetensors weights plus a JSON description, written atomically.

A model directory holds ``<prefix>model.safetensors`` (the module's tensors),
``<prefix>model.json``
(class, init parameters, data registry, training state, cellvi version, weights checksum) and,
optionally, ``<prefix>adata.h5ad``. Reading it never executes code: safetensors and JSON are
data only, unlike pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

FORMAT_NAME = "cellvi-model"
FORMAT_VERSION = 1


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


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_model_files(
    paths: ModelPaths,
    state_dict: dict[str, torch.Tensor],
    description: dict[str, Any],
    overwrite: bool,
    write_adata: Callable[[Path], None] | None = None,
) -> None:
    """Write a model's files so that a failure leaves no half-written model behind.

    Every file is first written under a temporary name in the target directory, then moved
    into place with atomic renames, the JSON last: a reader that finds the JSON finds
    weights whose checksum it records.
    """
    targets = [paths.weights, paths.description] + ([paths.adata] if write_adata else [])
    existing = [target for target in targets if target.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]} already exists; pass overwrite=True to replace the saved model."
        )
    created_directory = not paths.directory.exists()
    paths.directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cellvi-save-", dir=paths.directory))
    try:
        staged_weights = staging / paths.weights.name
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
        save_file(tensors, str(staged_weights))
        description = {**description, "weights_sha256": sha256(staged_weights)}
        staged_description = staging / paths.description.name
        staged_description.write_text(json.dumps(description, indent=1, allow_nan=True))
        staged = [(staged_weights, paths.weights)]
        if write_adata is not None:
            staged_adata = staging / paths.adata.name
            write_adata(staged_adata)
            staged.append((staged_adata, paths.adata))
        staged.append((staged_description, paths.description))
        if write_adata is None and paths.adata.exists():
            # Only reachable with overwrite=True: the replaced model's AnnData must not be
            # loaded with the new model, which was saved without one.
            paths.adata.unlink()
        for source, target in staged:
            os.replace(source, target)
    except BaseException:
        if created_directory:
            shutil.rmtree(paths.directory, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_model_files(
    paths: ModelPaths, model_class: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check a model's description and weights (no code is executed)."""
    if not paths.description.is_file():
        raise ModelFileError(
            f"No saved model at {paths.directory} (missing {paths.description.name}); check the "
            "path and the prefix."
        )
    try:
        description = json.loads(paths.description.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(
            f"{paths.description} is not valid JSON (corrupt file): {error}"
        ) from error
    _check_description(description, paths, model_class)
    if not paths.weights.is_file():
        raise ModelFileError(f"{paths.weights} is missing; the saved model is incomplete.")
    if sha256(paths.weights) != description["weights_sha256"]:
        raise ModelFileError(
            f"{paths.weights} does not match the checksum recorded in {paths.description.name}: "
            "the file was modified or is corrupt."
        )
    try:
        weights = load_file(str(paths.weights))
    except Exception as error:  # safetensors raises its own error types
        raise ModelFileError(f"{paths.weights} cannot be read as safetensors: {error}") from error
    return description, weights


def _check_description(description: Any, paths: ModelPaths, model_class: str) -> None:
    if not isinstance(description, dict) or description.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{paths.description} is not a cellvi model description.")
    version = description.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{paths.description} uses model format version {version!r}, but this cellvi "
            f"({description.get('cellvi_version', '?')} wrote it) reads versions up to "
            f"{FORMAT_VERSION}. Upgrade cellvi to load it."
        )
    required = {
        "model_class": str,
        "init_params": dict,
        "registry": dict,
        "attributes": dict,
        "weights_sha256": str,
    }
    for key, kind in required.items():
        if not isinstance(description.get(key), kind):
            raise ModelFileError(
                f"{paths.description} lacks a valid {key!r} entry (corrupt or tampered)."
            )
    if description["model_class"] != model_class:
        raise ModelFileError(
            f"{paths.directory} holds a {description['model_class']} model; load it with "
            f"{description['model_class']}.load, not {model_class}.load."
        )
