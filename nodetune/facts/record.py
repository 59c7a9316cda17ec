"""`@record(...)`: a dataclass whose methods are shared functions instead of generated code.

`dataclasses.dataclass` compiles a new __init__, __repr__ and __eq__ (a frozen class also
__hash__, __setattr__ and __delattr__) for every class: 0.2-0.5 ms a class, about 30 ms of the
start-up of `nodetune check` for the 75 classes its modules define (CPython 3.11; measured
with `-X importtime` and callgrind). `record` takes the same arguments and gives the same
behaviour for what nodetune uses (positional and keyword-only fields, defaults and default
factories, `field(repr=False, compare=False)`, ClassVar annotations, frozen, repr, eq, hash,
`__post_init__`), and the class stays a dataclass for `dataclasses.fields`, `replace`, `asdict`
and `is_dataclass`. It also collects the fields itself: dataclass's own pass matches every
string annotation against ClassVar/InitVar patterns (~80 us a class). Type checkers see
`dataclasses.dataclass` itself.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect  # dataclasses imports it anyway
from typing import TYPE_CHECKING, Any, ClassVar

__all__ = ["record"]

_MISSING = dataclasses.MISSING
# a dataclass's parameters object, copied for each record (its class differs between versions)
_TEMPLATE: Any = dataclasses.dataclass(type("_Params", (), {"__doc__": ""}))
_PARAMS: Any = _TEMPLATE.__dataclass_params__


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):  # `from __future__ import annotations`
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is ClassVar or getattr(annotation, "__origin__", None) is ClassVar


def _collect_fields(cls: type, kw_only: bool) -> None:
    """`__dataclass_fields__`, `__dataclass_params__` and the class attributes as
    dataclass leaves them: inherited fields first, a redeclared one in its first place."""
    fields: dict[str, dataclasses.Field[Any]] = {}
    for base in cls.__mro__[-1:0:-1]:
        fields.update(getattr(base, "__dataclass_fields__", None) or {})
    for name, annotation in inspect.get_annotations(cls).items():
        if _is_classvar(annotation):
            continue
        default = cls.__dict__.get(name, _MISSING)
        f: Any = default if isinstance(default, dataclasses.Field) else dataclasses.field(
            default=default)
        f.name, f.type = name, annotation
        f._field_type = dataclasses._FIELD  # type: ignore[attr-defined]
        if f.kw_only is _MISSING:
            f.kw_only = kw_only
        if isinstance(default, dataclasses.Field):
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        fields[name] = f
    cls.__dataclass_fields__ = fields  # type: ignore[attr-defined]
    cls.__dataclass_params__ = copy.copy(_PARAMS)  # type: ignore[attr-defined]


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    positional: tuple[str, ...] = cls.__record_positional__
    if args:
        if len(args) > len(positional):
            raise TypeError(f"{cls.__qualname__}.__init__() takes {len(positional) + 1} "
                            f"positional arguments but {len(args) + 1} were given")
        for name, value in zip(positional, args, strict=False):  # args may be fewer
            if name in kwargs:
                raise TypeError(f"{cls.__qualname__}.__init__() got multiple values for "
                                f"argument {name!r}")
            kwargs[name] = value
    setter = object.__setattr__
    for name, default, factory, init in cls.__record_init__:
        value = kwargs.pop(name, _MISSING) if init else _MISSING
        if value is _MISSING:
            if factory is not _MISSING:
                value = factory()
            elif default is not _MISSING:
                value = default
            elif init:
                raise TypeError(f"{cls.__qualname__}.__init__() missing 1 required argument: "
                                f"{name!r}")
            else:
                continue
        setter(self, name, value)
    if kwargs:
        raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument "
                        f"{next(iter(kwargs))!r}")
    if cls.__record_post_init__:
        self.__post_init__()


def _repr(self: Any) -> str:
    cls = type(self)
    return cls.__qualname__ + "(" + ", ".join(
        f"{name}={getattr(self, name)!r}" for name in cls.__record_repr__) + ")"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names: tuple[str, ...] = self.__record_compare__
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in self.__record_hash__))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _record(cls: type, *, frozen: bool, kw_only: bool, eq: bool, repr: bool) -> type:
    if cls.__doc__ is None:  # dataclass would build one with inspect.signature
        cls.__doc__ = f"{cls.__name__}(...)"
    _collect_fields(cls, kw_only)
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    params.init, params.repr, params.eq, params.frozen = True, repr, eq, frozen
    fields = dataclasses.fields(cls)
    cls.__record_positional__ = tuple(  # type: ignore[attr-defined]
        f.name for f in fields if f.init and not f.kw_only)
    cls.__record_init__ = tuple(  # type: ignore[attr-defined]
        (f.name, f.default, f.default_factory, f.init) for f in fields)
    cls.__record_repr__ = tuple(f.name for f in fields if f.repr)  # type: ignore[attr-defined]
    cls.__record_compare__ = tuple(  # type: ignore[attr-defined]
        f.name for f in fields if f.compare)
    cls.__record_hash__ = tuple(  # type: ignore[attr-defined]
        f.name for f in fields if (f.compare if f.hash is None else f.hash))
    cls.__record_post_init__ = hasattr(cls, "__post_init__")  # type: ignore[attr-defined]
    own = cls.__dict__
    # as dataclass: a method the class defines itself is kept
    has_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    if "__init__" not in own:
        cls.__init__ = _init  # type: ignore[misc]
    if repr and "__repr__" not in own:
        cls.__repr__ = _repr  # type: ignore[assignment]
    if eq and "__eq__" not in own:
        cls.__eq__ = _eq  # type: ignore[assignment]
    if eq and not has_hash:
        # frozen and eq: a hash of the fields; eq alone: unhashable
        cls.__hash__ = _hash if frozen else None  # type: ignore[assignment]
    if frozen:
        cls.__setattr__ = _frozen_setattr  # type: ignore[assignment]
        cls.__delattr__ = _frozen_delattr  # type: ignore[assignment]
    return cls


if TYPE_CHECKING:
    from dataclasses import dataclass as record
else:
    def record(cls: type | None = None, /, *, frozen: bool = False, kw_only: bool = False,
               eq: bool = True, repr: bool = True) -> Any:
        def wrap(cls: type) -> type:
            return _record(cls, frozen=frozen, kw_only=kw_only, eq=eq, repr=repr)
        return wrap if cls is None else wrap(cls)
