"""Pure math on logits: the temperature softmax and what a distribution says.

Every function takes numpy arrays, torch tensors or plain (nested) lists, 1-D ``(V,)`` or
batched ``(..., V)``; the last axis is the vocabulary. numpy and list inputs come back as numpy
``float64`` arrays, torch tensors as torch tensors on the same device, computed in float32 or
wider. This module never imports torch itself, so ``tempscope softmax`` stays fast.

Temperature boundaries, written down once:

- ``T = 0`` is greedy: all mass on the argmax (ties: the first maximum). Never a division by 0.
- ``0 < T < inf``: ``softmax(logits / T)``, computed as ``exp((l - max l) / T)`` so that
  ``T = 1e-6`` and ``T = 1e6`` stay finite and sum to 1.
- ``T = inf`` is uniform over the tokens whose logit is finite.
- ``-inf`` logits are masked tokens: probability 0 at every temperature.
- NaN or ``+inf`` logits, and a negative, NaN or non-numeric temperature, raise ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_torch_array

ArrayLike = Any  # numpy array, torch tensor, or a nested list of numbers


def check_temperature(temperature: object, *, name: str = "temperature") -> float:
    """Return ``temperature`` as a float, or raise ``ValueError`` saying what is wrong.

    Accepts any real number (``1`` as well as ``1.0``, numpy scalars included), ``0`` (greedy)
    and ``inf`` (uniform). Rejects booleans, strings, NaN and negatives.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(
            f"{name} must be a number >= 0 (0 = greedy, inf = uniform), got {temperature!r}"
        )
    value = float(temperature)
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"{name} must be a number >= 0 (0 = greedy, inf = uniform), got {temperature!r}"
        )
    return value


def as_array(logits: ArrayLike) -> Any:
    """Return ``logits`` as an array this module computes on: torch stays torch (float32 or
    wider), anything else becomes a numpy float64 array. Rejects empty, NaN and +inf input."""
    arr: Any
    if is_torch_array(logits):
        arr = logits if logits.is_floating_point() and logits.dtype.itemsize >= 4 else (
            logits.float()
        )
    else:
        try:
            arr = np.asarray(logits, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"logits must be numbers, got {logits!r}") from exc
    xp = array_namespace(arr)
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError(f"logits must have at least one entry on the last axis, got shape "
                         f"{tuple(arr.shape)}")
    bad = xp.isnan(arr) | (arr == math.inf)
    if bool(xp.any(bad)):
        index = tuple(int(i) for i in np.argwhere(np.asarray(_to_numpy(bad)))[0])
        value = float(arr[index])
        raise ValueError(
            f"logits must be finite or -inf (a masked token), got {value} at index "
            f"{index if len(index) > 1 else index[0]}"
        )
    if bool(xp.any(xp.all(arr == -math.inf, axis=-1))):
        raise ValueError("every logit in a row is -inf: at least one token must stay possible")
    return arr


def _to_numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if is_torch_array(x) else x


