import pandas as pd

from cellvi.train import HistoryLogger


def test_history_tables_indexed_by_epoch():
    logger = HistoryLogger()
    logger.log_metrics({"elbo_train": 3.0, "epoch": 0}, step=4)
    logger.log_metrics({"elbo_validation": 2.5, "epoch": 0}, step=4)
    logger.log_metrics({"elbo_train": 2.0, "epoch": 1}, step=9)
    logger.log_metrics({"elbo_train": 1.5, "epoch": 1}, step=9)  # last value of an epoch wins
    history = logger.history
    expected = pd.DataFrame({"elbo_train": [3.0, 1.5]}, index=pd.Index([0, 1], name="epoch"))
    pd.testing.assert_frame_equal(history["elbo_train"], expected)
    assert list(history["elbo_validation"].index) == [0]


def test_history_falls_back_to_step_without_epoch():
    logger = HistoryLogger()
    logger.log_metrics({"metric": 1.0}, step=7)
    logger.log_metrics({"metric": 2.0}, step=9)
    assert list(logger.history["metric"].index) == [7, 9]
    assert logger.history["metric"].index.name == "step"
