"""A default fit prints a progress bar and nothing else: no tips, no warnings, no ``v_num``."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import warnings

import pytest

import cellvi
from cellvi.train._trainer import quiet_lightning

# What a default train() must never print (Lightning's adverts and summaries, warnings).
_NOISE = re.compile(
    r"tip|litlogger|litmodels|warning|deprecat|v_num|GPU available|TPU available|"
    r"LOCAL_RANK|Trainer\.fit. stopped",
    re.IGNORECASE,
)

_SCRIPT = """
import sys
import cellvi
{settings}
adata = cellvi.data.synthetic_iid(seed=0)
cellvi.model.SCVI.setup_anndata(adata, batch_key="batch")
model = cellvi.model.SCVI(adata, n_latent=5)
print("--- train ---", flush=True)
print("--- train ---", file=sys.stderr, flush=True)
model.train({train_args})
for name in ("elbo_train", "elbo_validation"):
    if name in model.history:
        values = " ".join(f"{{v:.1f}}" for v in model.history[name].iloc[:, 0])
        print(f"history {{name}} {{values}}", flush=True)
"""


def _train_output(train_args: str = "max_epochs=3", settings: str = "") -> str:
    """stdout and stderr of a fresh process's ``train()``, every warning shown (-W always)."""
    script = _SCRIPT.format(train_args=train_args, settings=settings)
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    # What train() printed: after the marker on each stream.
    after = [part.split("--- train ---", 1)[1] for part in (done.stdout, done.stderr)]
    assert all(after), output
    return "".join(after).replace("\r", "\n")


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _history(output: str, name: str) -> list[str]:
    """The per-epoch values of a metric the script printed, as the bar formats them."""
    return re.search(rf"history {name} (.+)", output).group(1).split()


def _bar_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Epoch")]


@pytest.mark.xdist_group("quiet-output")
def test_a_default_train_prints_no_tip_no_warning_and_no_v_num() -> None:
    output = _train_output()
    noise = [line for line in output.splitlines() if _NOISE.search(line)]
    assert not noise, noise
    bar = _bar_lines(output)
    assert bar, output
    last = bar[-1]
    # The epoch, the time elapsed and left, the training ELBO of the epoch just finished.
    assert last.startswith("Epoch 3/3: 100%"), last
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", last), last
    final = _history(output, "elbo_train")[-1]
    assert f"elbo_train={final}" in last, (last, final)
    # Everything else train() printed is the bar.
    other = [
        line
        for line in output.splitlines()
        if line.strip() and not line.startswith(("Epoch", "Training", "history"))
    ]
    assert not other, other


@pytest.mark.xdist_group("quiet-output")
def test_a_validated_fit_shows_both_elbos_of_each_epoch() -> None:
    output = _train_output("max_epochs=2, check_val_every_n_epoch=1, early_stopping=True")
    assert not [line for line in output.splitlines() if _NOISE.search(line)]
    train, validation = _history(output, "elbo_train"), _history(output, "elbo_validation")
    bar = _bar_lines(output)
    for epoch in (1, 2):
        # Once an epoch is done, the bar shows that epoch's own ELBOs, training first.
        line = next(line for line in bar if f" {epoch}/2 [" in line)
        expected = f"elbo_train={train[epoch - 1]}, elbo_validation={validation[epoch - 1]}]"
        assert expected in line, (line, expected)
    assert "v_num" not in output


@pytest.mark.xdist_group("quiet-output")
def test_verbosity_info_shows_lightnings_device_summary_but_no_tip() -> None:
    output = _train_output(settings='cellvi.settings.verbosity = "INFO"')
    assert "GPU available" in output
    assert "litlogger" not in output and "Tip" not in output


def test_the_users_logger_levels_and_warning_filters_are_left_as_they_were() -> None:
    lightning_logger = logging.getLogger("lightning.pytorch")
    level = lightning_logger.level
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        filters = list(warnings.filters)
        with quiet_lightning(logs_per_step=False):
            assert lightning_logger.getEffectiveLevel() >= logging.WARNING
        assert warnings.filters == filters
    assert lightning_logger.level == level


def test_warnings_about_the_users_own_code_still_reach_the_user() -> None:
    # A deprecation raised by the caller's module (not Lightning or torch) is not hidden.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            warnings.warn("your own deprecation", DeprecationWarning, stacklevel=1)
            warnings.warn_explicit(
                "lightning's deprecation", DeprecationWarning, "x.py", 1, module="lightning.x"
            )
    assert [str(w.message) for w in caught] == ["your own deprecation"]


def test_debug_verbosity_hides_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cellvi.settings, "_verbosity", logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            warnings.warn_explicit(
                "lightning's deprecation", DeprecationWarning, "x.py", 1, module="lightning.x"
            )
    assert len(caught) == 1
