"""Parquet tables with provenance, written atomically.

Every table carries, in its Parquet key-value metadata, the package version, the hash of the
configuration and the global seed, so a table found on disk says how it was made.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nsdbench import __version__
from nsdbench.atomic import replaced_when_done

SCORE_COLUMNS = [
    "model", "source", "architecture", "task", "task_category", "input_diet", "trained",
    "layer", "layer_index", "layer_depth", "subject", "roi", "metric", "split", "score",
    "n_voxels", "n_images", "srp_dim", "alpha",
]
MODEL_COLUMNS = ["source", "architecture", "task", "task_category", "input_diet", "trained"]


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


# Libraries whose versions every table records; torch only where it is installed (read from
# its package metadata: importing torch costs seconds in jobs that never use it).
RECORDED_LIBRARIES = ("numpy", "scipy", "pandas", "pyarrow", "torch")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in RECORDED_LIBRARIES:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            versions[f"{name}_version"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # importable but not installed as a dist
            versions[f"{name}_version"] = getattr(__import__(name), "__version__", "unknown")
    return versions


def provenance(config: dict) -> dict[str, str]:
    return {
        "nsdbench_version": __version__,
        "config_sha256": config_hash(config),
        "seed": str(config.get("seed")),
        **library_versions(),
    }


def write_table(table: pd.DataFrame, path, config: dict) -> None:
    """Write ``table`` to ``path`` with provenance metadata, via a temporary name."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    metadata = dict(arrow.schema.metadata or {})
    metadata.update({f"nsdbench.{key}".encode(): value.encode()
                     for key, value in provenance(config).items()})
    arrow = arrow.replace_schema_metadata(metadata)
    with replaced_when_done(path) as partial:
        pq.write_table(arrow, partial)


def read_provenance(path) -> dict[str, str]:
    metadata = pq.read_schema(path).metadata or {}
    return {
        key.decode().removeprefix("nsdbench."): value.decode()
        for key, value in metadata.items() if key.startswith(b"nsdbench.")
    }


def score_rows(scores: pd.DataFrame, model_entry: dict, layer: dict) -> pd.DataFrame:
    """Long-format score rows of one layer, with the model's and the layer's descriptors."""
    scores = scores.copy()
    scores["model"] = model_entry["name"]
    for column in MODEL_COLUMNS:
        scores[column] = model_entry[column]
    scores["layer"] = layer["layer"]
    scores["layer_index"] = int(layer["layer_index"])
    scores["layer_depth"] = float(layer["layer_depth"])
    scores["subject"] = scores["subject"].astype(str)
    return scores[SCORE_COLUMNS]


def gather_scores(paths) -> pd.DataFrame:
    """All per-job score tables as one long table, sorted so reruns compare byte for byte."""
    table = pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True)
    keys = ["model", "layer_index", "subject", "roi", "metric", "split"]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)[SCORE_COLUMNS]
