"""The ``cellvi`` console script, run as installed, in subprocesses, on small data."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cellvi
from cellvi.cli import cli
from cellvi.model import SCVI, CondSCVI
from cellvi.model.base import ModelFileError
from cellvi.plotting._embedding import umap_available

pytestmark = pytest.mark.xdist_group("cli")

SCRIPT = Path(sysconfig.get_path("scripts")) / "cellvi"
N_CELLS, N_GENES, N_LATENT = 240, 40, 10
SUBCOMMANDS = ("fit", "latent", "normalize", "de", "info", "simulate")
MAPPING_HINT = (
    "To map new data onto the model (new batches, missing genes), pass --query-epochs N."
)


def cellvi_run(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """Run the installed ``cellvi`` script; its exit status, stdout and stderr."""
    if not SCRIPT.is_file():
        pytest.fail(f"The cellvi console script is not installed at {SCRIPT}: pip install -e .")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def cellvi_run_many(commands: list[tuple[object, ...]], cwd: Path) -> list:
    """Run several commands at once (each pays the import of torch and Lightning)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda args: cellvi_run(*args, cwd=cwd), commands))


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def no_noise(text: str) -> None:
    """Nothing but progress bars and cellvi's own lines: no tips, warnings, tracebacks."""
    for word in ("Tip", "litlogger", "Warning", "warning", "deprecat", "v_num", "Traceback"):
        assert word not in text, text


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def data(work: Path) -> Path:
    """Simulated counts, written by ``cellvi simulate``."""
    done = ok(
        cellvi_run(
            "simulate",
            "data.h5ad",
            "--n-cells",
            N_CELLS,
            "--n-genes",
            N_GENES,
            "--n-cell-types",
            3,
            cwd=work,
        )
    )
    assert done.stdout.startswith(f"Wrote data.h5ad: {N_CELLS} cells x {N_GENES} genes")
    return work / "data.h5ad"


