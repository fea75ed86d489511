"""Read kill switches and rollout percentages from the flag system a team already runs.

Through OpenFeature (install the extra: ``pip install 'aiguard[openfeature]'``), any provider
works: flagd, LaunchDarkly, Unleash, GrowthBook and others. The state lives in that system, not
in aiguard, which is how it holds across thousands of replicas. Flags are evaluated by a daemon
thread every ``interval`` seconds, never per call (an OpenFeature evaluation costs several
microseconds); a change reaches every call of the process within one interval.

Flags, per feature (names configurable):

- ``{feature}.killed`` (boolean): the feature's kill switch; ``aiguard.killed`` kills every
  feature;
- ``{feature}.rollout`` (number, 0-100): the rollout percentage;
- ``{feature}.threshold`` (number, 0-1): the confidence threshold.

A flag the provider does not have (``FLAG_NOT_FOUND``) leaves that setting to aiguard's other
layers; any other evaluation error, or a value out of range, keeps the last good state (logged
once): an unreachable provider never lifts a kill.

Example:
    >>> from openfeature import api
    >>> from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
    >>> import aiguard
    >>> from aiguard.openfeature import OpenFeatureControl
    >>> api.set_provider(InMemoryProvider({"triage.rollout": InMemoryFlag("on", {"on": 25})}))
    >>> OpenFeatureControl(["triage"]).poll().features["triage"].rollout
    25.0
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pydantic

from ._checks import explain, seconds
from ._runtime.state import runtime
from .control import ControlState, FeatureControl
from .exceptions import ConfigError

__all__ = ["OpenFeatureControl"]


class OpenFeatureControl:
    """A control source backed by an OpenFeature client.

    Args:
        features: the features to read; default: every feature guarded in this process.
        client: an ``openfeature.client.OpenFeatureClient``; default ``api.get_client(domain)``.
        domain: the OpenFeature domain of the default client.
        killed_flag, rollout_flag, threshold_flag: flag-name templates with ``{feature}``;
            ``None`` leaves that setting out.
        all_killed_flag: the global kill flag (``None``: none).
        interval: seconds between polls (float or timedelta).

    Example:
        >>> from aiguard.openfeature import OpenFeatureControl
        >>> OpenFeatureControl(["triage"], rollout_flag="ai.{feature}.percent").name
        'openfeature'
    """

    def __init__(
        self,
        features: Iterable[str] | None = None,
        *,
        client: Any = None,
        domain: str | None = None,
        killed_flag: str | None = "{feature}.killed",
        rollout_flag: str | None = "{feature}.rollout",
        threshold_flag: str | None = "{feature}.threshold",
        all_killed_flag: str | None = "aiguard.killed",
        interval: float | timedelta = 1.0,
    ) -> None:
        try:
            from openfeature import api
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "OpenFeatureControl needs the OpenFeature SDK: pip install 'aiguard[openfeature]'"
            ) from exc
        self.client = client if client is not None else api.get_client(domain)
        self.features = None if features is None else sorted(set(features))
        for name, template in (
            ("killed_flag", killed_flag),
            ("rollout_flag", rollout_flag),
            ("threshold_flag", threshold_flag),
        ):
            if template is not None and "{feature}" not in template:
                raise ConfigError(f"{name}={template!r} is invalid: must contain '{{feature}}'")
        self.killed_flag = killed_flag
        self.rollout_flag = rollout_flag
        self.threshold_flag = threshold_flag
        self.all_killed_flag = all_killed_flag
        self.interval = seconds("interval", interval)
        self.name = "openfeature" if domain is None else f"openfeature:{domain}"
        self._last: ControlState | None = None

    def _features(self) -> list[str]:
        if self.features is not None:
            return self.features
        with runtime.lock:
            return sorted({core.feature for core in list(runtime.cores)})

    @staticmethod
    def _value(key: str, details: Any) -> Any:
        """The flag's value; None if the provider does not have it; raises on any other error
        (so the last good state is kept rather than a kill silently lifted)."""
        code = details.error_code
        if code is None:
            return details.value
        if getattr(code, "value", code) == "FLAG_NOT_FOUND":
            return None
        raise ConfigError(
            f"OpenFeature flag {key!r}: {getattr(code, 'value', code)}: {details.error_message}"
        )

    def _bool(self, key: str) -> bool | None:
        value = self._value(key, self.client.get_boolean_details(key, False))
        return None if value is None else bool(value)

    def _number(self, key: str) -> float | None:
        details = self.client.get_float_details(key, 0.0)
        if getattr(details.error_code, "value", None) == "TYPE_MISMATCH":
            details = self.client.get_integer_details(key, 0)
        value = self._value(key, details)
        return None if value is None else float(value)

    def poll(self) -> ControlState | None:
        features = {}
        for feature in self._features():
            killed = rollout = threshold = None
            if self.killed_flag is not None:
                killed = self._bool(self.killed_flag.format(feature=feature))
            if self.rollout_flag is not None:
                rollout = self._number(self.rollout_flag.format(feature=feature))
            if self.threshold_flag is not None:
                threshold = self._number(self.threshold_flag.format(feature=feature))
            if killed or rollout is not None or threshold is not None:
                try:
                    features[feature] = FeatureControl(
                        killed=bool(killed),
                        reason="killed by OpenFeature flag" if killed else None,
                        rollout=rollout,
                        threshold=threshold,
                    )
                except pydantic.ValidationError as exc:
                    where = f"OpenFeature flags of feature {feature!r}"
                    raise ConfigError(explain(exc, where)) from None
        all_killed = False
        if self.all_killed_flag is not None:
            all_killed = bool(self._bool(self.all_killed_flag))
        snapshot = ControlState(
            all=FeatureControl(
                killed=all_killed, reason="killed by OpenFeature flag" if all_killed else None
            ),
            features=features,
        )
        if snapshot == self._last:
            return None
        self._last = snapshot
        return snapshot

    def __repr__(self) -> str:
        return f"OpenFeatureControl(features={self.features!r})"
