"""Tables carry their provenance and are written atomically; gathering sorts for reruns."""

import importlib.metadata

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy

from nsdbench import __version__
from nsdbench.tables import SCORE_COLUMNS, config_hash, gather_scores, read_provenance, write_table


def score_table(order):
    rows = [dict.fromkeys(SCORE_COLUMNS, 0) | {"model": "m", "layer_index": i, "subject": "01",
                                              "roi": "V1", "metric": "versa", "split": "train",
                                              "score": i / 10} for i in order]
    return pd.DataFrame(rows)


def test_provenance_round_trip_and_no_partial_left(tmp_path):
    config = {"seed": 3, "models": [{"name": "m"}]}
    path = tmp_path / "tables" / "scores.parquet"
    write_table(score_table([0, 1]), path, config)
    assert read_provenance(path) == {
        "nsdbench_version": __version__, "config_sha256": config_hash(config), "seed": "3",
        "numpy_version": np.__version__, "scipy_version": scipy.__version__,
        "pandas_version": pd.__version__, "pyarrow_version": pa.__version__,
        "torch_version": importlib.metadata.version("torch"),
    }
    assert list(path.parent.iterdir()) == [path]
    assert config_hash(config) != config_hash({**config, "seed": 4})


def test_gather_sorts_rows_whatever_the_job_order(tmp_path):
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    score_table([2, 0]).to_parquet(first)
    score_table([1]).to_parquet(second)
    one = gather_scores([first, second])
    other = gather_scores([second, first])
    assert one["layer_index"].tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(one, other)
