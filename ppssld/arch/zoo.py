"""The one door to the PaddleClas model zoo: build a backbone from its name."""
import inspect
import logging
import sys
from functools import lru_cache
from typing import Any, Dict, List, Optional, Set

import paddle
import paddle.nn as nn

from ppssld.utils.checks import is_int
from ppssld.arch.features import apply_return_patterns, pop_return_patterns
from ppssld.arch.lr_mult import apply_lr_mult_list
from ppssld.arch.zoo_index import load_factory
from ppssld.utils.errors import ConfigError, did_you_mean
from ppssld.utils.quiet import quiet_ppcls_deprecations

logger = logging.getLogger(__name__)

_BUILDS = {"count": 0}
# Constructor options that change only speed, not maths, and that the installed zoo may lack:
# PaddleClas's newer Swin/ViT take ``use_fused_linear`` to build paddle.incubate.nn.FusedLinear
# (one fused GPU kernel for x @ W + b, same parameter shapes) instead of nn.Linear.
_SPEED_ONLY = {"use_fused_linear": "paddle.incubate.nn.FusedLinear (x @ W + b in one GPU kernel)"}
_SPEED_LOGGED: Set[str] = set()
# Regularisation rates whose 0 means "off": a constructor without the option already builds
# that (PaddleClas's StarNet configs set drop_rate: 0, which its StarNet swallows unread).
_OFF_AT_ZERO = ("drop_rate", "drop_path_rate", "attn_drop_rate")


def _is_factory(name: str, obj: Any) -> bool:
    """A zoo factory: a capitalised function (``ResNet50_vd``), or a function its module
    exports that takes ``pretrained`` (Twins' ``pcpvt_small``, ``alt_gvt_base``)."""
    if not inspect.isfunction(obj):
        return False
    if name[:1].isupper():
        return True
    module = sys.modules.get(obj.__module__)
    return name in getattr(module, "__all__", ()) and "pretrained" in inspect.signature(obj).parameters


@lru_cache(maxsize=1)
def _zoo() -> Dict[str, Any]:
    from paddleclas.ppcls.arch import backbone  # imported lazily: it is slow

    quiet_ppcls_deprecations()
    return {name: obj for name, obj in vars(backbone).items() if _is_factory(name, obj)}


def _factory(name: str) -> Optional[Any]:
    """The zoo factory ``name``: its module alone while the full zoo is not imported yet
    (:mod:`ppssld.arch.zoo_index`), else from the full zoo; ``None`` if the zoo has no such factory."""
    if _zoo.cache_info().currsize == 0:
        factory = load_factory(name)
        if factory is not None and _is_factory(name, factory):
            quiet_ppcls_deprecations()
            return factory
    return _zoo().get(name)


def backbone_names() -> List[str]:
    """Names of every backbone factory in ``paddleclas.ppcls.arch.backbone``."""
    return sorted(_zoo())


def accepted_params(factory: Any) -> List[str]:
    """Keyword arguments a zoo factory can use.

    Zoo factories forward ``**kwargs`` to a model class that may itself swallow unknown
    ``**kwargs``; so the accepted names are the named parameters of the factory, of every
    layer class defined in the factory's module or named in the factory's code (DeiT's
    factories build the imported ``VisionTransformer``), and of those classes' layer bases.
    """
    names = set()
    module = inspect.getmodule(factory)
    classes = [obj for obj in vars(module).values() if inspect.isclass(obj)
               and getattr(obj, "__module__", "") == module.__name__]
    classes += [factory.__globals__[n] for n in factory.__code__.co_names
                if inspect.isclass(factory.__globals__.get(n))]
    layers = {base for cls in classes if issubclass(cls, nn.Layer)
              for base in cls.__mro__ if issubclass(base, nn.Layer) and base is not nn.Layer}
    candidates = [factory] + [cls.__init__ for cls in sorted(layers, key=lambda c: c.__qualname__)]
    for func in candidates:
        for param in inspect.signature(func).parameters.values():
            if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL) and param.name != "self":
                names.add(param.name)
    return sorted(names - {"pretrained", "use_ssld"})


def default_class_num(name: str) -> Optional[int]:
    """The ``class_num`` zoo backbone ``name`` gets when its config gives none (1000 for PaddleClas's ImageNet
    backbones); None when the zoo has no such backbone, or its constructors name no default or disagree."""
    factory = _factory(name)
    if factory is None:
        return None
    module = inspect.getmodule(factory)
    funcs = [factory] + [obj.__init__ for obj in vars(module).values()
                         if inspect.isclass(obj) and issubclass(obj, nn.Layer) and obj.__module__ == module.__name__]
    defaults = set()
    for func in funcs:
        param = inspect.signature(func).parameters.get("class_num")
        if param is not None and param.default is not param.empty:
            defaults.add(param.default)
    value = defaults.pop() if len(defaults) == 1 else None
    return value if is_int(value) else None


