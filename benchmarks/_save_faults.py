"""Saves killed mid-way, in forked processes, and the checks a surviving directory must pass.

Shared by ``tests/model/test_save_durability.py`` and ``save_stress.py``. A forked child
inherits the imported libraries, so each killed save costs milliseconds, not an interpreter start.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anndata
import torch

import cellvi
from cellvi.model import SCVI
from cellvi.model.base import _files
from cellvi.model.base._directory import STAGING_PREFIX

#: The file-system steps of a save, by module and name: a kill lands right before one.
STEPS = [
    (os, "replace"),
    (os, "fsync"),
    (os, "mkdir"),
    (os, "unlink"),
    (os, "rmdir"),
    (shutil, "rmtree"),
    (Path, "write_text"),
    (_files, "save_file"),
    (anndata.AnnData, "write_h5ad"),
]


def marked_model(marker: int) -> SCVI:
    """A small 'trained' SCVI whose every weight equals ``marker`` (so a load can tell it).

    Its ``n_latent`` follows from the marker too (:func:`latent_of`), so a description saved
    with other weights is caught.
    """
    adata = adata_like()
    SCVI.setup_anndata(adata)
    model = SCVI(adata, n_latent=latent_of(marker), n_hidden=8)
    with torch.no_grad():
        for tensor in model.module.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(marker)
    model.is_trained_ = True
    return model


def identify(directory: Path) -> tuple[int, bool]:
    """Load the model in ``directory`` and say which one it is: ``(marker, has AnnData)``.

    Raises unless the model is whole: every float weight the same marker, the init
    parameters those of the model with that marker, the AnnData (when saved) loadable.
    """
    try:
        model = SCVI.load(directory, accelerator="cpu")
        has_adata = True
    except _files.ModelFileError as error:
        if "holds no AnnData" not in str(error):
            raise
        model = SCVI.load(directory, adata=adata_like(), accelerator="cpu")
        has_adata = False
    markers = {
        float(v.flatten()[0]) for v in model.module.state_dict().values() if v.is_floating_point()
    }
    assert len(markers) == 1, f"weights of several saves: {markers}"
    marker = int(markers.pop())
    assert model.module.n_latent == latent_of(marker), "description and weights disagree"
    for value in model.module.state_dict().values():
        if value.is_floating_point():
            assert torch.all(value == marker), "weights of several saves"
    return marker, has_adata


def latent_of(marker: int) -> int:
    """The n_latent that goes with a marker, so description and weights can be matched."""
    return 2 + int(marker)


def adata_like() -> anndata.AnnData:
    """The small AnnData every marked model is built on (the same cells every time)."""
    return cellvi.data.synthetic_iid(n_genes=20, batch_size=30)


def staging_left(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(STAGING_PREFIX)]


def run_in_child(action: Callable[[], None], kill_at_step: int | None = None) -> int:
    """Run ``action`` in a forked child, SIGKILLed right before its ``kill_at_step``-th step.

    Returns the number of steps the child reached (its exit code counts them when it was not
    killed), or -SIGKILL when it was killed.
    """
    pid = os.fork()
    if pid == 0:  # the child
        counter = {"steps": 0}

        def wrap(owner, name):
            original = getattr(owner, name)

            def step(*args, **kwargs):
                counter["steps"] += 1
                if counter["steps"] == kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(*args, **kwargs)

            setattr(owner, name, step)

        for owner, name in STEPS:
            wrap(owner, name)
        try:
            action()
        except BaseException:
            os._exit(255)
        os._exit(min(counter["steps"], 254))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def kill_after(action: Callable[[], None], seconds: float) -> bool:
    """Run ``action`` in a forked child and SIGKILL it after ``seconds``; True if it was killed."""
    pid = os.fork()
    if pid == 0:
        try:
            action()
        finally:
            os._exit(0)
    time.sleep(seconds)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


def random_delays(n: int, longest: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0, longest) for _ in range(n)]


def user_files(directory: Path) -> dict[str, bytes]:
    """The files in ``directory`` that are not cellvi's, with their content."""
    ours = {"model.json", "model.safetensors", "adata.h5ad"}
    return {
        p.name: p.read_bytes()
        for p in directory.iterdir()
        if p.is_file() and p.name not in ours and not p.name.startswith(STAGING_PREFIX)
    }
