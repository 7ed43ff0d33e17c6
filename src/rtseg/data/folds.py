"""K of N deterministic cross-validation folds of the training cases, stratified on the contoured organs.

``rtseg train --fold K`` trains on the other folds' cases and validates on fold K's (its held-out part);
``rtseg cv`` gathers the held-out predictions of every fold. With partially contoured data
(DATASET.PARTIAL_LABELS, ABSENT_IS_UNKNOWN) a plain random split can leave a rarely contoured organ
out of a fold's validation (or training) part; the assignment here deals the cases of the rarest organs
first, each to the fold holding the fewest cases of that organ among the folds with the fewest cases, so
per fold the count of cases contouring each organ stays balanced. The order is fixed by the case ids and
``FOLD_SEED``: the same cases give the same folds on every machine.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Collection, Mapping, Sequence

import numpy as np

from rtseg.config.schema import DatasetConfig
from rtseg.io.layouts.dataset_json import read_partial_labels
from rtseg.io.layouts.registry import CaseRef, read_case_labels
from rtseg.errors import ConfigError

FOLD_SEED = 12345


def assign_folds(organs: Mapping[str, Collection[int]], n_folds: int, seed: int = FOLD_SEED) -> dict[str, int]:
    """Case id -> fold in 0..n_folds-1 from the organs each case contours; fold sizes differ by at most one.

    The rarest organs' cases are dealt first, each to the fold (among the smallest) holding the fewest cases
    of its rarest organs; then swaps of two cases between folds are made while they lower the squared
    spread of the per-fold organ counts (sizes unchanged), so common organs end balanced too."""
    ids = sorted(organs)
    if n_folds < 2 or n_folds > len(ids):
        raise ConfigError(f"DATASET.FOLDS {n_folds}: need 2 <= FOLDS <= the {len(ids)} training cases")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    every = sorted({o for c in ids for o in organs[c]})
    frequency = {o: sum(o in organs[c] for c in ids) for o in every}
    index = {o: i for i, o in enumerate(every)}
    member = {c: sorted((index[o] for o in organs[c]), key=lambda i: (frequency[every[i]], i)) for c in ids}
    order.sort(key=lambda c: [frequency[every[i]] for i in member[c]] or [len(ids) + 1])  # stable: the shuffle breaks ties
    counts = np.zeros((n_folds, len(every)), dtype=np.int64)
    sizes = np.zeros(n_folds, dtype=np.int64)
    out: dict[str, int] = {}
    for case in order:
        open_folds = np.flatnonzero(sizes == sizes.min())
        fold = int(min(open_folds, key=lambda f: ([int(counts[f, i]) for i in member[case]], int(f))))
        out[case] = fold
        sizes[fold] += 1
        counts[fold, member[case]] += 1
    _balance_by_swaps(out, member, counts, order)
    return out


def _balance_by_swaps(folds: dict[str, int], member: Mapping[str, list[int]], counts: np.ndarray, order: Sequence[str]) -> None:
    """Swap pairs of cases between folds while a swap lowers sum((counts - mean)^2); deterministic order."""
    vectors = {c: np.bincount(np.asarray(member[c], dtype=np.int64), minlength=counts.shape[1]) for c in order}
    improved = True
    while improved:
        improved = False
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                fa, fb = folds[a], folds[b]
                diff = vectors[a] - vectors[b]
                if fa == fb or not diff.any():
                    continue
                # moving a: fa -> fb and b: fb -> fa changes counts[fa] by -diff and counts[fb] by +diff
                gain = int(((counts[fa] - diff) ** 2 + (counts[fb] + diff) ** 2 - counts[fa] ** 2 - counts[fb] ** 2).sum())
                if gain < 0:
                    counts[fa] -= diff
                    counts[fb] += diff
                    folds[a], folds[b] = fb, fa
                    improved = True


def case_organs(dataset: DatasetConfig, refs: Sequence[CaseRef]) -> dict[str, frozenset[int]]:
    """The organs (labels >= 1) each case contours: PARTIAL_LABELS' list, else (ABSENT_IS_UNKNOWN) the labels
    present in its label file, else all of them."""
    names = dataset.class_names()
    listed = read_partial_labels(dataset.PARTIAL_LABELS, [r.case_id for r in refs], names) if dataset.PARTIAL_LABELS else {}
    every = frozenset(range(1, dataset.N_CLASSES))
    out = {}
    for ref in refs:
        if ref.case_id in listed:
            out[ref.case_id] = frozenset(listed[ref.case_id]) - {0}
        elif dataset.ABSENT_IS_UNKNOWN:
            out[ref.case_id] = _present(ref) & every
        else:
            out[ref.case_id] = every
    return out


@lru_cache(maxsize=4096)
def _present(ref: CaseRef) -> frozenset[int]:
    """Labels in a case's label file (read once per process: every split listing asks again)."""
    counts = np.bincount(np.asarray(read_case_labels(ref).array, dtype=np.int64).ravel())
    return frozenset(int(v) for v in np.flatnonzero(counts))


@lru_cache(maxsize=16)
def _assigned(organs: tuple[tuple[str, frozenset[int]], ...], n_folds: int) -> dict[str, int]:
    """``assign_folds`` once per process for the same cases (training lists its splits several times)."""
    return assign_folds(dict(organs), n_folds)


def fold_cases(dataset: DatasetConfig, train_refs: Sequence[CaseRef], held_out: bool) -> list[CaseRef]:
    """Fold ``dataset.FOLD``'s held-out cases (``held_out``) or the other folds' (its training cases)."""
    fold, n_folds = dataset.FOLD, dataset.FOLDS
    if fold is None or not 0 <= fold < n_folds:
        raise ConfigError(f"DATASET.FOLD {fold}: expected 0..{n_folds - 1} (DATASET.FOLDS is {n_folds})")
    folds = _assigned(tuple(sorted(case_organs(dataset, train_refs).items())), n_folds)
    return [r for r in train_refs if (folds[r.case_id] == fold) == held_out]
