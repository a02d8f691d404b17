"""Token choice and log-probabilities from one row of logits, vectorised with numpy.

llama-cpp-python's own ``logprobs=`` path converts the whole row to a Python list and sorts it for every
token; here the sampled token's log-probability costs one max, one exp and one sum over the vocabulary,
and the top-n candidates one ``argpartition``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["choose_token", "log_normalizer", "top_candidates"]

Logits = npt.NDArray[np.float32]

# First guess of how many candidates hold top_p of the mass; grown by 4x until they do.
_NUCLEUS_GUESS = 64


def log_normalizer(row: Logits, scratch: Logits | None = None) -> float:
    """``log(sum(exp(row)))`` computed stably: ``row[i] - log_normalizer(row)`` is token i's log-probability
    under the model's own distribution (temperature 1, no filtering), as llama.cpp reports it. ``scratch``
    (same shape) saves allocating a vocabulary-sized temporary per token."""
    peak = row.max()
    tmp = np.subtract(row, peak, out=scratch)
    np.exp(tmp, out=tmp)
    # float32 pairwise summation, as llama-cpp-python's logits_to_logprobs does
    return float(peak) + float(np.log(tmp.sum()))


def top_candidates(row: Logits, n: int) -> npt.NDArray[np.intp]:
    """Indices of the ``n`` largest logits, largest first (ties broken by index for determinism)."""
    n = min(n, row.shape[0])
    idx = np.arange(row.shape[0]) if n >= row.shape[0] else np.argpartition(-row, n - 1)[:n]
    # lexsort: last key is primary; stable secondary key keeps equal logits in token-id order.
    return idx[np.lexsort((idx, -row[idx]))]


def choose_token(
    row: Logits,
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    rng: np.random.Generator | None,
) -> int:
    """Greedy when ``rng`` is None or ``temperature`` is 0; otherwise temperature, then top-k, then top-p
    (nucleus), then one draw from ``rng`` (one uniform number per token, so a seed reproduces a run)."""
    if rng is None or temperature <= 0.0:
        return int(row.argmax())
    vocab = row.shape[0]
    scaled = row.astype(np.float64) / temperature
    scaled -= scaled.max()
    weights = np.exp(scaled)
    if 0 < top_k < vocab:
        pool = top_candidates(row, top_k)
    elif top_p < 1.0:
        # The nucleus is usually a few dozen tokens: look at the largest ones first instead of sorting
        # the whole vocabulary.
        total = weights.sum()
        guess = _NUCLEUS_GUESS
        while True:
            pool = top_candidates(row, guess)
            if weights[pool].sum() >= top_p * total or pool.shape[0] == vocab:
                break
            guess *= 4
    else:
        pool = np.arange(vocab)
    pool_weights = weights[pool]
    if top_p < 1.0:
        # pool is sorted by logit, largest first: keep the smallest prefix holding top_p of its mass.
        cumulative = np.cumsum(pool_weights)
        keep = int(np.searchsorted(cumulative, top_p * cumulative[-1])) + 1
        pool, pool_weights = pool[:keep], pool_weights[:keep]
    cumulative = np.cumsum(pool_weights)
    pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(pool[min(pick, pool.shape[0] - 1)])
