"""ukrun.tuples.NamedTuple makes of a class body what typing.NamedTuple makes of it."""

from __future__ import annotations

import pickle
import typing
from typing import Any

import pytest

from ukrun import tuples


def _body(base: Any) -> Any:
    class Point(base):  # type: ignore[misc]
        """A point."""

        x: int
        y: int = 0
        label: str | None = None
        UNIT = "mm"  # not annotated: a class attribute, not a field

        def moved(self, dx: int) -> Point:
            return self._replace(x=self.x + dx)  # type: ignore[no-any-return]

        @property
        def norm(self) -> int:
            return abs(self.x) + abs(self.y)

    return Point


class Stored(tuples.NamedTuple):
    name: str
    size: int = 0


def test_a_class_body_makes_the_same_named_tuple_as_typings() -> None:
    ours, theirs = _body(tuples.NamedTuple), _body(typing.NamedTuple)
    cls: Any
    for cls in (ours, theirs):
        p = cls(3, y=-4)
        assert (p, p.norm, p.moved(1), cls.UNIT, cls.__doc__) == ((3, -4, None), 7, (4, -4, None), "mm", "A point.")
        assert p._asdict() == {"x": 3, "y": -4, "label": None} and isinstance(p, tuple)
    assert ours._fields == theirs._fields and ours._field_defaults == theirs._field_defaults
    assert ours.__mro__[1:] == theirs.__mro__[1:] == (tuple, object)
    assert (ours.__module__, ours.__qualname__) == (theirs.__module__, theirs.__qualname__) == (
        __name__, "_body.<locals>.Point")
    assert list(ours.__annotations__) == list(theirs.__annotations__) == ["x", "y", "label"]


def test_its_records_cross_processes_as_typings_do() -> None:
    s = Stored("view", 3)
    assert pickle.loads(pickle.dumps(s)) == s and type(pickle.loads(pickle.dumps(s))) is Stored
    assert Stored("x") == ("x", 0) and Stored._make(["y", 1]).size == 1


@pytest.mark.parametrize("base", [tuples.NamedTuple, typing.NamedTuple], ids=["ours", "typing"])
def test_a_required_field_after_a_default_is_refused(base: Any) -> None:
    with pytest.raises(TypeError):
        class Bad(base):  # type: ignore[misc]
            a: int = 0
            b: int


@pytest.mark.parametrize("base", [tuples.NamedTuple, typing.NamedTuple], ids=["ours", "typing"])
def test_a_body_cannot_redefine_what_the_named_tuple_defines(base: Any) -> None:
    with pytest.raises(AttributeError):
        class Bad(base):  # type: ignore[misc]
            a: int

            def _replace(self, **changes: Any) -> Any:
                return self
