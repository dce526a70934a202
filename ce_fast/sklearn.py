"""A drop-in replacement for ``sklearn.metrics.log_loss`` with the semantics,
warnings and error messages of scikit-learn 1.9.1, and the arithmetic in one
multi-threaded ce_fast kernel: change the import, keep the code::

    from ce_fast.sklearn import log_loss

scikit-learn must be installed: its own parameter validation, input checks
and label handling (``LabelBinarizer``'s classes) are used, so every input is
accepted, converted or refused exactly as scikit-learn does. What is not
reused is the N x C one-hot matrix of the labels and the N x C temporaries
of the loss: the labels become class indices (in ``LabelBinarizer``'s order)
and the kernel reads each probability once, making scikit-learn's checks
(finite, within [0, 1], rows summing to 1) and the loss in the same pass.

Inputs the kernel does not take (float16 or non-NumPy probabilities,
multilabel-indicator or multi-output targets, scikit-learn's array-API
dispatch) are handed to scikit-learn's own ``log_loss``; so is every input
that scikit-learn refuses, once this function has found a reason to refuse
it, so that the first error raised (and the warnings before it) are
scikit-learn's own, message for message."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._core import ce_status

SKLEARN_VERSION = "1.9.1"  # the release whose semantics this follows

__all__ = ["SKLEARN_VERSION", "log_loss", "path_counts"]

_NOT_NORMALISED = "The y_prob values do not sum to one. Make sure to pass probabilities."
# an integer label range up to this many times the sample count is encoded by
# a lookup table (O(n)); wider ranges by np.unique (a sort), as scikit-learn
_TABLE_SPAN = 4


class _Refused(Exception):
    """scikit-learn would refuse this input (or the kernel does not take it):
    scikit-learn's own log_loss then raises (or computes)."""


_PATHS: dict[tuple[str, str], int] = {}


def path_counts() -> dict[tuple[str, str], int]:
    """How many calls ran on ce_fast's kernel ("kernel") or were handed to
    scikit-learn's own log_loss ("sklearn", for the inputs it refuses or
    the kernel does not take) in this process: a test hook."""
    return dict(_PATHS)


def _count(path: str) -> None:
    _PATHS["log_loss", path] = _PATHS.get(("log_loss", path), 0) + 1


def original() -> Any:
    """scikit-learn's own log_loss (ImportError without scikit-learn)."""
    from sklearn.metrics import _classification

    return _classification.log_loss


