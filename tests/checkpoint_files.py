"""Helpers of the checkpoint tests: damage a checkpoint file on purpose."""

from __future__ import annotations

import json

import numpy as np


def rewrite(path, change):
    """Rewrite a checkpoint with ``change(arrays, meta)`` applied."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    change(arrays, meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
