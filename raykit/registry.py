"""One small name -> factory registry: models and optimizers (one registry of each per backend), learning-rate
schedules (:mod:`raykit.schedules`) and Ray Tune trial schedulers (:mod:`raykit.ray.tune`).

A name is either registered with :meth:`Registry.register` beside its factory, or, in a registry that allows
them (``model.name`` only), a user factory written as ``"package.module:function"``, which is imported only
from that explicit string.
"""

from __future__ import annotations

from typing import Any, Callable

from raykit.spec import USER_FACTORY
from raykit.user_code import import_factory


class Registry:
    """Maps names to factories. ``field`` is the spec path that chooses from it (used in errors);
    ``user_factories`` lets it also import a ``"package.module:function"`` name. Other registries never
    import anything, whatever string reaches them.

    Example: ``MODELS = Registry("model.name", user_factories=True)``
    """

    def __init__(self, field: str, *, user_factories: bool = False):
        self.field = field
        self.user_factories = user_factories
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._factories:
                raise ValueError(f"{self.field}: {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        """The factory for ``name``; a ``module:function`` name is imported where ``user_factories``."""
        if name in self._factories:
            return self._factories[name]
        if self.user_factories and USER_FACTORY.match(name):
            return import_factory(name, self.field)
        factory = ", or a factory 'package.module:function'" if self.user_factories else ""
        raise KeyError(f"{self.field}: got {name!r}; accepted: {', '.join(self._factories)}{factory}")