def _checked(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A scikit-learn check; any error it raises is scikit-learn's to raise."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise _Refused from e


def _proba(y_proba: Any) -> np.ndarray:
    """y_proba as scikit-learn's check_array leaves it (float32 / float64,
    1-d or 2-d, at least one sample; finiteness is checked by the kernel)."""
    p: np.ndarray = y_proba
    fast = (
        type(p) is np.ndarray
        and p.dtype in (np.float32, np.float64)
        and p.ndim in (1, 2)
        and p.shape[0] > 0
        and (p.ndim == 1 or p.shape[1] > 0)
    )
    if not fast:
        from sklearn.utils._array_api import supported_float_dtypes
        from sklearn.utils.validation import check_array

        p = np.asarray(_checked(check_array, y_proba, ensure_2d=False, dtype=supported_float_dtypes(np)))
    if p.dtype not in (np.float32, np.float64) or p.ndim not in (1, 2):
        raise _Refused  # float16 (kept by check_array), a 2-d check_array of a 1-d pandas...
    if not p.flags.aligned or not p.dtype.isnative:
        p = np.ascontiguousarray(p, p.dtype.newbyteorder("="))
    return p


def _int_classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(np.unique(y), index of each y in it) for 1-d integer labels, by a
    lookup table over the label range when it is narrow (no sort)."""
    lo, hi = int(y.min()), int(y.max())
    span = hi - lo + 1
    if span > _TABLE_SPAN * y.size + 1024:
        classes, idx = np.unique(y, return_inverse=True)
        return classes, idx.astype(np.int64, copy=False).reshape(-1)
    off = (y - y.dtype.type(lo)).astype(np.intp, copy=False) if lo else y.astype(np.intp, copy=False)
    present = np.flatnonzero(np.bincount(off, minlength=span))
    lut = np.empty(span, np.int64)
    lut[present] = np.arange(present.size)
    return (present + lo).astype(y.dtype), lut[off]


def _encode(y_true: Any, labels: Any) -> tuple[np.ndarray, int, list[str]]:
    """(class index of each sample, number of classes, the warnings to
    emit): ``_one_hot_encoding_multiclass_target`` without the one-hot."""
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils._array_api import _isin
    from sklearn.utils.multiclass import type_of_target
    from sklearn.utils.validation import column_or_1d

    notes: list[str] = []
    y = np.asarray(y_true) if isinstance(y_true, (np.ndarray, list, tuple)) else None
    int_path = y is not None and y.ndim == 1 and y.dtype.kind in "iu" and y.size > 0
    if not int_path:  # the type scikit-learn's label_binarize requires
        if _checked(type_of_target, y_true) not in ("binary", "multiclass"):
            raise _Refused
    if labels is not None:
        lb = _checked(LabelBinarizer().fit, labels)
        if not _checked(lambda: bool(np.all(lb.classes_ == labels))):
            notes.append(
                f"Labels passed were {labels}. But this function "
                "assumes labels are ordered lexicographically. "
                f"Pass the ordered labels={lb.classes_.tolist()} and ensure that "
                "the columns of y_prob correspond to this ordering."
            )
        classes = lb.classes_
    if int_path:
        assert y is not None
        present, idx = _int_classes(y)
        if labels is None:
            classes = present
        else:
            if not _checked(lambda: bool(np.all(np.isin(present, labels)))):
                raise _Refused
            idx = np.searchsorted(classes, present)[idx]
    else:
        if labels is None:
            classes = _checked(LabelBinarizer().fit, y_true).classes_
        elif not _checked(lambda: bool(np.all(_isin(y_true, labels, xp=np)))):
            raise _Refused
        y1 = _checked(column_or_1d, y_true)
        idx = np.searchsorted(classes, y1)
        if not np.array_equal(classes[np.minimum(idx, len(classes) - 1)], y1):
            raise _Refused  # pragma: no cover - the checks above make every label a class
        idx = idx.astype(np.int64, copy=False)
    if len(classes) == 1:
        raise _Refused
    return np.ascontiguousarray(idx, np.int64), len(classes), notes


def _fast(y_true: Any, y_proba: Any, normalize: Any, sample_weight: Any, labels: Any) -> float:
    from sklearn import get_config
    from sklearn.utils.validation import _check_sample_weight, check_consistent_length

    if get_config().get("array_api_dispatch", False):
        raise _Refused
    p = _proba(y_proba)
    _checked(check_consistent_length, p, y_true, sample_weight)
    w = None
    if sample_weight is not None:
        _checked(_check_sample_weight, sample_weight, p, force_float_dtype=False)
        w = _checked(np.asarray, sample_weight, dtype=np.float64)
        if w.shape != (p.shape[0],):
            raise _Refused  # pragma: no cover - _check_sample_weight refuses these
        w = np.ascontiguousarray(w)
    idx, n_classes, notes = _encode(y_true, labels)
    C = p.shape[1] if p.ndim == 2 else 1
    if n_classes != max(C, 2):  # a 1-d (or one-column) y_proba is the binary [1 - p, p]
        raise _Refused
    eps = float(np.finfo(p.dtype).eps)
    # xpx.isclose(s, 1, rtol=sqrt(eps)): |s - 1| <= 1e-8 + rtol * 1, in p's dtype
    tol = float(p.dtype.type(1e-8) + p.dtype.type(math.sqrt(eps)) * p.dtype.type(1))
    status, loss, wsum, nonfinite, out_of_range, not_normalised, _ = _core.log_loss(
        p=p, N=p.shape[0], C=C, ps=(p.strides[0] // p.itemsize, p.strides[-1] // p.itemsize),
        label=idx, w=w, eps=eps, sum_tol=tol,
    )  # fmt: skip
    if status == ce_status.CE_ERR_NOMEM:
        raise MemoryError("ce_fast: a kernel could not allocate its scratch memory")
    if status != ce_status.CE_OK:  # pragma: no cover - _encode makes every index a class
        raise _Refused
    if nonfinite or out_of_range or (normalize and w is not None and wsum == 0.0):
        raise _Refused
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    if not_normalised:
        warnings.warn(_NOT_NORMALISED, UserWarning, stacklevel=3)
    return float(loss / wsum) if normalize else float(loss)


def _log_loss(
    y_true: Any,
    y_proba: Any = None,
    *,
    normalize: Any = True,
    sample_weight: Any = None,
    labels: Any = None,
    y_pred: Any = "deprecated",
) -> float:
    # TODO(scikit-learn 1.11): y_pred goes, as in scikit-learn
    if not (isinstance(y_pred, str) and y_pred == "deprecated"):
        if y_proba is not None:
            raise ValueError(
                "Cannot use both `y_pred` and `y_proba`. `y_pred` is deprecated, use `y_proba` instead."
            )
        warnings.warn(
            "`y_pred` was renamed to `y_proba` in version 1.9 and will be removed "
            "in 1.11. Use `y_proba` instead.",
            FutureWarning,
            stacklevel=2,
        )
        y_proba = y_pred
    try:
        res = _fast(y_true, y_proba, normalize, sample_weight, labels)
        _count("kernel")
        return res
    except _Refused:
        _count("sklearn")
        fn = original()
        return float(fn(y_true, y_proba, normalize=normalize, sample_weight=sample_weight, labels=labels))


_validated: Any = None


def log_loss(
    y_true: ArrayLike,
    y_proba: ArrayLike | None = None,
    *,
    normalize: bool = True,
    sample_weight: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    y_pred: Any = "deprecated",
) -> float:
    global _validated
    if _validated is None:
        try:
            orig = original()
            from sklearn.utils._param_validation import validate_params
        except ImportError as e:
            raise ImportError(
                "ce_fast.sklearn.log_loss uses scikit-learn's own input checks: install scikit-learn"
            ) from e
        _log_loss.__qualname__ = _log_loss.__name__ = "log_loss"
        constraints = orig.__wrapped__._skl_parameter_constraints
        _validated = validate_params(constraints, prefer_skip_nested_validation=True)(_log_loss)
    return float(
        _validated(
            y_true, y_proba, normalize=normalize, sample_weight=sample_weight, labels=labels, y_pred=y_pred
        )
    )


log_loss.__doc__ = """Log loss, aka logistic loss or cross-entropy loss, as
    ``sklearn.metrics.log_loss`` (scikit-learn 1.9.1).

    ``-mean_i log(clip(p[i, y_i], eps, 1 - eps))`` (weighted by
    ``sample_weight``; the sum with ``normalize=False``), with ``eps`` the
    machine epsilon of ``y_proba``'s dtype and the classes ordered as
    ``LabelBinarizer`` orders them.

    Parameters
    ----------
    y_true : array-like
        Ground-truth labels of the n_samples samples.
    y_proba : array-like of float, shape (n_samples, n_classes) or (n_samples,)
        Predicted probabilities; a 1-d array is the probability of the
        positive class of a binary problem.
    normalize : bool, default True
        The mean per sample (else the sum).
    sample_weight : array-like of shape (n_samples,), optional
        Sample weights.
    labels : array-like, optional
        The class labels (else those of ``y_true``).
    y_pred : array-like, deprecated
        The former name of ``y_proba`` (deprecated in scikit-learn 1.9).

    Returns
    -------
    loss : float

    Notes
    -----
    Row i's loss is exactly ``-log(clip(p[i, y_i]))``: scikit-learn's
    product with a one-hot matrix adds only zeros (``xlogy(0, p) = 0``).
    One kernel pass reads ``y_proba`` once and makes scikit-learn's checks
    (finite, within [0, 1]; a ``UserWarning`` when a row does not sum to 1
    within ``sqrt(eps)``) together with the loss; integer labels are encoded
    by a lookup table over their range (no sort) when it is narrow. The sums
    are kept in double and combined in a fixed order: the result is bitwise
    identical for every thread count (the OpenMP default; threadpoolctl
    limits it), and as accurate as scikit-learn's or more. As in
    scikit-learn 1.9.1, probabilities are not renormalised.

    Examples
    --------
    >>> from ce_fast.sklearn import log_loss
    >>> round(log_loss(["spam", "ham", "ham", "spam"],
    ...                [[.1, .9], [.9, .1], [.8, .2], [.35, .65]]), 5)
    0.21616
"""
