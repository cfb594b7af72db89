"""Old spellings kept working for one release, with a ``DeprecationWarning`` (see CHANGELOG.md).

Every deprecated name, keyword or calling form goes through here, so removing them in
``REMOVAL`` is one search for this module's helpers.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp

REMOVAL = "0.3"


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that `old` is deprecated in favour of `new` (stacklevel 3: the caller of the caller)."""
    warnings.warn(f"{old} is deprecated, use {new} (the old form will be removed in fnn {REMOVAL})",
                  DeprecationWarning, stacklevel=stacklevel)


def deprecated_alias(old: str, new: str) -> Callable:
    """Decorate the old function `old`, which calls `new`: warn at every call."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            warn_deprecated(old, new)
            return fn(*args, **kwargs)
        return wrapper
    return decorate


def _looks_like_key(x) -> bool:
    """A typed PRNG key, or a legacy uint32[2] key."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return False
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    return dtype == jnp.uint32 and tuple(getattr(x, "shape", ())) == (2,)


def key_keyword_only(old_position: int) -> Callable:
    """Decorate a function whose ``key`` became keyword-only; it used to be positional argument `old_position`.

    A call without ``key=`` that passes more positional arguments than the new signature
    takes, or whose argument at `old_position` is a PRNG key, is the old form: the key is
    moved to ``key=`` and a ``DeprecationWarning`` is raised. Every other call goes straight
    through (a missing key stays a ``TypeError``).
    """
    def decorate(fn):
        params = inspect.signature(fn).parameters.values()
        num_positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if "key" not in kwargs and len(args) > old_position and (
                    len(args) > num_positional or _looks_like_key(args[old_position])):
                key = args[old_position]
                args = args[:old_position] + args[old_position + 1:]
                warn_deprecated(f"{name}() with a positional key", f"{name}(..., key=key)")
                return fn(*args, key=key, **kwargs)
            return fn(*args, **kwargs)
        return wrapper
    return decorate
