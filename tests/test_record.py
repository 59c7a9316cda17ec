"""`record` behaves as `dataclasses.dataclass` for what nodetune declares with it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from nodetune.facts.record import record


def _pair(**options: Any) -> tuple[type, type]:
    """The same class declared with dataclass and with record."""
    def declare(decorator: Any) -> type:
        @decorator(**options)
        class Port:
            name: str
            rate: int | None = None
            lanes: tuple[int, ...] = ()
            tags: dict[str, str] = field(default_factory=dict, hash=False)
            note: str = field(default="", repr=False, compare=False)
        return Port
    return declare(dataclass), declare(record)


@pytest.mark.parametrize("options", [{"frozen": True, "kw_only": True}, {"frozen": True},
                                     {"kw_only": True}, {}])
def test_same_fields_init_repr_eq_as_dataclass(options: dict[str, Any]) -> None:
    real, ours = _pair(**options)
    assert [(f.name, f.default, f.kw_only) for f in dataclasses.fields(real)] == \
        [(f.name, f.default, f.kw_only) for f in dataclasses.fields(ours)]
    a, b = real(name="ib0", rate=400), ours(name="ib0", rate=400)
    assert repr(a) == repr(b)
    assert repr(b).endswith("Port(name='ib0', rate=400, lanes=(), tags={})")
    assert dataclasses.asdict(a) == dataclasses.asdict(b)
    assert b == ours(name="ib0", rate=400, note="other")  # note is not compared
    assert b != ours(name="ib0", rate=200)
    assert b.tags is not ours(name="ib0").tags  # a new dict each time
    assert dataclasses.replace(b, rate=1) == ours(name="ib0", rate=1)
    assert (a.__hash__ is None) == (b.__hash__ is None)
    if options.get("frozen"):
        assert hash(b) == hash(ours(name="ib0", rate=400))
        with pytest.raises(dataclasses.FrozenInstanceError):
            b.rate = 1  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del b.rate
    else:
        b.rate = 1
        assert b.rate == 1
    if options.get("kw_only"):
        with pytest.raises(TypeError):
            real("ib0")
        with pytest.raises(TypeError):
            ours("ib0")
    else:
        assert ours("ib0", 400) == ours(name="ib0", rate=400)
        with pytest.raises(TypeError, match="multiple values"):
            ours("ib0", name="ib1")
    for cls in (real, ours):
        with pytest.raises(TypeError):
            cls()
        with pytest.raises(TypeError):
            cls(name="x", speed=1)


def test_inherited_fields_and_own_methods_kept() -> None:
    @record(frozen=True, kw_only=True)
    class Base:
        sources: dict[str, str] = field(default_factory=dict)

    @record(frozen=True, kw_only=True)
    class Facts(Base):
        count: int

        def __repr__(self) -> str:
            return f"<{self.count} items>"

    facts = Facts(count=2)
    assert [f.name for f in dataclasses.fields(facts)] == ["sources", "count"]
    assert facts.sources == {} and repr(facts) == "<2 items>"
    assert dataclasses.is_dataclass(facts)


def test_class_variables_and_class_attributes_as_dataclass_leaves_them() -> None:
    def declare(decorator: Any) -> type:
        @decorator(frozen=True)
        class Knob:
            kind: ClassVar[str] = "sysctl"
            name: str
            value: str = "0"
            tags: list[str] = field(default_factory=list)
            note: str = field(default="", compare=False)
        return Knob

    real, ours = declare(dataclass), declare(record)
    assert [(f.name, f.type, f.default, f.compare, f.kw_only) for f in dataclasses.fields(real)] \
        == [(f.name, f.type, f.default, f.compare, f.kw_only) for f in dataclasses.fields(ours)]
    for name in ("kind", "value", "note", "tags"):
        assert hasattr(real, name) == hasattr(ours, name), name
        assert getattr(real, name, None) == getattr(ours, name, None), name
    assert ours.kind == "sysctl" and "kind" not in ours.__dataclass_fields__
    assert dataclasses.is_dataclass(ours) and ours.__dataclass_params__.frozen
    assert dataclasses.asdict(ours(name="a")) == dataclasses.asdict(real(name="a"))