def build_backbone(name: str, class_num: Optional[int] = None, lr_mult_list: Optional[List[float]] = None,
                   where: str = "Arch", **kwargs: Any) -> nn.Layer:
    """Build a randomly initialised zoo backbone (weights are loaded by :mod:`ppssld.arch.weights`).

    Args:
        name: zoo name, e.g. ``ResNet50_vd`` or ``MobileNetV3_small_x0_35``.
        class_num: classifier size.
        lr_mult_list: per-stage learning-rate multipliers, passed to the backbone.
        where: config location for error messages.
        **kwargs: further constructor arguments of that backbone; ``return_patterns`` (sublayer
            paths) makes it return ``{"logits": ..., <pattern>: ...}`` (see :mod:`ppssld.arch.features`).
    Returns:
        The backbone layer.
    Raises:
        ConfigError: unknown name or an argument the backbone does not take.
    """
    factory = _factory(name) if isinstance(name, str) else None  # a list or mapping names no backbone
    if factory is None:
        zoo = _zoo()
        raise ConfigError(f"unknown backbone {name!r} at {where}.name.{did_you_mean(str(name), zoo)} "
                          f"{len(zoo)} backbones exist in paddleclas.ppcls.arch.backbone, e.g. "
                          f"ResNet50_vd, MobileNetV3_large_x1_0, PPLCNet_x1_0")
    return_patterns = pop_return_patterns(kwargs, where)
    accepted = accepted_params(factory)
    _drop_inert_options(name, kwargs, accepted, where)
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(f"backbone {name!r} at {where} rejected its arguments: it has no parameter "
                              f"{key!r}.{did_you_mean(key, accepted)}")
    if class_num is not None:
        kwargs["class_num"] = int(class_num)
    if lr_mult_list is not None:
        kwargs["lr_mult_list"] = [float(x) for x in lr_mult_list]
    _BUILDS["count"] += 1
    try:
        layer = _construct(factory, name, kwargs)
    except TypeError as exc:
        raise ConfigError(f"backbone {name!r} at {where} rejected its arguments "
                          f"{sorted(kwargs)}: {exc}") from exc
    if lr_mult_list is not None:
        _ensure_lr_mult_applied(layer, name, factory, [float(x) for x in lr_mult_list], where)
    if return_patterns is not None:
        apply_return_patterns(layer, name, return_patterns, where)
    return layer


def _drop_inert_options(name: str, kwargs: Dict[str, Any], accepted: List[str], where: str) -> None:
    """Remove options this backbone's installed constructor lacks that change nothing it computes:
    speed-only ones, and regularisation rates set to 0 (off). A non-zero rate stays and is refused."""
    for key in _OFF_AT_ZERO:
        if key in kwargs and key not in accepted and not isinstance(kwargs[key], bool) \
                and isinstance(kwargs[key], (int, float)) and kwargs[key] == 0:
            kwargs.pop(key)
            logger.debug("%s.%s: 0 (off); %s has no such option and nothing to switch off", where, key, name)
    for key, what in _SPEED_ONLY.items():
        if key in kwargs and key not in accepted:
            value = kwargs.pop(key)
            if value and f"{name}.{key}" not in _SPEED_LOGGED:
                _SPEED_LOGGED.add(f"{name}.{key}")
                logger.info("%s.%s: %r asks for %s; the installed paddleclas %s has no such option and "
                            "builds the standard layer (same maths, same parameters)", where, key, value, what, name)


def _construct(factory: Any, name: str, kwargs: Dict[str, Any]) -> nn.Layer:
    """Call a zoo factory in the current name scope, so parameters get PaddleClas's names.

    Generated names (``conv2d_0.w_0``) continue the current scope's counters, exactly as in a
    PaddleClas process; :func:`ppssld.arch.build.build_model` opens a fresh scope per model,
    so they restart from 0 as in a fresh PaddleClas process and optimizer states match.
    Some zoo models (ResNeXt, Res2Net, ...) give parameters fixed names (``res_conv1_weights``),
    which Paddle refuses to create twice in one scope; only then is the model built again in
    a fresh scope (its names repeat those of the first copy, which
    :func:`ppssld.arch.build.build_model` makes unique inside one model).
    """
    if "use_ssld" in inspect.signature(factory).parameters:
        kwargs = dict(kwargs, use_ssld=False)  # DLA, RedNet, HarDNet would forward it to a class that refuses it
    try:
        return factory(pretrained=False, **kwargs)
    except ValueError as exc:
        if "have be been used" not in str(exc):
            raise
        logger.info("%s has fixed parameter names already used in this name scope: built in a fresh scope",
                    name)
        with paddle.utils.unique_name.guard():
            return factory(pretrained=False, **kwargs)


def _ensure_lr_mult_applied(layer: nn.Layer, name: str, factory: Any, mults: List[float], where: str) -> None:
    """Apply an ``lr_mult_list`` the backbone accepted but dropped (by its declared stages), or refuse it."""
    if all(m == 1.0 for m in mults):
        return
    seen = {float(p.optimize_attr.get("learning_rate", 1.0)) for p in layer.parameters()}
    if seen <= {1.0}:
        apply_lr_mult_list(layer, name, factory, mults, where)
