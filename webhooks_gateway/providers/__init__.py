"""The provider registry: every module in this package that defines NAME is a provider.

Adding a provider is adding one module (and its fixtures); nothing else is edited. The scan runs
once, at import, over this package only: no registration happens as a side effect elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import cast

from webhooks_gateway.providers.base import Provider

_NOT_PROVIDERS = frozenset({"base"})


def _discover() -> dict[str, Provider]:
    found: dict[str, Provider] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name in _NOT_PROVIDERS or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        if hasattr(module, "NAME"):
            found[module.NAME] = cast(Provider, module)
    return dict(sorted(found.items()))


PROVIDERS: dict[str, Provider] = _discover()
