"""``ArchesMixin``: map query data onto a trained reference model (scArches surgery).

A query AnnData is registered with the reference's setup, its new categories (batches,
categorical covariates) appended to the reference's; a model is built for that registration,
the reference's weights are copied into it (grown tables keep the reference's rows first and
the fresh model's rows for the new categories) and everything the reference learnt is frozen
but the covariate weights of the categories the query's cells hold: training the query fits
the weights of its new categories (and, as in scvi-tools, those of reference categories its
cells also hold, the library encoder and the decoder's batch norm unless told otherwise).
Frozen weights keep their exact values whatever the optimizer (:mod:`cellvi.nn._query_rows`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from cellvi.data._constants import _MODEL_NAME_KEY, _SETUP_ARGS_KEY, _SETUP_METHOD_NAME
from cellvi.dataloaders._device import resolve_device
from cellvi.model.base._arches_genes import pad_and_sort_query_anndata, validate_var_names
from cellvi.model.base._files import ModelPaths, read_description, read_model_files
from cellvi.model.base._init_params import init_arguments
from cellvi.model.base._scvi_tools_files import has_scvi_tools_model, read_scvi_tools_model
from cellvi.nn import Embedding, FCLayers

if TYPE_CHECKING:
    from cellvi.model.base._base_model import BaseModelClass

# Top-level submodules that train whole in a query (scvi-tools: the library encoder).
_TRAINED_WHOLE = ("l_encoder",)
# Top-level submodules of SCANVI's label model, frozen whole (scvi-tools' "inference mode").
_FROZEN_WHOLE = ("encoder_z2_z1", "decoder_z1_z2")


class ArchesMixin:
    """Reference mapping: ``prepare_query_anndata`` and ``load_query_data`` (Lotfollahi 2021)."""

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: str | Path | BaseModelClass,
        inplace_subset_query_vars: bool = False,
        accelerator: str = "auto",
        device: int | str = "auto",
        unfrozen: bool = False,
        freeze_dropout: bool = False,
        freeze_expression: bool = True,
        freeze_decoder_first_layer: bool = True,
        freeze_batchnorm_encoder: bool = True,
        freeze_batchnorm_decoder: bool = False,
        freeze_classifier: bool = True,
        transfer_batch: bool = True,
    ) -> BaseModelClass:
        """A model of ``adata`` built on a reference, ready to train the query's new weights.

        Parameters
        ----------
        adata
            Query data with the reference's genes in its order (see
            :meth:`prepare_query_anndata`) and its covariate columns; it need not be set up.
            Categories the reference never saw get new weights; those of reference
            categories the query holds train on its cells too (as in scvi-tools), those of
            the others stay the reference's.
        reference_model
            A trained model of this class, or the directory it was saved to (by cellvi, or by
            scvi-tools as ``model.pt``).
        inplace_subset_query_vars
            Subset and reorder ``adata``'s genes to the reference's, in place (every reference
            gene must be there; otherwise pad first with :meth:`prepare_query_anndata`).
        accelerator, device
            Where the model lives, as in ``load``.
        unfrozen
            Train every weight (overrides the options below).
        freeze_dropout
            Switch dropout off during query training.
        freeze_expression
            Freeze the encoders' first layer weights on the genes (else it trains whole).
        freeze_decoder_first_layer
            Freeze the decoder's first layer weights on the latent space (else it trains
            whole).
        freeze_batchnorm_encoder, freeze_batchnorm_decoder
            Freeze the batch-norm weights and running statistics of the encoders, of the
            decoder.
        freeze_classifier
            Freeze the classifier (models that have one, e.g. SCANVI), its batch-norm
            running statistics included; False trains it whole.
        transfer_batch
            Allow query batches the reference does not have (False: refuse them).

        Returns
        -------
        The query model, untrained. Frozen weights keep the reference's values exactly
        (``requires_grad`` False, or rows held apart, see :mod:`cellvi.nn._query_rows`).
        """
        if reference_model is None:
            raise ValueError(
                "Give the reference: a trained model or the directory it was saved to."
            )
        if not isinstance(adata, AnnData):
            raise TypeError(f"load_query_data maps an AnnData; got {type(adata).__name__}.")
        target = resolve_device(accelerator, device)
        attributes, var_names, weights, _ = _get_loaded_data(
            reference_model, model_class=cls.__name__
        )
        registry = _checked_registry(cls.__name__, attributes)
        if not transfer_batch:
            _check_known_batches(adata, registry)
        if inplace_subset_query_vars:
            missing = pd.Index(var_names).difference(adata.var_names)
            if len(missing):
                raise ValueError(
                    f"The query lacks {len(missing)} reference genes (e.g. {list(missing[:5])}),"
                    " so it cannot be subset to them; pad them with "
                    f"{cls.__name__}.prepare_query_anndata(adata, reference) first."
                )
            adata._inplace_subset_var(list(var_names))
        validate_var_names(adata, var_names, cls.__name__)

        setup_method = getattr(cls, registry.get(_SETUP_METHOD_NAME, "setup_anndata"))
        setup_method(
            adata,
            source_registry=registry,
            extend_categories=True,
            allow_missing_labels=True,
            **registry[_SETUP_ARGS_KEY],
        )
        model = cls(adata, **init_arguments(attributes["init_params_"]))
        reference = _reference_weights(cls, reference_model, weights, adata)
        model.module.load_state_dict(grow_reference_weights(model.module, reference))
        model.to_device(target)
        model.module.eval()
        _set_params_online_update(
            model.module,
            {} if unfrozen else _frozen_categories(model, reference),
            unfrozen=unfrozen,
            freeze_decoder_first_layer=freeze_decoder_first_layer,
            freeze_batchnorm_encoder=freeze_batchnorm_encoder,
            freeze_batchnorm_decoder=freeze_batchnorm_decoder,
            freeze_dropout=freeze_dropout,
            freeze_expression=freeze_expression,
            freeze_classifier=freeze_classifier,
        )
        model.is_trained_ = False
        return model

    @classmethod
    def prepare_query_anndata(
        cls,
        adata: AnnData,
        reference_model: str | Path | BaseModelClass,
        return_reference_var_names: bool = False,
        inplace: bool = True,
    ) -> AnnData | pd.Index | None:
        """Give a query the reference's genes: missing ones padded with zeros, in its order.

        Genes of the query the reference lacks are dropped. What changed is logged (how many
        genes were kept, padded, dropped); fewer than 80% of the reference genes is warned
        about, and none at all is an error.

        Parameters
        ----------
        adata
            The query (counts in ``X`` and its layers are padded alike).
        reference_model
            A trained model, or the directory it was saved to.
        return_reference_var_names
            Only return the reference's gene names (``adata`` is left alone).
        inplace
            Change ``adata`` itself (returns None) rather than return a new AnnData.

        Returns
        -------
        The new AnnData (``inplace=False``), the reference's genes
        (``return_reference_var_names``), or None.
        """
        model_class = None if cls is ArchesMixin else cls.__name__
        _, var_names, _, _ = _get_loaded_data(reference_model, model_class=model_class)
        reference = pd.Index(var_names)
        if return_reference_var_names:
            return reference
        prepared = pad_and_sort_query_anndata(adata, reference)
        if not inplace:
            return prepared
        if prepared is not adata:
            adata._init_as_actual(
                X=prepared.X,
                obs=prepared.obs,
                var=prepared.var,
                uns=prepared.uns,
                obsm=prepared.obsm,
                obsp=prepared.obsp,
                layers=prepared.layers,
                raw=prepared.raw,
            )
        return None


# The reference ------------------------------------------------------------------------------


def _get_loaded_data(
    reference_model: Any,
    device: str | torch.device | None = None,
    adata: AnnData | None = None,
    model_class: str | None = None,
) -> tuple[dict[str, Any], np.ndarray, dict[str, torch.Tensor] | None, None]:
    """What a reference holds, in scvi-tools' layout (scvi-tools' tests read it).

    Returns ``(attributes, var_names, state_dict, None)``: ``attributes`` holds
    ``registry_``, ``init_params_`` and ``is_trained_``; ``state_dict`` is the module's, or
    None for an scvi-tools file (its weights are read through a module, see
    :func:`_reference_weights`); the last entry stands for scvi-tools' Pyro parameter store,
    which cellvi keeps in the state dict. ``model_class`` checks a saved model's class
    (None: any class saved by cellvi). ``adata`` is not read; it is in scvi-tools' signature.
    """
    if isinstance(reference_model, str | Path):
        paths = ModelPaths(Path(reference_model), "")
        weights = None
        if not paths.description.is_file() and has_scvi_tools_model(paths.directory, ""):
            if model_class is None:
                raise ValueError(
                    f"{paths.directory} holds an scvi-tools model; call this method on its "
                    "model class (e.g. SCVI.prepare_query_anndata)."
                )
            description = read_scvi_tools_model(paths, model_class, False).description
        else:
            saved_class = (
                read_description(paths)["model_class"] if paths.description.is_file() else None
            )
            if model_class is not None and saved_class not in (None, model_class):
                raise ValueError(
                    f"{paths.directory} holds a {saved_class} model; map queries onto it with "
                    f"{saved_class}.load_query_data, not {model_class}'s."
                )
            saved = read_model_files(paths, model_class or saved_class or "", read_adata=False)
            description, weights = saved.description, saved.weights
        attributes = {
            "registry_": description["registry"],
            "init_params_": description["init_params"],
            "is_trained_": bool(description["attributes"].get("is_trained_", False)),
        }
    else:
        if model_class is not None and type(reference_model).__name__ != model_class:
            raise ValueError(
                f"The reference is a {type(reference_model).__name__} model; map queries onto "
                f"it with {type(reference_model).__name__}.load_query_data, not {model_class}'s."
            )
        attributes = {
            "registry_": reference_model.registry_,
            "init_params_": reference_model.init_params_,
            "is_trained_": reference_model.is_trained_,
        }
        weights = {
            name: tensor.detach().clone()
            for name, tensor in reference_model.module.state_dict().items()
        }
    if weights is not None and device is not None:
        weights = {name: tensor.to(device) for name, tensor in weights.items()}
    return attributes, _registry_var_names(attributes["registry_"]), weights, None


def _registry_var_names(registry: dict[str, Any]) -> np.ndarray:
    """The reference's genes, as its registry recorded them."""
    state = registry.get("field_registries", {}).get("X", {}).get("state_registry", {})
    if "column_names" not in state:
        raise ValueError("The reference's registry records no gene names (no X field).")
    return np.asarray(state["column_names"], dtype=object).astype(str)


