"""k-fold cross-validation: which examples of a training part validate in fold `fold` of `folds`. Every data module
carves its validation part here, so `data.folds=K data.fold=I` means the same on every dataset:

    python -m experiments -m data=image_folder data.root=<folder> data.folds=5 'data.fold=range(5)'

The folds partition the training part (every example validates in exactly one fold), stratified by class (each
fold holds the classes in the proportions of the whole, to within one example), drawn with `split_seed`; the test
split is carved before and never enters them. Without `folds` (null), the validation part is a random `val_size`
of the training part, as before. A table module or one's own calls `validation_rows` the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from experiments.core.errors import UserError
from experiments.core.rules import integer, is_integer, require


def carve(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of n items split at random into (rest, carved), `fraction` carved; the same for the same seed."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = round(fraction * n)
    return order[cut:], order[:cut]


def check_folds(folds: int | None, fold: int) -> None:
    """`folds`: null, or an integer >= 2; `fold`: an integer from 0 to folds - 1."""
    if folds is None:
        if fold != 0:
            raise UserError(f"data.fold={fold!r} needs data.folds, the number of folds: e.g. data.folds=5")
        return
    if not is_integer(folds) or folds < 2:
        raise UserError(
            f"data.folds={folds!r} is not allowed: it must be an integer >= 2 (k-fold cross-validation), "
            "or null for one validation split of data.val_size"
        )
    require("data", fold=(fold, integer(0, folds - 1)))


def fold_indices(labels: Sequence[int] | torch.Tensor, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(train, val) positions in `labels` for fold `fold` of `folds`, stratified by class, shuffled with `seed`.

    Each class's examples are shuffled and dealt to the folds in turn, the deal of each class starting where the
    last one ended, so the folds' sizes differ by one at most."""
    check_folds(folds, fold)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if len(y) < folds:
        raise UserError(f"data.folds={folds}: the training part has only {len(y)} examples; choose fewer folds")
    rng = np.random.default_rng(seed)
    which = np.empty(len(y), dtype=np.int64)
    start = 0
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        which[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    val = torch.from_numpy(np.flatnonzero(which == fold))
    train = torch.from_numpy(np.flatnonzero(which != fold))
    return train, val


def validation_rows(
    labels: Sequence[int] | torch.Tensor, val_size: float, seed: int, folds: int | None = None, fold: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) positions in a training part of these labels: fold `fold` of `folds` when `folds` is set, else a
    random `val_size` of them (every dataset's split without folds)."""
    if folds is None:
        return carve(len(labels), val_size, seed)
    return fold_indices(labels, folds, fold, seed)
