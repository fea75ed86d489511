"""Staged rollouts: which units (users, accounts) get the AI path, deterministically."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from ._bucketing import Bucketing, positioner
from ._checks import shown
from ._runtime import errors
from .exceptions import ConfigError
from .limits import Limits
from .outcome import Reason

__all__ = ["Bucketing", "Rollout"]

Segment = Mapping[str, Collection[Any]] | Callable[..., bool]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    """Give the AI path to ``percent`` % of units, the same units on every replica.

    ``key`` names the argument that holds the unit of assignment (a user id, an account id), or
    is a callable taking the call's arguments and returning it. Give ``percent``, or ``stages``
    (ascending percentages) and the current ``stage`` (its index, or its percentage; the first
    stage by default). Raising the percentage never moves a unit out; lowering it moves out only
    units above the new line.

    ``include`` / ``exclude`` are segments evaluated before the percentage: a mapping from an
    argument name (or ``"arg.attribute"`` path) to the values that match, or a predicate over the
    call's arguments. Excluded units are out; included ones are in, whatever the percentage.

    ``gates`` (a :class:`Limits`, or one per stage) watch quality while at a stage: a breach rolls
    this process back to the previous stage and records why.

    ``bucketing`` picks the algorithm (see :class:`Bucketing`); ``salt`` defaults to the feature
    name (LaunchDarkly's salt, Unleash's group id, GrowthBook's seed).

    Example:
        >>> import aiguard
        >>> @aiguard.guard("reply-draft", rollout=aiguard.Rollout(percent=25, key="user_id"),
        ...                fallback=aiguard.Default("template reply"))
        ... def draft(user_id: str, text: str) -> str:
        ...     return "AI reply"
        >>> outcome = draft.outcome("user-42", "hello")
        >>> outcome.arm in ("ai", "baseline")
        True
    """

    key: str | Callable[..., Any]
    percent: float | None = None
    stages: Sequence[float] = ()
    stage: int | None = None
    salt: str | None = None
    bucketing: Bucketing | str = Bucketing.LAUNCHDARKLY
    include: Segment | None = None
    exclude: Segment | None = None
    gates: Limits | Sequence[Limits | None] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.key, str) and self.key) and not callable(self.key):
            raise ConfigError(
                f"Rollout(key={shown(self.key)}) is invalid: name the argument that holds the unit "
                "(e.g. 'user_id'), or give a callable over the call's arguments"
            )
        try:
            object.__setattr__(self, "bucketing", Bucketing(self.bucketing))
        except ValueError:
            choices = ", ".join(b.value for b in Bucketing)
            raise ConfigError(
                f"Rollout(bucketing={shown(self.bucketing)}) is invalid: choose one of {choices}"
            ) from None
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if self.percent is None and not stages:
            raise ConfigError("Rollout() needs percent= or stages=")
        for i, p in enumerate(stages):
            check_percent(f"Rollout(stages[{i}])", p, self.bucketing)
        if any(b <= a for a, b in itertools.pairwise(stages)):
            raise ConfigError(f"Rollout(stages={list(stages)!r}) is invalid: must be ascending")
        if self.percent is not None:
            check_percent("Rollout(percent)", self.percent, self.bucketing)
        if stages:
            object.__setattr__(self, "stage", self._current_stage(stages))
            object.__setattr__(self, "percent", None)
        elif self.stage is not None:
            raise ConfigError(f"Rollout(stage={shown(self.stage)}) needs stages=")
        if self.salt is not None and not isinstance(self.salt, str):
            raise ConfigError(f"Rollout(salt={shown(self.salt)}) is invalid: must be a string")
        for name in ("include", "exclude"):
            seg = getattr(self, name)
            if seg is not None and not isinstance(seg, Mapping) and not callable(seg):
                raise ConfigError(
                    f"Rollout({name}={shown(seg)}) is invalid: give a mapping of argument name to "
                    "values, or a predicate over the call's arguments"
                )
        gates = self.gates
        if gates is not None and not isinstance(gates, Limits):
            gates = tuple(gates)
            if not stages or len(gates) != len(stages):
                raise ConfigError(
                    f"Rollout(gates=...) has {len(gates)} entries: give one Limits for every "
                    f"stage ({len(stages)}), or a single Limits for all"
                )
            if not all(g is None or isinstance(g, Limits) for g in gates):
                raise ConfigError("Rollout(gates=...) entries must be aiguard.Limits or None")
            object.__setattr__(self, "gates", gates)

    def _current_stage(self, stages: tuple[float, ...]) -> int:
        """The current stage's index, from ``stage`` (an index, or one of the stages'
        percentages) or ``percent`` (one of the stages'); the first stage when neither."""
        if self.percent is not None:
            if self.stage is not None:
                raise ConfigError("Rollout() with stages= takes stage= or percent=, not both")
            if self.percent not in stages:
                raise ConfigError(
                    f"Rollout(percent={shown(self.percent)}) is invalid: with stages= it must be "
                    f"one of the stages {list(stages)!r}"
                )
            return stages.index(self.percent)
        stage = 0 if self.stage is None else self.stage
        if isinstance(stage, bool) or not isinstance(stage, int | float):
            return check_stage(stage, stages)
        is_index = isinstance(stage, int) and 0 <= stage < len(stages)
        is_percent = stage in stages
        if is_index and is_percent and stages[int(stage)] != stage:
            raise ConfigError(
                f"Rollout(stage={stage!r}) is ambiguous with stages={list(stages)!r}: it is both "
                f"an index (stage {stages[int(stage)]:g}%) and a stage's percentage; give "
                "percent= for the percentage"
            )
        if is_percent and not is_index:
            return stages.index(stage)  # given as the stage's percentage
        return check_stage(stage, stages)

    @property
    def initial_percent(self) -> float:
        """The percentage the code asks for: ``percent``, or the current stage's."""
        if self.stages:
            assert self.stage is not None
            return float(self.stages[self.stage])
        assert self.percent is not None
        return float(self.percent)

    def stage_of(self, percent: float) -> int | None:
        """The index of the highest stage at or below ``percent`` (None: below every stage)."""
        found = None
        for i, p in enumerate(self.stages):
            if p <= percent:
                found = i
        return found

    def previous(self, percent: float) -> float:
        """Where a rollback from ``percent`` goes: the stage below it, or 0 %."""
        lower = [p for p in self.stages if p < percent]
        return float(lower[-1]) if lower else 0.0

    def gate_at(self, percent: float) -> Limits | None:
        """The quality gate in force at ``percent``."""
        gates = self.gates
        if gates is None or isinstance(gates, Limits):
            return gates
        stage = self.stage_of(percent)
        return None if stage is None else gates[stage]


def check_percent(name: str, value: Any, bucketing: Bucketing | str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}={shown(value)} is invalid: must be a number in [0, 100]")
    try:
        p = float(value)
    except OverflowError:  # an int too large for a float
        p = math.nan
    if not (0 <= p <= 100) or math.isnan(p):
        raise ConfigError(f"{name}={shown(value)} is invalid: must be a number in [0, 100]")
    if round(p, 2) != p:
        raise ConfigError(f"{name}={shown(value)} is invalid: the granularity is 0.01 %")
    if bucketing == Bucketing.UNLEASH and p != int(p):
        raise ConfigError(
            f"{name}={shown(value)} is invalid: Unleash bucketing takes whole percents"
        )
    return p


def check_stage(stage: Any, stages: Sequence[float]) -> int:
    if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < len(stages):
        raise ConfigError(
            f"stage={shown(stage)} is invalid: must be an index into stages={list(stages)!r} "
            f"(0 to {len(stages) - 1}) or one of their percentages"
        )
    return stage


# -- compiled form, used per call ------------------------------------------------------------------


def _getter(
    path: str, sig: inspect.Signature | None, feature: str, what: str | None = None
) -> Callable[..., Any]:
    """A function (args, kwargs) -> the value at ``path`` ("arg" or "arg.attr.key"), or None.
    ``what`` names it in the error when it names no parameter."""
    name, *rest = path.split(".")
    index: int | None = None
    if sig is not None:
        params = list(sig.parameters.values())
        names = [p.name for p in params]
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
        if name not in names and not has_var_kw:
            raise ConfigError(
                f"feature {feature!r}: {what or 'rollout key or segment'} {path!r} names no "
                f"parameter of the function (parameters: {', '.join(names) or 'none'})"
            )
        if name in names:
            p = params[names.index(name)]
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                index = names.index(name)
    missing = object()

    def get(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value = kwargs.get(name, missing)
        if value is missing:
            if index is not None and index < len(args):
                value = args[index]
            else:
                return None
        for part in rest:
            value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
            if value is None:
                return None
        return value

    return get


def _segment(
    seg: Segment | None, sig: inspect.Signature | None, feature: str
) -> Callable[[tuple[Any, ...], dict[str, Any]], bool] | None:
    if seg is None:
        return None
    if not isinstance(seg, Mapping):
        predicate = seg

        def call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
            try:
                return bool(predicate(*args, **kwargs))
            except Exception as exc:  # a segment that cannot decide does not match
                errors.report(f"rollout segment of {feature!r}", exc)
                return False

        return call
    rules = [(_getter(path, sig, feature), frozenset(values)) for path, values in seg.items()]

    def match(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        for get, values in rules:
            try:
                if get(args, kwargs) in values:
                    return True
            except Exception:  # unhashable, or a __hash__/__eq__ that fails: cannot match
                continue
        return False

    return match


def _unbucketable(what: str, exc: Exception) -> tuple[Reason, str, str]:
    """The pre-call verdict for a rollout key that cannot be read or bucketed (its ``==``,
    ``str()`` or encoding failed): a missing key, and why. The key's value is not shown: it
    names a user."""
    try:
        why = f"{type(exc).__name__}: {exc}"
    except Exception:
        why = type(exc).__name__
    # the Outcome's detail keeps the message (in process); telemetry shows up to the exception's
    # type (``telemetry.detail_text``): the message may hold the key's value
    return Reason.MISSING_ROLLOUT_KEY, "baseline", f"{what}: {why}"


class UnitArm(str):
    """A rollout arm (``"ai"`` or ``"baseline"``, equal to that text) that carries a hash of
    the call's unit (``unit``): the call record keeps the hash, never the key, so that the
    report can count distinct units (adoption) without holding user ids.

    Example:
        >>> from aiguard.rollout import UnitArm, unit_hash
        >>> arm = UnitArm.of("ai", unit_hash("reply", "user-42"))
        >>> arm == "ai", arm.unit == unit_hash("reply", "user-42"), len(arm.unit)
        (True, True, 16)
    """

    __slots__ = ("unit",)
    unit: str

    @classmethod
    def of(cls, arm: str, unit: str) -> UnitArm:
        made = cls(arm)
        made.unit = unit
        return made


def unit_hash(feature: str, key: str) -> str:
    """The stable hash of a rollout unit recorded with a call: 16 hex digits of the BLAKE2b
    digest of the feature and the key (person ``aiguard-unit``). The same on every replica and
    every day, different per feature (units cannot be linked across features); it is a
    pseudonym, not an anonymisation: whoever can list the keys can hash them.

    Example:
        >>> from aiguard.rollout import unit_hash
        >>> unit_hash("reply", "user-42") == unit_hash("reply", "user-42")
        True
    """
    data = f"{feature}\x00{key}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8, person=b"aiguard-unit").hexdigest()


UNITS_CACHED = 16384  # units whose arms are kept per feature (about 300 bytes each)


@functools.lru_cache(maxsize=256)
def cached_units(
    feature: str,
) -> Callable[[str], tuple[tuple[Reason | None, str | None, str | None], UnitArm]]:
    """For a feature: key -> (the in-rollout verdict with its unit's arm, the baseline arm with
    its unit), with an LRU cache of ``UNITS_CACHED`` keys (the hash is paid once per unit)."""

    @functools.lru_cache(maxsize=UNITS_CACHED)
    def units(key: str) -> tuple[tuple[Reason | None, str | None, str | None], UnitArm]:
        unit = unit_hash(feature, key)
        return (None, UnitArm.of("ai", unit), None), UnitArm.of("baseline", unit)

    return units


class Plan:
    """A rollout compiled for one guard at one percentage: ``check`` runs per call."""

    __slots__ = (
        "check", "exclude", "include", "key", "limit", "percent", "position", "unit_key", "units",
    )  # fmt: skip

    def __init__(
        self,
        rollout: Rollout,
        feature: str,
        sig: inspect.Signature | None,
        position: Callable[[str], float],
        percent: float,
    ) -> None:
        key = rollout.key
        if isinstance(key, str):
            self.key = self.unit_key = _getter(key, sig, feature)
        else:
            fn = key

            def quietly(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                return fn(*args, **kwargs)  # for the unit only: a failure leaves it unknown

            self.unit_key = quietly

            def by_callable(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:  # the unit is unknown: treated as a missing key
                    errors.report(f"rollout key of {feature!r}", exc)
                    return None

            self.key = by_callable
        self.include = _segment(rollout.include, sig, feature)
        self.exclude = _segment(rollout.exclude, sig, feature)
        if rollout.bucketing is Bucketing.UNLEASH and percent != int(percent):
            errors.warn_once(
                f"unleash-percent:{feature}:{percent}",
                "aiguard: %s: Unleash bucketing takes whole percents; %s%% is used as %s%%",
                feature,
                percent,
                int(percent),
            )
            percent = float(int(percent))
        self.percent = percent
        self.limit = percent / 100
        self.position = position
        self.units = cached_units(feature)
        self.check = self._compile()

    def _compile(
        self,
    ) -> Callable[[tuple[Any, ...], dict[str, Any]], tuple[Reason | None, str | None, str | None]]:
        """``check(args, kwargs)``: ``(None, "ai", None)`` when the call is in the rollout, else
        ``(reason, "baseline", why)``. Compiled once per percentage, with what it needs in
        locals (it is the guard's whole pre-call check when no breaker or budget is set).

        The arm of a call whose key was read is a :class:`UnitArm` carrying its unit's hash
        (for adoption); an excluded call, or one without a key, has none."""
        exclude, include, get_key = self.exclude, self.include, self.key
        limit, position, percent = self.limit, self.position, self.percent
        units, unit_key = self.units, self.unit_key
        Out = tuple[Reason | None, str | None, str | None]
        inside: Out = (None, "ai", None)
        excluded: Out = (Reason.NOT_IN_ROLLOUT, "baseline", "excluded by segment")
        missing: Out = (
            Reason.MISSING_ROLLOUT_KEY,
            "baseline",
            "the rollout key is missing or empty",
        )
        not_in, why_not = Reason.NOT_IN_ROLLOUT, f"outside the {percent:g}% rollout"

        def entered(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Out:
            """In without bucketing (included, or 100 %): the unit is read for adoption only,
            and a key that is missing or cannot be read changes nothing."""
            try:
                key = unit_key(args, kwargs)
                if key is None or key == "":
                    return inside
                return units(key if key.__class__ is str else str(key))[0]
            except Exception:
                return inside

        def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Out:
            if exclude is not None and exclude(args, kwargs):
                return excluded
            if include is not None and include(args, kwargs):
                return entered(args, kwargs)
            if limit >= 1.0:
                return entered(args, kwargs)
            try:  # free on the common path; a key that cannot be bucketed is a missing key
                key = get_key(args, kwargs)
            except Exception as exc:  # e.g. an attribute on the key's path that raises
                return _unbucketable("the rollout key cannot be read", exc)
            try:
                if key is None or key == "":
                    return missing
                if key.__class__ is not str:
                    key = str(key)
                if position(key) < limit:
                    return units(key)[0]
                return (not_in, units(key)[1], why_not)
            except Exception as exc:
                what = f"the rollout key (a {type(key).__name__}) cannot be bucketed"
                return _unbucketable(what, exc)

        return check


@functools.lru_cache(maxsize=256)
def cached_positioner(algorithm: Bucketing, feature: str, salt: str) -> Callable[[str], float]:
    """The position function for (algorithm, feature, salt), with an LRU cache of 65,536 keys."""
    return functools.lru_cache(maxsize=65536)(positioner(algorithm, feature, salt))
