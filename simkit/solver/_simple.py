"""``SimpleSolver``: a solver declared in a few lines. Its fields, grid and defaults are read from
what it declares (stage and diagnostic method names, the initial state's shapes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from simkit.solver._base import (
    AbstractSolver,
    Coordinate,
    Diagnostic,
    FieldSpec,
    SolverModel,
    Stage,
)

#: Default dimension names of a field's axes, in order.
_DIMS = ("i", "j", "k", "l")


class NoParams(SolverModel):
    """No parameters."""


class NoInitial(SolverModel):
    """No initial-condition settings."""


class SimpleSolver(AbstractSolver):
    """A solver from declarations: ``STAGES`` and ``DIAGNOSTICS`` name methods of the class
    (``stage(self, state, dt) -> state``, ``diagnostic(self, state) -> array``), the fields are
    the arrays ``initial_state`` returns, and everything else has a default::

        class Decay(SimpleSolver):
            \"\"\"du/dt = -rate u, forward Euler.\"\"\"
            class Params(SolverModel):
                rate: float = 1.0
            DIAGNOSTICS = ("total",)
            def initial_state(self, initial, rng): return {"u": np.ones(16)}
            def step(self, s, dt): return {**s, "u": s["u"] * (1 - self.params.rate * dt)}
            def total(self, s): return array_namespace(s["u"]).sum(s["u"])

    Class attributes (all optional): ``name`` (default: the class name, lower case),
    ``version`` ("1"), ``description`` (the docstring's first line), ``time_units`` ("1"),
    ``Params`` and ``Initial`` (empty models), ``STAGES`` (``("step",)``), ``DIAGNOSTICS``
    (``()``), ``DIMS`` (dimension names by field; default ``i``, ``j``, ... by axis, shared
    by fields of the same sizes), ``UNITS`` and ``LONG_NAMES`` (by field or diagnostic), ``DT``
    (the default time step, 1.0) and ``MAX_DT`` (the stable limit, None). The grid coordinates
    are the indices along each dimension.
    """

    version: ClassVar[str] = "1"
    time_units: ClassVar[str] = "1"
    Params: ClassVar[type[SolverModel]] = NoParams
    Initial: ClassVar[type[SolverModel]] = NoInitial
    STAGES: ClassVar[Sequence[str]] = ("step",)
    DIAGNOSTICS: ClassVar[Sequence[str]] = ()
    DIMS: ClassVar[dict[str, tuple[str, ...]]] = {}
    UNITS: ClassVar[dict[str, str]] = {}
    LONG_NAMES: ClassVar[dict[str, str]] = {}
    DT: ClassVar[float] = 1.0
    MAX_DT: ClassVar[float | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()
        if "description" not in cls.__dict__:
            cls.description = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
        missing = [m for m in (*cls.STAGES, *cls.DIAGNOSTICS) if not callable(getattr(cls, m,
                                                                                       None))]
        if missing:
            raise TypeError(f"solver {cls.name}: expected a method for each name in STAGES and "
                            f"DIAGNOSTICS, given none for {', '.join(map(repr, missing))}")

    def __init__(self, params: SolverModel | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self._shapes: dict[str, tuple[int, ...]] | None = None

    def _field_shapes(self) -> dict[str, tuple[int, ...]]:
        if self._shapes is None:
            state = self.initial_state(self.Initial(), np.random.default_rng(0))
            self._shapes = {name: tuple(np.shape(value)) for name, value in state.items()}
        return self._shapes

    def _dims(self) -> dict[str, tuple[str, ...]]:
        sizes: dict[str, int] = {}
        found = {}
        for name, shape in self._field_shapes().items():
            dims = tuple(self.DIMS.get(name, _DIMS[:len(shape)]))
            if len(dims) != len(shape):
                raise ValueError(f"solver {self.name}: field {name!r}: expected {len(shape)} "
                                 f"dimension names for shape {shape}, given {dims}")
            for dim, size in zip(dims, shape, strict=True):
                if sizes.setdefault(dim, size) != size:
                    raise ValueError(f"solver {self.name}: field {name!r}: dimension {dim!r} "
                                     f"has {sizes[dim]} values in another field, given {size}; "
                                     "name the dimensions in DIMS")
            found[name] = dims
        return found

    def fields(self) -> list[FieldSpec]:
        return [FieldSpec(name, dims, self.UNITS.get(name, "1"), self.LONG_NAMES.get(name, name))
                for name, dims in self._dims().items()]

    def coordinates(self) -> list[Coordinate]:
        sizes: dict[str, int] = {}
        for name, dims in self._dims().items():
            sizes.update(zip(dims, self._field_shapes()[name], strict=True))
        return [Coordinate(dim, np.arange(size), "1", f"index along {dim}")
                for dim, size in sizes.items()]

    def stages(self) -> list[Stage]:
        return [Stage(name, getattr(self, name)) for name in self.STAGES]

    def diagnostics(self) -> list[Diagnostic]:
        return [Diagnostic(name, getattr(self, name), self.UNITS.get(name, "1"),
                           self.LONG_NAMES.get(name, name)) for name in self.DIAGNOSTICS]

    def default_dt(self) -> float:
        return self.DT

    def max_stable_dt(self) -> float | None:
        return self.MAX_DT