def log_softmax(logits: ArrayLike, temperature: float = 1.0) -> Any:
    """Log-probabilities of ``softmax(logits / temperature)`` over the last axis.

    Args:
        logits: ``(..., V)`` scores.
        temperature: ``>= 0``; 0 is greedy (``log 1 = 0`` on the argmax, ``-inf`` elsewhere),
            ``inf`` is uniform over finite logits.

    Returns:
        ``(..., V)`` log-probabilities; masked tokens are ``-inf``.

    >>> [round(float(x), 4) for x in log_softmax([2.0, 4.0, 3.0])]
    [-2.4076, -0.4076, -1.4076]
    """
    t = check_temperature(temperature)
    x = as_array(logits)
    xp = array_namespace(x)
    finite = x > -math.inf
    if t == 0:
        # Greedy: one-hot on the first maximum (argmax returns the first on ties).
        hit = xp.arange(x.shape[-1], device=getattr(x, "device", None)) == xp.argmax(
            x, axis=-1, keepdims=True
        )
        return xp.where(hit, xp.zeros_like(x), xp.full_like(x, -math.inf))
    if t == math.inf:
        count = xp.sum(xp.astype(finite, x.dtype), axis=-1, keepdims=True)
        return xp.where(finite, -xp.log(count), xp.full_like(x, -math.inf))
    # A T below the dtype's smallest normal number would become 0 in that dtype (0 / 0 on the
    # max); the probabilities are the same at that smallest number, so it stands in.
    t = max(t, float(xp.finfo(x.dtype).tiny))
    # Shift first, then scale: (l - max) / T <= 0, so nothing overflows at any T.
    z = (x - xp.max(x, axis=-1, keepdims=True)) / t  # (..., V), max entry is exactly 0
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def softmax(logits: ArrayLike, temperature: float = 1.0) -> Any:
    """Probabilities ``softmax(logits / temperature)`` over the last axis, stable at every T.

    Args:
        logits: ``(..., V)`` scores: numpy, torch or a list. ``-inf`` marks a masked token.
        temperature: ``>= 0``. 0 = greedy (one-hot on the first argmax); 1 = the model's own
            distribution; large values flatten toward uniform; ``inf`` = uniform.

    Returns:
        ``(..., V)`` probabilities that sum to 1 on the last axis.

    >>> [round(float(p), 8) for p in softmax([2, 4, 3])]
    [0.09003057, 0.66524096, 0.24472847]
    """
    lp = log_softmax(logits, temperature)
    return array_namespace(lp).exp(lp)


def entropy(probs: ArrayLike, *, bits: bool = False) -> Any:
    """Shannon entropy ``H = -sum p log p`` over the last axis, in nats (or bits).

    Zero-probability tokens contribute 0. Returns ``(...)``: a 0-d array for a 1-D input.

    >>> round(float(entropy([0.5, 0.5], bits=True)), 6)
    1.0
    """
    p = _probs(probs)
    xp = array_namespace(p)
    terms = xp.where(p > 0, -p * xp.log(xp.where(p > 0, p, xp.ones_like(p))), xp.zeros_like(p))
    h = xp.sum(terms, axis=-1)
    return h / math.log(2) if bits else h


def perplexity(probs: ArrayLike) -> Any:
    """``exp(H)``: the number of equally likely tokens with the same entropy.

    This is also the *effective vocabulary size*; see :func:`effective_vocab`.

    >>> round(float(perplexity([0.25] * 4)), 6)
    4.0
    """
    h = entropy(probs)
    return array_namespace(h).exp(h)


def effective_vocab(probs: ArrayLike) -> Any:
    """Effective vocabulary size ``exp(H)``: 1 for a one-hot, V for uniform."""
    return perplexity(probs)


def top_probability(probs: ArrayLike) -> Any:
    """Probability of the most likely token, ``(...)``."""
    p = _probs(probs)
    return array_namespace(p).max(p, axis=-1)


