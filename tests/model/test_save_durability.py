"""Saving never loses work: a model directory is the old model or the new one, whole.

``benchmarks/save_stress.py`` runs the same checks at scale (200 random kills, four
processes for a minute).

One test per case of the durability review (issue 16): user files beside a model, saves
killed at every step and at random moments, failed saves into new folders, concurrent saves
and loads, overwrites without the AnnData, flushing to disk, and tampered files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import cellvi
from cellvi.model import SCVI
from cellvi.model.base import ModelFileError, _files

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _save_faults import (  # noqa: E402
    identify,
    kill_after,
    marked_model,
    random_delays,
    run_in_child,
    staging_left,
    user_files,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


# 1. Files cellvi did not write -----------------------------------------------------------


def test_a_save_never_touches_a_user_adata_file(tmp_path):
    user_file = tmp_path / "adata.h5ad"
    user_file.write_bytes(b"the user's own data")
    marked_model(1).save(tmp_path)  # no overwrite, no AnnData: the user file is not ours
    assert user_file.read_bytes() == b"the user's own data"
    assert identify(tmp_path) == (1, False)  # the user's file is not taken for the model's
    with pytest.raises(FileExistsError, match="not written by cellvi"):
        marked_model(2).save(tmp_path, overwrite=True, save_anndata=True)
    assert user_file.read_bytes() == b"the user's own data"
    assert identify(tmp_path) == (1, False)


def test_a_save_refuses_to_replace_a_foreign_model_json(tmp_path):
    (tmp_path / "model.json").write_text('{"something": "else"}')
    with pytest.raises(FileExistsError, match="not a valid cellvi model"):
        marked_model(1).save(tmp_path, overwrite=True)
    assert json.loads((tmp_path / "model.json").read_text()) == {"something": "else"}


# 2 and 5. Saves killed at each step and at random moments --------------------------------


@pytest.mark.parametrize("save_anndata", [True, False], ids=["with-adata", "without-adata"])
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_model(tmp_path, save_anndata):
    old = marked_model(1)
    old.save(tmp_path, save_anndata=True)
    (tmp_path / "notes.txt").write_text("keep me")
    new = marked_model(2)

    def save_new() -> None:
        new.save(tmp_path, overwrite=True, save_anndata=save_anndata)

    n_steps = run_in_child(save_new)  # an unkilled save, to count its steps
    assert n_steps > 5
    identify(tmp_path)  # the directory is valid after the full save too
    outcomes = set()
    for step in range(1, n_steps + 1):
        old.save(tmp_path, overwrite=True, save_anndata=True)
        assert run_in_child(save_new, kill_at_step=step) < 0, f"not killed at step {step}"
        marker, has_adata = identify(tmp_path)
        # Whole: the old model with its AnnData, or the new one with (or without) its own.
        assert (marker, has_adata) in {(1, True), (2, save_anndata)}, step
        assert staging_left(tmp_path) == [], f"staging left after the load (step {step})"
        assert user_files(tmp_path) == {"notes.txt": b"keep me"}
        outcomes.add(marker)
    assert outcomes == {1, 2}  # early kills keep the old model, late ones commit the new


def test_saves_killed_at_random_moments_leave_a_whole_model(tmp_path):
    marked_model(1).save(tmp_path, save_anndata=True)
    models = {2: marked_model(2), 3: marked_model(3)}
    start = time.monotonic()
    run_in_child(lambda: models[2].save(tmp_path, overwrite=True, save_anndata=True))
    duration = time.monotonic() - start  # of a whole save, fork included
    seen = set()
    for i, delay in enumerate(random_delays(12, longest=1.5 * duration)):
        model = models[2 + i % 2]
        kill_after(lambda m=model: m.save(tmp_path, overwrite=True, save_anndata=True), delay)
        marker, has_adata = identify(tmp_path)
        assert has_adata and staging_left(tmp_path) == []
        seen.add(marker)
    assert len(seen) >= 2


# 3. A failed save into a new folder -------------------------------------------------------


def test_a_failed_save_never_deletes_what_others_put_in_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "new"

    def fail_after_another_save(*args, **kwargs):
        (folder / "other_model.json").write_text("saved by another process meanwhile")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(_files, "save_file", fail_after_another_save)
    with pytest.raises(OSError, match="simulated"):
        marked_model(1).save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["other_model.json"]


# 4. Concurrent saves and loads -------------------------------------------------------------


def test_concurrent_saves_and_loads_never_see_a_torn_model(tmp_path):
    marked_model(1).save(tmp_path, save_anndata=True)
    deadline = time.monotonic() + 3.0

    def writer(marker: int):
        model = marked_model(marker)

        def run() -> None:
            while time.monotonic() < deadline:
                model.save(tmp_path, overwrite=True, save_anndata=True)

        return run

    def reader() -> None:
        while time.monotonic() < deadline:
            identify(tmp_path)  # raises (exit code 255) on any torn or half-read model

    children = []
    for action in (writer(2), writer(3), reader, reader):
        pid = os.fork()
        if pid == 0:
            try:
                action()
            except BaseException:
                os._exit(255)
            os._exit(0)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert codes == [0, 0, 0, 0]
    assert identify(tmp_path)[0] in {2, 3}
    assert staging_left(tmp_path) == []


# 5. Overwrite without the AnnData ------------------------------------------------------------


def test_overwrite_without_anndata_removes_the_old_one_only_after_the_commit(tmp_path):
    marked_model(1).save(tmp_path, save_anndata=True)
    marked_model(2).save(tmp_path, overwrite=True)
    assert identify(tmp_path) == (2, False)
    assert not (tmp_path / "adata.h5ad").exists()  # it was the old model's, now obsolete


# 12. Flushed to disk -----------------------------------------------------------------------------


def test_every_file_and_folder_of_a_save_is_flushed(tmp_path, monkeypatch):
    flushed = []
    original = os.fsync

    def recording_fsync(fd: int) -> None:
        flushed.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        original(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    marked_model(1).save(tmp_path / "m", save_anndata=True)
    staged = [name for name in flushed if name.startswith(".cellvi-staging-")]
    for name in ("model.safetensors", "adata.h5ad", "model.json", "commit.json.pending"):
        assert name in flushed, name
    assert staged, "the staging folder itself is flushed"
    assert "m" in flushed, "the model folder is flushed after the renames"


# 10. Tampered or damaged descriptions ------------------------------------------------------------


def _edit(directory: Path, edit, reseal: bool) -> None:
    path = directory / "model.json"
    description = json.loads(path.read_text())
    edit(description)
    path.write_text(json.dumps(_files.seal(description) if reseal else description))


def test_an_edited_description_is_refused(tmp_path):
    marked_model(1).save(tmp_path, save_anndata=True)
    mapping = ["batch_1", "batch_0"]
    key = "field_registries"
    _edit(
        tmp_path,
        lambda d: d["registry"][key]["batch"]["state_registry"].update(
            categorical_mapping=mapping
        ),
        reseal=False,
    )
    with pytest.raises(ModelFileError, match="does not match its own recorded checksum"):
        SCVI.load(tmp_path)


def test_swapped_anndata_is_refused(tmp_path):
    marked_model(1).save(tmp_path, save_anndata=True)
    other = cellvi.data.synthetic_iid(n_genes=20, batch_size=30, seed=7)
    other.write_h5ad(tmp_path / "adata.h5ad")
    with pytest.raises(ModelFileError, match="modified or swapped for other data"):
        SCVI.load(tmp_path)
    assert SCVI.load(tmp_path, adata=other, accelerator="cpu").is_trained_


class _LargestCpuTensor(torch.overrides.TorchFunctionMode):
    """Records the largest tensor that torch functions create on the CPU."""

    largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if isinstance(result, torch.Tensor) and result.device.type == "cpu":
            self.largest = max(self.largest, result.numel())
        return result


def test_absurd_init_parameters_are_refused_before_any_allocation(tmp_path):
    marked_model(1).save(tmp_path, save_anndata=True)
    _edit(
        tmp_path, lambda d: d["init_params"]["non_kwargs"].update(n_hidden=2_000_000), reseal=True
    )
    with _LargestCpuTensor() as recorder, pytest.raises(ModelFileError, match="do not fit"):
        SCVI.load(tmp_path, accelerator="cpu")
    # The 2e6-wide layers would hold 4e7 numbers at least; nothing near that was allocated.
    assert recorder.largest < 1_000_000


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["init_params"]["non_kwargs"].update(n_latent="ten"), "cannot build a SCVI"),
        (lambda d: d["init_params"]["non_kwargs"].update(no_such_option=1), "cannot build a SCVI"),
        (lambda d: d["init_params"]["non_kwargs"].update(n_layers=-1), "do not fit|cannot build"),
        (lambda d: d.update(deep=json.loads("[" * 200 + "]" * 200)), "nested too deeply"),
    ],
    ids=["string", "unknown", "negative", "deep"],
)
def test_odd_saved_values_are_a_model_file_error(tmp_path, edit, message):
    marked_model(1).save(tmp_path, save_anndata=True)
    _edit(tmp_path, edit, reseal=True)
    with pytest.raises(ModelFileError, match=message):
        SCVI.load(tmp_path, accelerator="cpu")


def test_very_deep_json_is_a_model_file_error_not_a_recursion_error(tmp_path):
    marked_model(1).save(tmp_path)
    (tmp_path / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFileError, match="nested too deeply|not a cellvi model"):
        SCVI.load(tmp_path, adata=marked_model(1).adata)


def test_models_of_format_version_1_still_load(tmp_path):
    model = marked_model(4)
    model.save(tmp_path, save_anndata=True)
    description = json.loads((tmp_path / "model.json").read_text())
    description["format_version"] = 1
    description["weights_sha256"] = description.pop("files")["model.safetensors"]
    # cellvi 0.1 recorded the init parameters flat, **kwargs merged in.
    nested = description["init_params"]
    description["init_params"] = {**nested["non_kwargs"], **nested["kwargs"]["model_kwargs"]}
    del description["description_sha256"]
    (tmp_path / "model.json").write_text(json.dumps(description))
    assert identify(tmp_path) == (4, True)
    np.testing.assert_array_equal(
        SCVI.load(tmp_path, accelerator="cpu").module.px_r.detach(), model.module.px_r.detach()
    )
