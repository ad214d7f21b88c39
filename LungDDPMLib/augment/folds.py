"""Cross-validation folds over the real cases, with every synthetic variant kept beside its source case.

A variant shares its source's anatomy (it *is* that CT outside the new nodules), so training on a variant of a case
that the fold validates on leaks that case into training. Folds are therefore assigned to the real cases only
(seeded shuffle, then round robin) and a variant inherits its source's fold:

* nnU-Net ``splits_final.json`` (a list of ``{"train": [...], "val": [...]}``): fold ``f`` validates on the real
  cases of fold ``f`` and trains on the other folds' real cases and their variants; the variants of the validation
  cases are in neither list (validation measures real data).
* MONAI datalist: each ``training`` entry carries the ``fold`` of its source case (what Auto3DSeg's
  ``datafold_read`` splits on) and ``synthetic`` / ``source_case`` keys to filter on.

With fewer than :data:`N_FOLDS` real cases there is one fold per real case; fewer than two cannot be split.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..errors import InputError

N_FOLDS = 5


def assign_folds(real_cases: Sequence[str], seed: int, n_folds: int = N_FOLDS) -> Dict[str, int]:
    """``{case: fold}`` over ``min(n_folds, len(real_cases))`` folds, the same for the same names and seed.

    Example:
        >>> sorted(set(assign_folds(["a", "b", "c"], seed=0).values()))
        [0, 1, 2]
    """
    names = sorted(set(real_cases))
    if len(names) < 2:
        raise InputError(
            f"cross-validation folds need at least 2 real cases, got {len(names)}; add cases or use --format nifti"
        )
    folds = min(n_folds, len(names))
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[int(i)]: position % folds for position, i in enumerate(order)}


def nnunet_splits(folds: Dict[str, int], entries: Sequence[Tuple[str, str, bool]]) -> List[Dict[str, List[str]]]:
    """nnU-Net's ``splits_final.json`` from ``(case id, source case, synthetic)`` entries."""
    out = []
    for fold in range(max(folds.values()) + 1):
        val = sorted(cid for cid, src, synthetic in entries if not synthetic and folds[src] == fold)
        train = sorted(cid for cid, src, _ in entries if folds[src] != fold)
        out.append({"train": train, "val": val})
    return out


def monai_datalist(
    folds: Dict[str, int], entries: Sequence[Tuple[str, str, bool]], image: Dict[str, str], label: Dict[str, str]
) -> Dict[str, Any]:
    """A MONAI datalist (``monai.data.load_decathlon_datalist``): ``training`` entries with paths relative to the
    JSON's folder, each with the ``fold`` of its source case."""
    training = [
        {"image": image[cid], "label": label[cid], "fold": folds[src], "source_case": src, "synthetic": synthetic}
        for cid, src, synthetic in sorted(entries)
    ]
    return {"description": "lungddpm augment: real cases and their synthetic variants", "training": training}
