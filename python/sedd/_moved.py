"""The module paths before the sub-packages (sedd.model, sedd.hub, sedd.trainer, ...), kept for
one release: importing one warns (DeprecationWarning) and gives a module whose names come from
their new homes. Remove after the next release."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old module -> the modules its names now live in (searched in order)
MOVED = {
    "sedd.graphs": ("sedd.core.graphs",),
    "sedd.noise": ("sedd.core.noise",),
    "sedd.losses": ("sedd.core.losses",),
    "sedd.model": ("sedd.nn.ddit", "sedd.nn.layers", "sedd.families", "sedd.families.ar"),
    "sedd.ar": ("sedd.nn.causal", "sedd.families.ar"),
    "sedd.objectives": ("sedd.families.sedd", "sedd.families.ar", "sedd.families"),
    "sedd.predictors": ("sedd.sampling.predictors",),
    "sedd.first_hitting": ("sedd.sampling.first_hitting",),
    "sedd.shaping": ("sedd.sampling.shaping",),
    "sedd.trainer": ("sedd.training.trainer", "sedd.config"),
    "sedd.metrics": ("sedd.training.metrics",),
    "sedd.distributed": ("sedd.training.distributed",),
    "sedd.checkpoint": ("sedd.loading.checkpoints", "sedd.training.checkpoints"),
    "sedd.hub": ("sedd.loading", "sedd.loading.formats"),
    "sedd.runconfig": ("sedd.loading.runconfig", "sedd.core.options", "sedd.core.noise"),
    "sedd.inference": ("sedd.loading", "sedd.sampling.conditions"),
    "sedd.genppl": ("sedd.evaluation.genppl",),
    "sedd.language": ("sedd.data.language",),
    "sedd.presets": ("sedd.config",),
}


def model_presets() -> dict:
    """sedd.model.PRESETS / sedd.PRESETS as they were: each preset's ModelConfig fields."""
    from .config import PRESETS, model_preset
    return {name: model_preset(name) for name in PRESETS}


# names that did not move as they were
COMPUTED = {("sedd.model", "PRESETS"): model_presets}


class _Moved(types.ModuleType):
    def __getattr__(self, name):
        if (self.__name__, name) in COMPUTED:
            return COMPUTED[self.__name__, name]()
        for target in self.__targets__:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self.__targets__)}) "
                             f"has no attribute {name!r}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = _Moved(spec.name)
        module.__targets__ = MOVED[spec.name]
        return module

    def exec_module(self, module):
        warnings.warn(f"{module.__name__} is deprecated: import from "
                      f"{' / '.join(module.__targets__)}", DeprecationWarning, stacklevel=2)


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.append(_Finder())