def top_p_mask(probs: ArrayLike, p: float) -> Any:
    """Boolean mask ``(..., V)`` of the smallest set of most likely tokens holding ``>= p`` mass.

    Tokens are taken in order of decreasing probability (ties: lower index first) until their
    sum reaches ``p``; the token that crosses ``p`` is included, so at least one token is always
    kept. ``p`` must be in ``(0, 1]``; ``p = 1`` keeps every token with nonzero probability.

    >>> top_p_mask([0.1, 0.6, 0.3], 0.8).tolist()
    [False, True, True]
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < float(p) <= 1:
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    q = _probs(probs)
    xp = array_namespace(q)
    order = xp.argsort(-q, axis=-1, stable=True)  # (..., V) most likely first
    sorted_p = xp.take_along_axis(q, order, axis=-1)
    before = xp.cumulative_sum(sorted_p, axis=-1) - sorted_p  # mass strictly before each token
    keep_sorted = (before < float(p) - 1e-12) & (sorted_p > 0)
    keep_sorted = keep_sorted | (xp.arange(q.shape[-1], device=getattr(q, "device", None)) == 0)
    inverse = xp.argsort(order, axis=-1, stable=True)
    return xp.take_along_axis(keep_sorted, inverse, axis=-1)


def top_p_size(probs: ArrayLike, p: float) -> Any:
    """How many tokens the smallest set holding ``p`` of the mass has, ``(...)``."""
    mask = top_p_mask(probs, p)
    xp = array_namespace(mask)
    return xp.sum(xp.astype(mask, xp.int64), axis=-1)


def inverse_cdf(weights: Any, u: Any) -> Any:
    """The inverse-CDF draw: per row, the first index whose cumulative weight exceeds
    ``u * total``. The one draw every sampler path uses (seeded chains, next-token views).

    Args:
        weights: ``(..., V)`` non-negative, unnormalised (probabilities, or ``exp(logits -
            max)``); numpy or torch. The CDF is summed in their dtype.
        u: ``(...)`` uniforms in ``[0, 1)`` (a number for one row).

    Returns:
        ``(...)`` int64 indices. The chosen entry always has weight > 0: its CDF entry is
        strictly above the previous one, and when rounding puts ``u * total`` at the very end,
        the last positive entry is taken.

    >>> w = np.array([0.2, 0.0, 0.8])
    >>> int(inverse_cdf(w, 0.1)), int(inverse_cdf(w, 0.5)), int(inverse_cdf(w, 0.9999999999))
    (0, 2, 2)
    """
    if is_torch_array(weights) and weights.ndim == 2:
        return _inverse_cdf_torch(weights, u)
    xp = array_namespace(weights)
    v = weights.shape[-1]
    cdf = xp.cumulative_sum(weights, axis=-1)  # (..., V), non-decreasing
    target = xp.asarray(u, dtype=cdf.dtype, device=getattr(cdf, "device", None))
    target = xp.expand_dims(target, axis=-1) * cdf[..., -1:]  # (..., 1)
    index = xp.sum(xp.astype(cdf <= target, xp.int64), axis=-1)  # searchsorted, side=right
    positive = xp.astype(xp.flip(weights > 0, axis=-1), xp.int8)
    last = v - 1 - xp.astype(xp.argmax(positive, axis=-1), xp.int64)  # last positive entry
    return xp.minimum(index, last)


def _inverse_cdf_torch(weights: Any, u: Any) -> Any:
    """:func:`inverse_cdf` for ``(B, V)`` torch weights, the same indices in fewer passes:
    a binary search per row; the first entry whose CDF exceeds the target always has weight
    > 0, so only rows where none does (rounding at the very end) look for the last positive
    entry."""
    import torch

    v = weights.shape[-1]
    cdf = torch.cumsum(weights, dim=-1)  # (B, V)
    target = torch.as_tensor(u, dtype=cdf.dtype, device=cdf.device).reshape(-1, 1)
    target = target * cdf[:, -1:]  # (B, 1)
    index = torch.searchsorted(cdf, target, right=True)[:, 0]  # (B,)
    over = index >= v
    if bool(over.any()):
        positive = torch.flip(weights[over] > 0, dims=(-1,)).to(torch.int8)
        index[over] = v - 1 - positive.argmax(dim=-1)
    return index


def _probs(probs: ArrayLike) -> Any:
    if is_torch_array(probs):
        return probs if probs.is_floating_point() and probs.dtype.itemsize >= 4 else probs.float()
    try:
        arr = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"probabilities must be numbers, got {probs!r}") from exc
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError(f"probabilities need at least one entry, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------- per-row selections
# Called for every row at every generated token, so on the CPU they run on numpy views of the
# tensors: numpy's argmax is one SIMD pass, torch's (2.x, CPU) is ~25 times slower on a
# 49,152-token row, and its top-k ~30 times.

BLOCK = 64  # top-k: entries per group whose maximum is compared first


def row_argmax(x: Any) -> Any:
    """``(B,)`` int64: each row's first maximum, for ``(B, V)`` numpy or torch input (torch
    comes back as torch on the same device)."""
    if is_torch_array(x) and x.device.type != "cpu":
        return x.argmax(dim=-1)
    out = np.asarray(_to_numpy(x)).argmax(axis=-1)
    return _like(x, out)


def top_ids(x: Any, k: int) -> Any:
    """``(B, k)`` int64: each row's ``k`` largest entries, largest first, ties by the lower
    index (so the answer never depends on the kernel); ``-inf`` entries come last, by index.

    On the CPU, in numpy: the entries are dealt into groups (entry ``i`` into group
    ``i % G``, :data:`BLOCK` entries each); every entry of the top ``k`` lies in a group whose
    maximum is at least the ``k``-th largest group maximum, so only those groups are sorted.
    """
    if k < 0 or k > x.shape[-1]:
        raise ValueError(f"k must be in [0, {x.shape[-1]}], got {k}")
    if is_torch_array(x) and x.device.type != "cpu":
        import torch

        # Descending values, ties by index: a stable sort (a GPU sorts a row fast).
        return torch.sort(x, dim=-1, descending=True, stable=True).indices[:, :k]
    a = np.asarray(_to_numpy(x))
    rows, v = a.shape
    if k == 1:
        return _like(x, a.argmax(axis=-1)[:, None])
    out = np.empty((rows, k), np.int64)
    if k == 0:
        return _like(x, out)
    groups = -(-v // BLOCK)
    if k * 4 >= groups:  # few groups: sort the whole row
        for r in range(rows):
            out[r] = np.lexsort((np.arange(v), -a[r]))[:k]
        return _like(x, out)
    padded = a if v == groups * BLOCK else np.pad(a, ((0, 0), (0, groups * BLOCK - v)),
                                                  constant_values=-np.inf)
    # (B, BLOCK, G): group g holds entries g, g + G, g + 2G, ...; the maximum over the middle
    # axis is an elementwise pass over contiguous rows.
    group_max = padded.reshape(rows, BLOCK, groups).max(axis=1)  # (B, G)
    kth = np.partition(group_max, groups - k, axis=-1)[:, groups - k]  # (B,)
    members = np.arange(BLOCK) * groups
    for r in range(rows):
        if kth[r] == -np.inf:
            # Fewer than k groups hold a finite entry: those groups, and the groups of the
            # k lowest indices (the -inf entries that may follow them).
            chosen = np.union1d(np.flatnonzero(group_max[r] > -np.inf), np.arange(k))
        else:
            chosen = np.flatnonzero(group_max[r] >= kth[r])
        ids = (chosen[:, None] + members).ravel()
        ids = ids[ids < v]
        out[r] = ids[np.lexsort((ids, -a[r, ids]))[:k]]
    return _like(x, out)


def rank_of(x: Any, ids: Any) -> Any:
    """``(B,)`` int64: the rank of entry ``ids[b]`` in row ``b`` (1 = the largest; entries
    equal to it do not count as above it)."""
    if is_torch_array(x) and x.device.type != "cpu":
        return (x > x.gather(1, ids.reshape(-1, 1))).sum(-1) + 1
    a = np.asarray(_to_numpy(x))
    at = np.asarray(_to_numpy(ids)).reshape(-1)
    chosen = a[np.arange(a.shape[0]), at][:, None]
    return _like(x, np.count_nonzero(a > chosen, axis=-1).astype(np.int64) + 1)


def _like(x: Any, out: Any) -> Any:
    """``out`` (numpy) as torch when ``x`` is a torch tensor."""
    if is_torch_array(x):
        import torch

        return torch.from_numpy(np.ascontiguousarray(out))
    return out
