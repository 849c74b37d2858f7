"""``cellvi.utils``: attribute dicts, optional dependencies and shared docstrings."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest

import cellvi
from cellvi.utils import (
    DocstringProcessor,
    attrdict,
    dependencies,
    error_on_missing_dependencies,
    is_package_installed,
    setup_anndata_dsp,
)


def test_attrdict_reads_keys_as_attributes_nested_too():
    stats = attrdict({"n_batch": 2, "batch": {"attr_name": "obs", "attr_key": "_scvi_batch"}})
    assert stats.n_batch == stats["n_batch"] == 2
    assert isinstance(stats.batch, attrdict) and stats.batch.attr_key == "_scvi_batch"
    assert stats == {"n_batch": 2, "batch": {"attr_name": "obs", "attr_key": "_scvi_batch"}}
    assert stats.batch == attrdict(attr_name="obs", attr_key="_scvi_batch")
    assert "n_batch" in dir(stats)
    with pytest.raises(AttributeError, match=r"No key 'n_labels'.*\['n_batch', 'batch'\]"):
        _ = stats.n_labels


@pytest.mark.parametrize(
    "write",
    [
        lambda d: d.__setitem__("n", 1),
        lambda d: d.__delitem__("n_batch"),
        lambda d: setattr(d, "n_batch", 3),
        lambda d: d.update(n=1),
        lambda d: d.pop("n_batch"),
        lambda d: d.setdefault("n", 1),
        lambda d: d.clear(),
    ],
)
def test_attrdict_is_read_only(write):
    stats = attrdict(n_batch=2)
    with pytest.raises(TypeError, match="read-only"):
        write(stats)
    assert stats == {"n_batch": 2}


def test_attrdict_copies_and_pickles():
    stats = attrdict({"n_batch": 2, "nested": {"a": [1, 2]}})
    for other in (copy.copy(stats), copy.deepcopy(stats), pickle.loads(pickle.dumps(stats))):
        assert other == stats and isinstance(other.nested, attrdict)
    assert repr(stats).startswith("attrdict({'n_batch': 2")


def test_dependencies_checks_at_call_time():
    @dependencies("a_module_that_is_not_installed", "json")
    def needs_it(x):
        return x + 1

    with pytest.raises(ModuleNotFoundError, match=r"\['a_module_that_is_not_installed'\]"):
        needs_it(1)
    assert dependencies("json")(lambda x: x + 1)(1) == 2
    assert needs_it.__name__ == "needs_it"  # the wrapper keeps the function's name and doc
    assert is_package_installed("json") and not is_package_installed("a_module_that_is_not_x")
    error_on_missing_dependencies("json")


def test_setup_anndata_dsp_fills_placeholders_of_a_dedented_docstring():
    @setup_anndata_dsp.dedent
    def setup_anndata(adata, batch_key=None):
        """%(summary)s.

        Parameters
        ----------
        %(param_adata)s
        %(param_batch_key)s

        Half of 50% stays as written.
        """

    doc = setup_anndata.__doc__
    assert doc.startswith("Register an AnnData for this model")
    assert "\nadata\n    AnnData of raw counts" in doc
    assert "\nbatch_key\n    Column of ``adata.obs``" in doc
    assert "Half of 50% stays as written." in doc and "%(" not in doc


def test_an_unknown_placeholder_is_an_error_naming_it():
    processor = DocstringProcessor(param_x="x\n    The x.")
    with pytest.raises(KeyError, match="'param_y'.*param_x"):
        processor.dedent_text("%(param_y)s")
    assert processor.dedent_text("    %(param_x)s") == "x\n    The x."


def test_track_shows_a_bar_only_for_queries_that_run_long(capsys, monkeypatch) -> None:
    from cellvi.utils import _progress, track

    assert list(track(range(3), "Quick")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # done before the delay: no bar at all
    monkeypatch.setattr(_progress, "DELAY", 0)
    assert list(track(range(3), "Sampling")) == [0, 1, 2]
    assert "Sampling" in capsys.readouterr().err
    assert list(track(range(3), "Sampling", silent=True)) == [0, 1, 2]
    monkeypatch.setattr(cellvi.settings, "_verbosity", logging.ERROR)
    assert list(track(range(3), "Sampling")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
