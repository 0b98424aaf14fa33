"""`NamedTuple` for ukrun's modules: typing's to the type checker, a cheaper build of the same class at run time.

Why: ukrun's records, facts and plans are typed named tuples (the shim's verbs load them on every cold call,
and dataclasses cost more), and typing.NamedTuple builds each class at about 150 us here: it turns every
field's annotation (a string, under `from __future__ import annotations`) into a ForwardRef, compiling it,
only to check that it names a type. A create without a helper loads 62 such classes: 10-13 ms of its 32-40
ms of imports. The type checker has checked the annotations already; this build skips that step and nothing
else.

What must stay true: a class made here is what typing.NamedTuple makes of the same body (typing's own
steps, in its order): a collections.namedtuple of the annotated fields in their order, with the defaults of
the trailing fields that have one (a field without a default after one with a default is a TypeError), the
body's methods, properties, class attributes and docstring, the module of the class; its `__annotations__`
are the annotations as written (unevaluated strings where typing keeps ForwardRefs). Overriding a name the
named tuple defines itself is an AttributeError, as with typing. Generic named tuples stay typing's.
"""

import collections

TYPE_CHECKING = False  # not typing's: importing typing here would cost the modules that need only this
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    _PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults",
                             "_make", "_replace", "_asdict", "_source"})
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    class _Meta(type):
        def __new__(mcs, typename, bases, ns):
            if bases != (NamedTuple,):
                raise TypeError("a NamedTuple class inherits from NamedTuple alone")
            types = ns.get("__annotations__", {})
            defaults = []
            for name in types:
                if name in ns:
                    defaults.append(name)
                elif defaults:
                    raise TypeError(f"{typename}: field {name} without a default follows {', '.join(defaults)}")
            made = collections.namedtuple(typename, list(types), defaults=[ns[n] for n in defaults],
                                          module=ns["__module__"])
            made.__annotations__ = made.__new__.__annotations__ = dict(types)
            for key, value in ns.items():
                if key in _PROHIBITED:
                    raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
                if key not in _SPECIAL and key not in made._fields:
                    setattr(made, key, value)
            return made

    NamedTuple = type.__new__(_Meta, "NamedTuple", (), {"__module__": __name__})  # the base, not built by _Meta
