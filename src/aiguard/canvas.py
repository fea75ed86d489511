"""The product canvas as code: each feature's owner, value, baseline cost, intended use and
limits, written beside its figures.

Configured per feature (``configure(features=...)`` or the config file)::

    [features.ticket-triage]
    owner = "support-ai@acme.example"
    value_per_accepted = "4.50"     # a deflected ticket, in the price table's currency
    baseline_cost = "6.00"          # one ticket handled without AI
    intended_use = "Route incoming support tickets to a queue"
    limits = ["Not for legal or medical questions", "English only"]

:func:`aiguard.report` then adds, per feature (``Report.canvas``, a :class:`Canvas`):

- ``value``: ``value_per_accepted`` times the answers of an AI source (the model, or a cache of
  its answers) whose latest decision is ``accepted`` or ``edited`` (as the acceptance rate
  counts them: the user kept the answer);
- ``roi``: value over the AI cost of the window (every call's cost, the ones that fell back
  included); ``cost_per_value``: the AI cost per unit of value (1 / ROI); ``savings``:
  ``baseline_cost`` times those accepted answers (tasks done without the baseline's cost) minus
  the AI cost; ``net_value``: value minus AI cost. Each is None while the cost of some call is
  unknown, or when its inputs are not configured;
- adoption: the distinct rollout units (a hash of the rollout key, recorded with each call)
  served by the AI arm (an AI-arm call answered by an AI source) over the units eligible (every
  unit with a call under the rollout, excluded segments left out), per ISO week and over the
  window. Counted in the database (SQLite, PostgreSQL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ._canvas_sql import adoption_counts
from ._report_data import SUMS
from .exceptions import ConfigError

__all__ = ["AdoptionWeek", "Canvas", "NON_AI_SOURCES"]

NON_AI_SOURCES = frozenset({"rules", "default", "human", "baseline", "none"})
"""Sources whose answers are not the AI's: every other source (``model``, a cache of model
answers, ...) is an AI source for value and adoption."""


@dataclasses.dataclass(frozen=True, slots=True)
class AdoptionWeek:
    """One ISO week's adoption: ``ai_units`` distinct units served by the AI arm of the
    ``eligible_units`` distinct units that called the feature under its rollout.

    Example:
        >>> import aiguard
        >>> w = aiguard.AdoptionWeek("2025-W02", "2025-01-06", 30, 120)
        >>> w.rate
        0.25
    """

    week: str
    starts: str
    ai_units: int
    eligible_units: int

    @property
    def rate(self) -> float | None:
        """``ai_units / eligible_units``; None without eligible units."""
        return self.ai_units / self.eligible_units if self.eligible_units else None


@dataclasses.dataclass(frozen=True, slots=True)
class Canvas:
    """A feature's canvas (as configured) and the figures it gives over the report's window
    (see the module's docstring). Amounts are in ``currency``.

    Example:
        >>> import aiguard
        >>> from decimal import Decimal
        >>> c = aiguard.Canvas("reply", value_per_accepted=Decimal("2"), accepted_ai=10,
        ...                    value=Decimal("20"), cost=Decimal("4"), roi=5.0)
        >>> c.roi, c.adoption
        (5.0, None)
    """

    feature: str
    owner: str | None = None
    intended_use: str | None = None
    limits: tuple[str, ...] = ()
    value_per_accepted: Decimal | None = None
    baseline_cost: Decimal | None = None
    currency: str = "USD"
    accepted_ai: int = 0
    value: Decimal | None = None
    cost: Decimal | None = None
    roi: float | None = None
    cost_per_value: float | None = None
    net_value: Decimal | None = None
    savings: Decimal | None = None
    ai_units: int = 0
    eligible_units: int = 0
    weeks: list[AdoptionWeek] = dataclasses.field(default_factory=list)

    @property
    def adoption(self) -> float | None:
        """Distinct units served by the AI arm over distinct eligible units, over the window;
        None when no call recorded a unit (no rollout, or records before schema version 8)."""
        return self.ai_units / self.eligible_units if self.eligible_units else None

    @property
    def configured(self) -> bool:
        """Whether any canvas setting is configured for the feature."""
        return any(
            v is not None and v != ()
            for v in (self.owner, self.intended_use, self.limits, self.value_per_accepted,
                      self.baseline_cost)
        )  # fmt: skip


def limits_of(value: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def accepted_ai(rows: Iterable[tuple[Any, ...]], feature: str) -> int:
    """The accepted (or edited) answers of AI sources, from the report's ``i = 0`` sums rows
    (one per source) of ``feature``."""
    accepted, edited = 6 + SUMS.index("accepted"), 6 + SUMS.index("edited")
    return sum(
        int(r[accepted]) + int(r[edited])
        for r in rows
        if r[0] == 0 and r[1] == feature and str(r[5]) not in NON_AI_SOURCES
    )


def iso_week(monday: int) -> tuple[str, str]:
    """(ISO week ``YYYY-Www``, its Monday ``YYYY-MM-DD``) of the week starting on day
    ``monday`` (days since 1970-01-01 UTC)."""
    day = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=monday)
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}", day.strftime("%Y-%m-%d")


def build(
    feature: str,
    cfg: Any,
    currency: str,
    accepted: int,
    cost: Decimal | None,
    store: Any,
    since: float | None,
) -> Canvas:
    """The canvas of ``feature`` (``cfg``: its FeatureConfig, or None) over the window."""
    vpa = getattr(cfg, "value_per_accepted", None)
    base = getattr(cfg, "baseline_cost", None)
    value = None if vpa is None else vpa * accepted
    roi = cost_per_value = None
    net = savings = None
    if cost is not None:
        if value is not None:
            net = value - cost
            roi = float(value / cost) if cost > 0 else None
            cost_per_value = float(cost / value) if value > 0 else None
        if base is not None:
            savings = base * accepted - cost
    total, weeks = adoption_counts(store, feature, since)
    return Canvas(
        feature=feature,
        owner=getattr(cfg, "owner", None),
        intended_use=getattr(cfg, "intended_use", None),
        limits=limits_of(getattr(cfg, "limits", None)),
        value_per_accepted=vpa,
        baseline_cost=base,
        currency=currency,
        accepted_ai=accepted,
        value=value,
        cost=cost,
        roi=roi,
        cost_per_value=cost_per_value,
        net_value=net,
        savings=savings,
        ai_units=total[1],
        eligible_units=total[0],
        weeks=[AdoptionWeek(*iso_week(7 * w - 3), ai, eligible) for w, eligible, ai in weeks],
    )


def check_currency(
    canvases: Sequence[Canvas], configured: Mapping[str, Any], currency: str
) -> None:
    """A canvas in another currency than the report's cannot be set against its costs."""
    for c in canvases:
        named = getattr(configured.get(c.feature), "currency", None)
        if named is not None and named.upper() != currency.upper():
            raise ConfigError(
                f"feature {c.feature!r}: the canvas amounts are in {named}, the costs in "
                f"{currency}: give them in {currency} (nothing converts between currencies)"
            )