@pytest.fixture(scope="module")
def fitted(work: Path, data: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """``cellvi fit``'s --out folder (SCVI, 3 epochs), and the finished process."""
    done = ok(
        cellvi_run(
            "fit",
            data.name,
            "--batch-key",
            "batch",
            "--labels-key",
            "cell_type",
            "--max-epochs",
            3,
            "--accelerator",
            "cpu",
            "--out",
            "fit",
            cwd=work,
        )
    )
    return work / "fit", done


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# The subcommands, end to end ------------------------------------------------------------


def test_simulate_writes_counts_with_batches_and_cell_types(data: Path) -> None:
    adata = anndata.read_h5ad(data)
    assert adata.shape == (N_CELLS, N_GENES)
    assert sorted(adata.obs["batch"].unique()) == ["batch_0", "batch_1"]
    assert adata.obs["cell_type"].nunique() == 3


def test_fit_writes_the_model_the_data_with_its_latent_the_history_and_a_report(
    fitted, data: Path
) -> None:
    out, done = fitted
    assert re.match(r"Trained SCVI for 3 epochs on \d+ cells in [\d.]+ s\.\n", done.stdout)
    assert "Wrote fit/model/, fit/adata.h5ad, fit/history.csv, fit/report.html." in done.stdout
    no_noise(done.stdout + done.stderr)
    # The progress bar: the epoch, time left, both ELBOs.
    assert re.search(r"Epoch 3/3: 100%.*<00:00.*elbo_train=[\d.]+, elbo_validation=", done.stderr)

    adata = anndata.read_h5ad(out / "adata.h5ad")
    assert adata.obsm["X_scVI"].shape == (N_CELLS, N_LATENT)
    model = SCVI.load(out / "model", adata=adata, accelerator="cpu")
    np.testing.assert_allclose(
        model.get_latent_representation(), adata.obsm["X_scVI"], rtol=1e-4, atol=1e-5
    )
    assert model.adata_manager.registry["setup_args"]["batch_key"] == "batch"

    history = pd.read_csv(out / "history.csv", index_col="epoch")
    assert list(history.index) == [0, 1, 2]
    assert history[["elbo_train", "elbo_validation"]].notna().all().all()

    assert png_size((out / "history.png").read_bytes()) == (900, 640)
    assert png_size((out / "embedding.png").read_bytes()) == (1100, 450)
    report = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', report)
    assert [png_size(base64.b64decode(image)) for image in images] == [(900, 640), (1100, 450)]
    assert "cellvi SCVI training report" in report and "Training curves" in report


def test_fit_scanvi_writes_predicted_labels(work: Path, data: Path) -> None:
    done = ok(
        cellvi_run(
            "fit",
            data,
            "--model",
            "scanvi",
            "--labels-key",
            "cell_type",
            "--batch-key",
            "batch",
            "--max-epochs",
            2,
            "--n-latent",
            4,
            "--accelerator",
            "cpu",
            "--quiet",
            "--out",
            "scanvi",
            cwd=work,
        )
    )
    assert done.stderr == ""  # --quiet: no bar, and nothing else to say
    adata = anndata.read_h5ad(work / "scanvi" / "adata.h5ad")
    assert adata.obsm["X_scVI"].shape == (N_CELLS, 4)
    assert set(adata.obs["C_scANVI"]) <= set(adata.obs["cell_type"])
    assert "<th>accuracy</th>" in (work / "scanvi" / "report.html").read_text()


def test_fit_condscvi_without_a_report(work: Path, data: Path) -> None:
    ok(
        cellvi_run(
            "fit",
            data,
            "--model",
            "CondSCVI",
            "--labels-key",
            "cell_type",
            "--max-epochs",
            2,
            "--check-val-every-n-epoch",
            0,
            "--no-report",
            "-q",
            "--accelerator",
            "cpu",
            "--out",
            "condscvi",
            cwd=work,
        )
    )
    out = work / "condscvi"
    assert sorted(p.name for p in out.iterdir()) == ["adata.h5ad", "history.csv", "model"]
    adata = anndata.read_h5ad(out / "adata.h5ad")
    assert isinstance(CondSCVI.load(out / "model", adata=adata, accelerator="cpu"), CondSCVI)
    assert "elbo_validation" not in pd.read_csv(out / "history.csv").columns


def test_latent_of_the_training_data_and_of_its_tables(
    fitted, work: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = fitted
    h5ad, csv = cellvi_run_many(
        [
            ("latent", "fit", data, "--out", "latent.h5ad", "--key", "X_mine"),
            ("latent", "fit/model", data, "--out", "latent.csv"),
        ],
        cwd=work,
    )
    monkeypatch.chdir(work)
    parquet = CliRunner().invoke(
        cli, ["latent", "fit", "fit/adata.h5ad", "--out", "latent.parquet", "-q"]
    )
    assert parquet.exit_code == 0, parquet.output
    for done in (h5ad, csv):
        ok(done)
        no_noise(done.stdout + done.stderr)
    expected = anndata.read_h5ad(out / "adata.h5ad").obsm["X_scVI"]
    latent = anndata.read_h5ad(work / "latent.h5ad").obsm["X_mine"]
    np.testing.assert_allclose(latent, expected, rtol=1e-4, atol=1e-5)
    table = pd.read_csv(work / "latent.csv", index_col="cell")
    assert list(table.columns) == [f"latent_{i}" for i in range(N_LATENT)]
    np.testing.assert_allclose(table.to_numpy(), expected, rtol=1e-4, atol=1e-5)
    frame = pd.read_parquet(work / "latent.parquet")
    assert frame.shape == (N_CELLS, N_LATENT)
    assert "Wrote latent.csv (240 cells x 10 latent dimensions)." in csv.stdout


def test_normalize_writes_a_layer_scaled_to_the_library_size(fitted, work, data) -> None:
    done = ok(
        cellvi_run(
            "normalize", "fit", data, "--out", "norm.h5ad", "--library-size", 1000, cwd=work
        )
    )
    assert "layers['scvi_normalized']" in done.stdout
    adata = anndata.read_h5ad(work / "norm.h5ad")
    layer = adata.layers["scvi_normalized"]
    assert layer.shape == (N_CELLS, N_GENES) and layer.dtype == np.float32
    np.testing.assert_allclose(layer.sum(axis=1), 1000, rtol=1e-3)


def test_de_writes_a_table_per_gene(fitted, work: Path, data: Path) -> None:
    groups, queries = cellvi_run_many(
        [
            ("de", "fit", data, "--groupby", "cell_type", "--group1", "type_0", "--out", "de.csv"),
            (
                "de",
                "fit",
                data,
                "--idx1",
                "cell_type == 'type_1'",
                "--idx2",
                "cell_type == 'type_2'",
                "--mode",
                "vanilla",
                "--out",
                "de.parquet",
            ),
        ],
        cwd=work,
    )
    ok(groups), ok(queries)
    table = pd.read_csv(work / "de.csv", index_col="gene")
    assert len(table) == N_GENES and set(table.index) == {f"gene_{i}" for i in range(N_GENES)}
    assert {"proba_de", "lfc_mean", "is_de_fdr_0.05", "comparison"} <= set(table.columns)
    assert set(table["comparison"]) == {"type_0 vs Rest"}
    vanilla = pd.read_parquet(work / "de.parquet")
    assert len(vanilla) == N_GENES and "bayes_factor" in vanilla.columns


def test_info_describes_the_model_without_loading_it(
    fitted, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = ok(cellvi_run("info", "fit", cwd=work)).stdout.splitlines()
    assert lines[0].startswith("fit/model: a SCVI model, saved by cellvi ")
    assert "Batch (obs['batch']): batch_0, batch_1." in lines
    assert "Labels (obs['cell_type']): type_0, type_1, type_2." in lines
    assert any(
        re.match(r"Trained: 3 epochs on \d+ cells \(\d+ validation, 0 test\)\.", line)
        for line in lines
    )
    monkeypatch.chdir(work)
    as_json = CliRunner().invoke(cli, ["info", "fit/model", "--json"])
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout)
    assert summary["model_class"] == "SCVI" and summary["epochs"] == 3
    assert summary["n_genes"] == N_GENES and summary["parameters"]["n_latent"] == N_LATENT
    assert summary["categories"]["batch"] == {
        "column": "batch",
        "categories": ["batch_0", "batch_1"],
    }
    assert summary["cells"]["train"] + summary["cells"]["validation"] == N_CELLS
    assert set(summary["last_epoch_metrics"]) >= {"elbo_train", "elbo_validation"}


def test_new_data_is_read_by_reference_mapping(fitted, work: Path) -> None:
    query = cellvi.data.simulate(n_cells=120, n_genes=N_GENES, n_cell_types=3, seed=5)
    query.obs["batch"] = query.obs["batch"].astype(str) + "_new"
    query = query[:, 5:].copy()  # some reference genes are missing
    query.write_h5ad(work / "query.h5ad")
    unmapped, mapped = cellvi_run_many(
        [
            ("latent", "fit", "query.h5ad", "--out", "unmapped.h5ad"),
            ("latent", "fit", "query.h5ad", "--out", "query_latent.h5ad", "--query-epochs", 2),
        ],
        cwd=work,
    )
    assert unmapped.returncode == 1
    assert unmapped.stderr.strip().endswith(MAPPING_HINT)
    ok(mapped)
    latent = anndata.read_h5ad(work / "query_latent.h5ad")
    assert latent.obsm["X_scVI"].shape == (120, N_LATENT)
    assert latent.n_vars == N_GENES  # padded to the reference's genes


# Bad input: the Python API's messages, on one line, exit status 1 -------------------------


def _api_error(call) -> str:
    """The message of the error the Python API raises for the same input."""
    with pytest.raises(Exception) as caught:
        call()
    error = caught.value
    if isinstance(error, KeyError):
        return error.args[0]
    return str(error)


def _bad_input_cases(work: Path, data: Path, model_dir: Path) -> list[tuple]:
    """``(arguments, command, message)`` of each kind of bad input, with the API's message."""
    (work / "empty").mkdir(exist_ok=True)
    (work / "notes.txt").write_text("not an AnnData\n")
    corrupt = work / "corrupt"
    corrupt.mkdir(exist_ok=True)
    for name in ("model.json", "model.safetensors"):
        (corrupt / name).write_bytes((model_dir / name).read_bytes())
    description = json.loads((corrupt / "model.json").read_text())
    description["init_params"]["non_kwargs"]["n_latent"] = 3  # edited by hand
    (corrupt / "model.json").write_text(json.dumps(description))
    new_batches = anndata.read_h5ad(data)
    new_batches.obs["batch"] = new_batches.obs["batch"].astype(str) + "_new"
    new_batches.write_h5ad(work / "new_batches.h5ad")

    def fresh():
        return anndata.read_h5ad(data)

    trained = SCVI.load(model_dir, adata=fresh(), accelerator="cpu")
    with pytest.raises(ModelFileError):  # an edited model is refused as a ModelFileError
        SCVI.load("corrupt", adata=fresh())
    api = {
        "batch key": _api_error(lambda: SCVI.setup_anndata(fresh(), batch_key="nope")),
        "layer": _api_error(lambda: SCVI.setup_anndata(fresh(), layer="counts")),
        "covariate": _api_error(
            lambda: SCVI.setup_anndata(fresh(), categorical_covariate_keys=["donor"])
        ),
        "condscvi labels": _api_error(lambda: CondSCVI.setup_anndata(fresh())),
        "no model": _api_error(lambda: SCVI.load("empty")),
        "no dir": _api_error(lambda: SCVI.load("missing_dir")),
        "corrupt": _api_error(lambda: SCVI.load("corrupt", adata=fresh())),
        "groupby": _api_error(lambda: trained.differential_expression(groupby="nope")),
        "group": _api_error(
            lambda: trained.differential_expression(groupby="cell_type", group1="type_9")
        ),
        "unseen batch": _api_error(
            lambda: SCVI.load(model_dir, adata=anndata.read_h5ad("new_batches.h5ad"))
        ),
    }
    umap = []
    if not umap_available():  # refused before training, not after it
        umap = [
            (
                ("fit", data, "--embedding", "umap", "--out", "x10"),
                "cellvi fit",
                "--embedding umap needs umap-learn or scanpy: pip install 'cellvi[umap]' "
                "(umap-learn), or scanpy.",
            )
        ]
    return umap + [
        (("fit", "missing.h5ad", "--out", "x1"), "cellvi fit", "missing.h5ad: no such file."),
        (("fit", data, "--batch-key", "nope", "--out", "x2"), "cellvi fit", api["batch key"]),
        (("fit", data, "--layer", "counts", "--out", "x3"), "cellvi fit", api["layer"]),
        (
            ("fit", data, "--categorical-covariate-keys", "donor", "--out", "x4"),
            "cellvi fit",
            api["covariate"],
        ),
        (
            ("fit", data, "--model", "condscvi", "--out", "x5"),
            "cellvi fit",
            api["condscvi labels"],
        ),
        (
            ("fit", data, "--model", "scanvi", "--out", "x6"),
            "cellvi fit",
            "scanvi learns cell labels: give --labels-key, the obs column of the labels (cells "
            "labelled --unlabeled-category count as unlabeled).",
        ),
        (
            (
                "fit",
                data,
                "--model",
                "condscvi",
                "--labels-key",
                "cell_type",
                "--dispersion",
                "gene",
                "--out",
                "x7",
            ),
            "cellvi fit",
            "condscvi has no --dispersion option; drop it or use --model scvi.",
        ),
        (
            ("fit", data, "--out", "fit"),
            "cellvi fit",
            "fit/model, fit/adata.h5ad, fit/history.csv and 3 more already exist; pass "
            "--overwrite to replace, or write elsewhere.",
        ),
        (("fit", "notes.txt", "--out", "x8"), "cellvi fit", None),
        (
            ("fit", "empty", "--out", "x9"),
            "cellvi fit",
            "empty is a directory; give an .h5ad file.",
        ),
        (("latent", "empty", data, "--out", "l.h5ad"), "cellvi latent", api["no model"]),
        (("info", "missing_dir"), "cellvi info", api["no dir"]),
        (("normalize", "corrupt", data, "--out", "n.h5ad"), "cellvi normalize", api["corrupt"]),
        (
            ("normalize", "fit", data, "--out", "n.h5ad", "--library-size", "-1"),
            "cellvi normalize",
            "--library-size must be a positive number or 'latent', got '-1'.",
        ),
        (("de", "fit", data, "--groupby", "nope", "--out", "d.csv"), "cellvi de", api["groupby"]),
        (
            ("de", "fit", data, "--groupby", "cell_type", "--group1", "type_9", "--out", "d.csv"),
            "cellvi de",
            api["group"],
        ),
        (
            ("de", "fit", data, "--out", "d.csv"),
            "cellvi de",
            "Say which cells to compare: --groupby COLUMN, or --idx1 QUERY.",
        ),
        (
            ("latent", "fit", "new_batches.h5ad", "--out", "l.h5ad"),
            "cellvi latent",
            f"{api['unseen batch']} {MAPPING_HINT}",
        ),
        (
            ("latent", "fit", data, "--out", "latent.txt"),
            "cellvi latent",
            "--out latent.txt: cannot write a .txt file; use .h5ad, .csv, .tsv, .parquet.",
        ),
    ]


def _check_failure(args, command, message, exit_code, stdout, stderr) -> None:
    assert exit_code == 1, (args, stderr)
    assert stdout == "", (args, stdout)
    lines = stderr.splitlines()
    assert len(lines) == 1, (args, stderr)  # one line: no traceback, no usage text
    if message is None:
        assert lines[0].startswith(f"{command}: error: notes.txt cannot be read as an .h5ad")
    else:
        assert lines[0] == f"{command}: error: {' '.join(message.split())}", args


def test_bad_input_gets_the_python_apis_message_on_one_line(
    fitted, work: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    cases = _bad_input_cases(work, data, fitted[0] / "model")
    runner = CliRunner()
    for args, command, message in cases:
        result = runner.invoke(cli, [str(arg) for arg in args], prog_name="cellvi")
        _check_failure(args, command, message, result.exit_code, result.stdout, result.stderr)
    # Failed fits leave nothing behind.
    assert not any((work / f"x{i}").exists() for i in range(1, 11))
    # The same, through the installed script: a missing file, an unknown key, a model
    # directory that is not one.
    chosen = [
        case for case in cases if case[0][:2] in (("fit", "missing.h5ad"), ("latent", "empty"))
    ]
    chosen.append(next(case for case in cases if "--batch-key" in case[0]))
    for (args, command, message), done in zip(
        chosen, cellvi_run_many([args for args, _, _ in chosen], cwd=work), strict=True
    ):
        _check_failure(args, command, message, done.returncode, done.stdout, done.stderr)


def test_bad_usage_exits_with_status_2(work: Path, data: Path) -> None:
    cases = [
        ("fit", data, "--model", "bogus", "--out", "u1"),
        ("fit", data, "--bogus-option", "--out", "u2"),
    ]
    for args, done in zip(cases, cellvi_run_many(cases, cwd=work), strict=True):
        assert done.returncode == 2, (args, done.stderr)
        assert "Usage: cellvi fit" in done.stderr and "Error:" in done.stderr, done.stderr
    runner = CliRunner()
    for args, expected in [
        (("fit", data), "Missing option '--out'"),
        (("fit", data, "--max-epochs", 0, "--out", "u3"), "0 is not in the range x>=1"),
        (("fitt", data), "No such command 'fitt'"),
        (("latent", "fit"), "Missing argument 'DATA'"),
        (("fit", data, "--out", "u4", "--devices", "gpu0"), "'gpu0': use 'auto'"),
    ]:
        result = runner.invoke(cli, [str(arg) for arg in args], prog_name="cellvi")
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.stderr, result.stderr


def test_help_through_the_installed_script_and_the_version(work: Path) -> None:
    top = ok(cellvi_run("--help", cwd=work))
    for name in SUBCOMMANDS:
        assert re.search(rf"^  {name} ", top.stdout, re.MULTILINE), name
    assert "Exit status: 0 success, 2 bad usage" in top.stdout
    version = CliRunner().invoke(cli, ["--version"], prog_name="cellvi")
    assert version.stdout.strip() == f"cellvi, version {cellvi.__version__}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"], prog_name="cellvi")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cellvi {name} [OPTIONS]")
    assert "Example:" in result.output
    for option in ("--verbosity", "--quiet"):
        assert option in result.output
