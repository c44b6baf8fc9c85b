"""Measurement methods, one file each, and their registry.

Each method (a :class:`~fetalbio.methods.base.Method`) owns what differs between ways of measuring:
its model's output channels and builder, training targets and loss, decoding of a model output into a
:class:`~fetalbio.methods.base.Result`, its measurement, validation metric and overlay. Everything
else (reading, letterbox, engines, the inference path, rows, evaluation) asks this registry and never
compares method names. A new method is one new file that calls :func:`register`.
"""

from __future__ import annotations

import importlib

from fetalbio.methods.base import Method, Result

__all__ = ["Method", "Result", "register", "unregister", "get", "names", "for_channels", "PRIMARY"]

_REGISTRY: dict[str, Method] = {}
_BUILTIN = ("fetalbio.methods.segmentation", "fetalbio.methods.landmarks", "fetalbio.methods.fused")
# the shipped methods that `--method both` runs, in output order
PRIMARY = ("segmentation", "landmarks")
# what `predict` measures by default: one fused row per scan
DEFAULT = ("fused",)


def register(method: Method) -> Method:
    """Add (or replace) a method under its name."""
    _REGISTRY[method.name] = method
    return method


def _load_builtin() -> None:
    for mod in _BUILTIN:
        importlib.import_module(mod)


def get(name: str) -> Method:
    """The method called ``name``; ValueError naming the choices when there is none."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(names())}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Registered method names: the built-in ones first, in :data:`_BUILTIN` order (whichever module was
    imported first), then the others in the order they were registered."""
    _load_builtin()
    builtin = [mod.rsplit(".", 1)[1] for mod in _BUILTIN]
    return tuple([n for n in builtin if n in _REGISTRY] + [n for n in _REGISTRY if n not in builtin])


def engines_needed(names: tuple[str, ...]) -> tuple[str, ...]:
    """The methods whose models must run for ``names`` (a combining method needs its parts'), in order."""
    out: list[str] = []
    for n in names:
        m = get(n)
        for part in m.requires or (n,):
            if part not in out:
                out.append(part)
    return tuple(out)


def for_channels(channels: int) -> Method | None:
    """The built-in method whose model has this many output channels (for a model without a sidecar)."""
    _load_builtin()
    return next((_REGISTRY[n] for n in PRIMARY if _REGISTRY[n].out_channels == channels), None)


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method clean up with this)."""
    _REGISTRY.pop(name, None)