def _checked_registry(model_name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """The reference's registry, checked to be of class ``model_name`` and complete."""
    registry = attributes["registry_"]
    if registry.get(_MODEL_NAME_KEY, model_name) != model_name:
        raise ValueError(
            f"The reference is a {registry[_MODEL_NAME_KEY]} model, not a {model_name}; "
            f"use {registry[_MODEL_NAME_KEY]}.load_query_data."
        )
    if _SETUP_ARGS_KEY not in registry:
        raise ValueError(
            "The reference's registry records no setup arguments, so the query cannot be set "
            "up like it; save the reference with a current version."
        )
    if not attributes["is_trained_"]:
        warnings.warn(
            "The reference model is not trained; the query is mapped onto random weights.",
            UserWarning,
            stacklevel=3,
        )
    return registry


def _reference_weights(
    cls: type, reference_model: Any, weights: dict[str, torch.Tensor] | None, query: AnnData
) -> dict[str, torch.Tensor]:
    """The reference module's state dict under cellvi's names.

    An scvi-tools file holds its weights in scvi-tools' layout, which only a module of the
    reference's architecture can read: that module is built on a few cells of the (set-up)
    query relabelled with reference categories, and loaded from the file.
    """
    if weights is not None:
        return weights
    attributes = _get_loaded_data(reference_model, model_class=cls.__name__)[0]
    stand_in = _reference_stand_in(query, attributes["registry_"])
    loaded = cls.load(str(reference_model), adata=stand_in, accelerator="cpu")
    return {name: tensor.detach().clone() for name, tensor in loaded.module.state_dict().items()}


def _reference_stand_in(query: AnnData, registry: dict[str, Any], n_cells: int = 8) -> AnnData:
    """A few cells of ``query`` whose categorical columns hold only reference categories.

    The cells are registered by transfer of the reference's registry, which fixes every
    code and count the reference module is built from; their values never reach it.
    """
    stand_in = query[: min(n_cells, query.n_obs)].copy()
    for entry in registry["field_registries"].values():
        state = entry.get("state_registry", {})
        columns = {}
        if state.get("original_key") is not None and state.get("categorical_mapping"):
            columns[state["original_key"]] = state["categorical_mapping"]
        columns.update(state.get("mappings") or {})
        for column, mapping in columns.items():
            stand_in.obs[column] = pd.Categorical([str(mapping[0])] * stand_in.n_obs)
    return stand_in


def grow_reference_weights(
    module: torch.nn.Module, reference: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The reference's weights in the shapes of ``module``, built for the query.

    A tensor that grew (a table with rows for new categories, a prior with entries for new
    batches) keeps the reference's values first and ``module``'s fresh values after them.

    Raises
    ------
    ValueError
        When ``module`` has tensors the reference lacks (e.g. a covariate the reference had
        a single category of, so it learnt no weights for it), lacks tensors the reference
        has, or has a tensor smaller than the reference's.
    """
    fresh = module.state_dict()
    new_names = sorted(set(fresh) - set(reference))
    old_names = sorted(set(reference) - set(fresh))
    if new_names or old_names:
        raise ValueError(
            "The query model does not have the reference's architecture: "
            + (f"it has weights the reference lacks ({new_names[:4]}); " if new_names else "")
            + (f"it lacks weights of the reference ({old_names[:4]}); " if old_names else "")
            + "a covariate the reference saw with a single category (or not at all) has no "
            "learnt weights to extend. Train the reference with that covariate registered."
        )
    grown = {}
    for name, fresh_tensor in fresh.items():
        old = reference[name].to(fresh_tensor.device)
        if old.shape == fresh_tensor.shape:
            grown[name] = old
            continue
        if old.dim() != fresh_tensor.dim() or any(
            o > f for o, f in zip(old.shape, fresh_tensor.shape, strict=True)
        ):
            raise ValueError(
                f"The reference's {name} has shape {tuple(old.shape)}, which does not fit into "
                f"the query model's {tuple(fresh_tensor.shape)}."
            )
        tensor = fresh_tensor.clone()
        tensor[tuple(slice(0, size) for size in old.shape)] = old
        grown[name] = tensor
    return grown


# Freezing -----------------------------------------------------------------------------------


def _frozen_categories(
    model: Any, reference: dict[str, torch.Tensor]
) -> dict[str, list[list[int]]]:
    """Per covariate table of the module, the reference categories no query cell holds.

    Keyed by the name of each fully connected block (a list per entry of its ``n_cat_list``)
    and of each embedding (one list). Which codes reach a block is read from one pass of the
    query's cells through the module, so the answer holds whatever covariates a module feeds
    to which block. As in scvi-tools, the weights of a reference category the query holds train
    on the query's cells; those of the others are the reference's and stay exactly so.
    """
    seen: dict[str, list[set[int]]] = {}

    def recorder(name: str) -> Any:
        def record(block: torch.nn.Module, args: tuple[Any, ...]) -> None:
            codes = args[1:] if isinstance(block, FCLayers) else args[:1]
            entry = seen.setdefault(name, [set() for _ in codes])
            for found, code in zip(entry, codes, strict=True):
                if code is not None:
                    found.update(int(c) for c in torch.unique(code.detach()).tolist())

        return record

    module = model.module
    handles = [
        child.register_forward_pre_hook(recorder(name))
        for name, child in module.named_modules()
        if isinstance(child, FCLayers | Embedding)
    ]
    try:
        with torch.no_grad():
            module.eval()
            for tensors in model._make_data_loader(adata=model.adata):
                module(tensors, compute_loss=False)
    finally:
        for handle in handles:
            handle.remove()

    frozen: dict[str, list[list[int]]] = {}
    for name, child in module.named_modules():
        if isinstance(child, Embedding):
            n_reference = reference[f"{name}.weight"].shape[0]
            held = seen.get(name, [set()])[0]
            frozen[name] = [[code for code in range(n_reference) if code not in held]]
        elif isinstance(child, FCLayers):
            lists: list[list[int]] = [[] for _ in child.n_cat_list]
            for position, index in enumerate(child._active):
                key = f"{name}.linears.0.cat_weights.{position}"
                held = seen[name][index] if name in seen else set()
                lists[index] = [c for c in range(reference[key].shape[0]) if c not in held]
            frozen[name] = lists
    return frozen


def _set_params_online_update(
    module: torch.nn.Module,
    frozen_categories: dict[str, list[list[int]]],
    unfrozen: bool,
    freeze_decoder_first_layer: bool,
    freeze_batchnorm_encoder: bool,
    freeze_batchnorm_decoder: bool,
    freeze_dropout: bool,
    freeze_expression: bool,
    freeze_classifier: bool,
) -> None:
    """Freeze what the reference learnt, with scvi-tools' options (see ``load_query_data``).

    Everything is frozen but: the library encoder (and the classifier, unless
    ``freeze_classifier``), trained whole; the covariate weights of the categories the query
    holds, in every fully connected block and embedding (``frozen_categories`` lists the
    others); the first layer of the encoders (``freeze_expression=False``) and of the decoder
    (``freeze_decoder_first_layer=False``); batch-norm weights where not frozen. Frozen batch
    norms keep their running statistics, those of a frozen classifier too.
    """
    if unfrozen:
        return
    whole = set(_TRAINED_WHOLE) | (set() if freeze_classifier else {"classifier"})
    module.requires_grad_(False)
    for name, child in module.named_modules():
        top = name.split(".")[0]
        if top in whole:
            child.requires_grad_(True)
            continue
        in_encoder = "encoder" in name
        in_decoder = "decoder" in name and not in_encoder
        if isinstance(child, FCLayers) and top not in _FROZEN_WHOLE:
            trains_first_layer = (in_encoder and not freeze_expression) or (
                in_decoder and not freeze_decoder_first_layer
            )
            child.freeze_for_query(
                hook_first_layer=not trains_first_layer,
                frozen_categories=frozen_categories.get(name),
            )
            if trains_first_layer:
                child.linears[0].requires_grad_(True)
        elif isinstance(child, Embedding):
            child.freeze_rows(frozen_categories[name][0])
        elif isinstance(child, torch.nn.Dropout) and freeze_dropout:
            child.p = 0.0
        elif isinstance(child, torch.nn.BatchNorm1d):
            # A frozen classifier keeps its statistics too (scvi-tools' update them), so
            # that it labels the reference cells as before.
            frozen = (
                (in_encoder and freeze_batchnorm_encoder)
                or (in_decoder and freeze_batchnorm_decoder)
                or top == "classifier"
            )
            if frozen:
                # A zero momentum keeps the running statistics as the reference left them.
                child.momentum = 0.0
            child.requires_grad_(not frozen and (in_encoder or in_decoder))


# The query ----------------------------------------------------------------------------------


def _check_known_batches(adata: AnnData, registry: dict[str, Any]) -> None:
    state = registry["field_registries"].get("batch", {}).get("state_registry", {})
    column = state.get("original_key")
    if column is None:
        return
    known = {str(category) for category in state["categorical_mapping"]}
    unknown = sorted({str(b) for b in adata.obs[column].unique()} - known)
    if unknown:
        raise ValueError(
            f"This model does not allow query batches missing from the reference "
            f"(transfer_batch=False); unknown batches: {unknown[:10]}."
        )
