"""One small registry type, and the registries of every buildable component."""
import copy
import inspect
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ppssld.utils.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)


class Registry:
    """Maps config names to classes or factories.

    Duplicate names raise; unknown names raise with the list of valid ones;
    unknown keyword arguments raise with the closest valid parameter.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, Callable] = {}

    def register(self, obj: Optional[Callable] = None, *, name: Optional[str] = None,
                 aliases: Iterable[str] = ()) -> Callable:
        """Register ``obj`` (usable as a decorator, with or without arguments).

        Args:
            obj: class or factory.
            name: config name; defaults to ``obj.__name__``.
            aliases: further names for the same object (e.g. PaddleClas names).
        Returns:
            ``obj`` unchanged, or a decorator.
        """
        def _add(target: Callable) -> Callable:
            for key in [name or target.__name__, *aliases]:
                if key in self._items:
                    raise KeyError(f"{self.kind} {key!r} is registered twice "
                                   f"({self._items[key]!r} and {target!r})")
                self._items[key] = target
            return target
        return _add(obj) if obj is not None else _add

    def names(self) -> List[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def get(self, name: str, where: str = "") -> Callable:
        """Look ``name`` up.

        Args:
            name: the config name.
            where: config location for the error message, e.g. ``Loss.Train[0]``.
        Returns:
            The registered object.
        Raises:
            ConfigError: unknown name, with the closest and the full list of valid names.
        """
        if not isinstance(name, str) or name not in self._items:  # a list or mapping is no name (and unhashable)
            at = f" at {where}" if where else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{at}.{did_you_mean(str(name), self._items)} "
                              f"Valid {self.kind} names: {', '.join(self.names())}")
        return self._items[name]

    def check_kwargs(self, name: str, kwargs: Dict[str, Any], where: str = "") -> None:
        """Raise if ``kwargs`` holds a parameter that ``name`` does not accept."""
        target = self.get(name, where)
        params = signature_params(target)
        if params is None:
            return
        for key in kwargs:
            if key not in params:
                at = f" at {where}" if where else ""
                raise ConfigError(f"{self.kind} {name!r}{at} has no parameter {key!r}."
                                  f"{did_you_mean(key, params)} Valid parameters: "
                                  f"{', '.join(sorted(params)) or '(none)'}")

    def build(self, name: str, kwargs: Optional[Dict[str, Any]] = None, where: str = "", **extra: Any) -> Any:
        """Check the arguments, then call the registered object.

        Args:
            name: the config name.
            kwargs: parameters from the config (checked against the signature).
            where: config location for error messages.
            **extra: arguments supplied by code, not by the user (not checked).
        Returns:
            The built object.
        """
        kwargs = dict(kwargs or {})
        self.check_kwargs(name, kwargs, where)
        return self.get(name, where)(**kwargs, **extra)


def component_entries(cfg_list: Any, where: str, example: str) -> List[Tuple[str, Dict[str, Any]]]:
    """Parse a PaddleClas component list ``[{Name: {params}}, ...]`` into (name, params copy) pairs.

    Args:
        cfg_list: the YAML list (``Loss.Train``, ``Metric.Eval``, ...).
        where: its config location, for messages.
        example: a valid example shown in the error, e.g. ``[{TopkAcc: {topk: [1, 5]}}]``.
    Returns:
        Names and deep-copied parameter mappings (``None`` parameters become ``{}``).
    Raises:
        ConfigError: not a non-empty list of one-key mappings with mapping parameters.
    """
    if not isinstance(cfg_list, list) or not cfg_list:
        raise ConfigError(f"{where} must be a non-empty list of one-key mappings like {example}, got {cfg_list!r}")
    entries = []
    for i, item in enumerate(cfg_list):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}[{i}] must be a one-key mapping {{Name: {{params}}}}, got {item!r}")
        (name, params), = item.items()
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise ConfigError(f"{where}[{i}].{name} parameters must be a mapping, got {params!r}")
        entries.append((str(name), copy.deepcopy(params)))
    return entries


def signature_params(target: Callable) -> Optional[List[str]]:
    """Named parameters of a class constructor or function; None if it takes ``**kwargs``."""
    func = target.__init__ if inspect.isclass(target) else target
    sig = inspect.signature(func)
    names = []
    for param in sig.parameters.values():
        if param.kind == param.VAR_KEYWORD:
            return None
        if param.name != "self" and param.kind != param.VAR_POSITIONAL:
            names.append(param.name)
    return names


LOSSES = Registry("loss")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
SAMPLERS = Registry("sampler")
BATCH_OPS = Registry("batch operator")
OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("lr scheduler")
METRICS = Registry("metric")
PAIR_BASE_LOSSES = Registry("DistillationPairLoss base loss")
