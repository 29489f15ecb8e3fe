"""Model registry: ``get(name, **kwargs)`` returns an uninitialised ``flax.linen.Module``.

Every model maps ``(N, H, W, C)`` float inputs to logits ``(N, num_classes)`` (or its own
output for non-classifiers) and is called as ``model.apply(variables, x, train=...)``.

Adding a model is a one-file job: put a module in this package and decorate the class (or
factory function) with ``@register("name")``; every non-underscore module here is imported
when the package is, so the name is then available to ``get`` and to experiments.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import TypeVar

import flax.linen as nn

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)

_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[F], F]:
    """Class/function decorator that makes a model available as ``get(name)``."""

    def decorate(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name]}")
        _REGISTRY[name] = factory
        return factory

    return decorate


def available() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **kwargs: object) -> nn.Module:
    """The model ``name`` constructed with ``kwargs`` (uninitialised).

    Raises:
      ValueError: unknown ``name`` (the message lists the available names and the closest
        match) or a keyword argument the model does not take.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Available models: {', '.join(available())}"
        )
    factory = _REGISTRY[name]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"bad arguments for model {name!r}: {err}; it takes {inspect.signature(factory)}"
        ) from None
    return factory(**kwargs)


def _import_model_modules() -> None:
    # Importing a module runs its @register decorators.
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_model_modules()

__all__ = ["available", "get", "register"]
