"""Split a model's layers into extraction groups and fit blocks.

An extraction group is a run of layers whose features for all probe images fit in
``scratch_gb``: one forward pass writes them, and they are deleted once fitted. A fit block is
a run of at most ``layers_per_job`` layers of one group, scored by one job (process start-up
costs about a second, so a laptop wants dozens of layers per job; a cluster with job arrays 1).
"""

from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger(__name__)

def assign_jobs(
    inventory: pd.DataFrame, n_images: int, scratch_gb: float, layers_per_job: int,
    bytes_per_feature: int = 2,
) -> pd.DataFrame:
    """The inventory with ``group`` and ``block`` columns (both small integers, in order).

    ``bytes_per_feature``: 2 for float16 stores (the default), 4 for float32."""
    if inventory.empty:
        raise ValueError("the layer inventory is empty: the model has no layers to benchmark")
    budget = scratch_gb * 1e9
    groups, blocks = [], []
    group = block = 0
    group_bytes = 0.0
    block_size = 0
    for n_features in inventory["n_features"]:
        layer_bytes = float(n_features) * n_images * bytes_per_feature
        if layer_bytes > budget:
            log.warning(
                "a layer needs %.1f GB of features, more than extraction.scratch_gb=%g; "
                "it gets a group of its own", layer_bytes / 1e9, scratch_gb,
            )
        if groups and group_bytes + layer_bytes > budget:
            group, group_bytes = group + 1, 0.0
            block, block_size = block + 1, 0
        elif groups and block_size >= layers_per_job:
            block, block_size = block + 1, 0
        groups.append(group)
        blocks.append(block)
        group_bytes += layer_bytes
        block_size += 1
    return inventory.assign(group=groups, block=blocks)
