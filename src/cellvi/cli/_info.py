"""``cellvi info``: what a saved model is, without loading its weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cellvi.cli._errors import reported
from cellvi.cli._io import model_paths, saved_model_class
from cellvi.cli._options import output_options
from cellvi.model.base._files import read_description, saved_files

# Registry fields shown with their categories, and how they are named.
_CATEGORICAL = {"batch": "batch", "labels": "labels"}
_SHOWN_CATEGORIES = 12


@click.command("info", short_help="What a saved model is and how it was trained.")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--prefix", default=None, help="File-name prefix the model was saved with.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@output_options
@reported
def info(model_dir: Path, prefix: str | None, as_json: bool, quiet: bool) -> None:
    """What the model saved in MODEL_DIR is, its data registry and how it was trained.

    Reads the model's description (model.json, checksum verified) only: no weights are
    loaded, so it is fast on any model.

    \b
    Example:
      cellvi info pbmc_scvi
    """
    paths = model_paths(model_dir, prefix)
    saved_model_class(paths)
    description = read_description(paths)
    summary = _summary(paths.directory, description, saved_files(paths, description))
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(_text(summary))


def _summary(directory: Path, description: dict[str, Any], files: dict[str, str]) -> dict:
    registry = description["registry"]
    fields = registry.get("field_registries", {})
    x_state = fields.get("X", {}).get("state_registry", {})
    categories = {}
    for key, name in _CATEGORICAL.items():
        state = fields.get(key, {}).get("state_registry", {})
        if state.get("original_key") is not None:
            categories[name] = {
                "column": state["original_key"],
                "categories": list(state.get("categorical_mapping", [])),
            }
    covariates = fields.get("extra_categorical_covs", {}).get("state_registry", {})
    for column, values in (covariates.get("mappings") or {}).items():
        categories[f"covariate {column}"] = {"column": column, "categories": list(values)}
    continuous = fields.get("extra_continuous_covs", {}).get("state_registry", {})
    attributes = description["attributes"]
    history = attributes.get("history_") or {}
    last = {
        name: entry["values"][-1]
        for name, entry in history.items()
        if entry.get("values") and entry.get("index_name", "epoch") == "epoch"
    }
    epochs = max((len(entry["index"]) for entry in history.values()), default=0)
    return {
        "directory": str(directory),
        "model_class": description["model_class"],
        "cellvi_version": description.get("cellvi_version"),
        "format_version": description["format_version"],
        "parameters": _parameters(description["init_params"]),
        "setup_args": registry.get("setup_args", {}),
        "n_genes": x_state.get("n_vars"),
        "n_cells_at_setup": x_state.get("n_cells"),
        "categories": categories,
        "continuous_covariates": list(continuous.get("columns") or []),
        "trained": bool(attributes.get("is_trained_")),
        "epochs": epochs,
        "interrupted": bool(attributes.get("interrupted")),
        "cells": {
            split: len(attributes.get(f"{split}_indices") or [])
            for split in ("train", "validation", "test")
        },
        "last_epoch_metrics": last,
        "files": {
            name: (directory / name).stat().st_size if (directory / name).exists() else None
            for name in files
        },
    }


def _parameters(init_params: dict[str, Any]) -> dict[str, Any]:
    params = dict(init_params.get("non_kwargs", {}))
    for group in init_params.get("kwargs", {}).values():
        if isinstance(group, dict):
            params.update(group)
    return {
        key: value if isinstance(value, str | int | float | bool | type(None)) else "<data>"
        for key, value in params.items()
    }


def _text(summary: dict[str, Any]) -> str:
    lines = [
        f"{summary['directory']}: a {summary['model_class']} model, saved by cellvi "
        f"{summary['cellvi_version']} (format {summary['format_version']}).",
        "Parameters: " + ", ".join(f"{k}={v!r}" for k, v in summary["parameters"].items()),
        "Setup: "
        + (
            ", ".join(f"{k}={v!r}" for k, v in summary["setup_args"].items() if v is not None)
            or "defaults"
        ),
        f"Genes: {summary['n_genes']}; cells at setup: {summary['n_cells_at_setup']}.",
    ]
    for name, entry in summary["categories"].items():
        values = entry["categories"]
        shown = ", ".join(map(str, values[:_SHOWN_CATEGORIES]))
        more = f", ... ({len(values)} in all)" if len(values) > _SHOWN_CATEGORIES else ""
        lines.append(f"{name.capitalize()} (obs[{entry['column']!r}]): {shown}{more}.")
    if summary["continuous_covariates"]:
        lines.append("Continuous covariates: " + ", ".join(summary["continuous_covariates"]))
    if summary["trained"]:
        cells = summary["cells"]
        lines.append(
            f"Trained: {summary['epochs']} epochs on {cells['train']} cells "
            f"({cells['validation']} validation, {cells['test']} test)"
            + ("; stopped by Ctrl+C." if summary["interrupted"] else ".")
        )
        metrics = summary["last_epoch_metrics"]
        shown = [name for name in ("elbo_train", "elbo_validation") if name in metrics]
        if shown:
            lines.append(
                "Last epoch: " + ", ".join(f"{name}={metrics[name]:.2f}" for name in shown) + "."
            )
    else:
        lines.append("Not trained.")
    lines.append(
        "Files: "
        + ", ".join(
            f"{name} ({_size(size)})"
            for name, size in summary["files"].items()
            if size is not None
        )
        + "."
    )
    return "\n".join(lines)


def _size(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes} B"  # pragma: no cover
