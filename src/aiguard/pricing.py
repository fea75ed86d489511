"""Prices per model, and the exact cost of a call.

A price table maps model names to per-million-token prices (input, cached input, cache writes
for 5 minutes and for 1 hour, output) and a flat per-call price, for non-token models. Costs are
computed and summed in integer pico-units of the currency (10^-12), so no float drift creeps into
totals; they are shown as ``Decimal``. A model missing from the table has an unknown cost
(``None``), with a warning logged once per model: never a silent zero.

A price file (TOML or JSON)::

    currency = "USD"

    [models."gpt-4.1-mini"]
    input = "0.40"          # per million input tokens
    cached_input = "0.10"   # per million cached input tokens (default: input)
    output = "1.60"         # per million output tokens

    [models."claude-sonnet-4-5"]
    input = "3"
    cached_input = "0.30"
    cache_write = "3.75"    # per million tokens written to a cache (default: input)
    cache_write_1h = "6"    # ... written to a 1-hour cache (default: 2 x input, at least
                            # cache_write)
    output = "15"

    [models."ticket-clf-v3"]
    per_call = "0.00002"    # a flat price per call
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ._checks import explain, shown
from ._runtime import errors
from ._runtime.money import to_decimal
from .exceptions import ConfigError
from .usage import Usage

__all__ = ["ModelPrice", "PriceTable", "to_decimal"]

_Money = Decimal


MAX_AMOUNT = Decimal(10**18)  # the largest price or budget: costs stay far from any overflow


def to_pico(amount: Decimal | int | float | str, *, field: str = "amount") -> int:
    """A money amount as integer pico-units, exactly; ConfigError if it is not a finite amount
    from 0 to 10^18, or is finer than 10^-12."""
    try:
        d = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    except Exception:
        raise ConfigError(f"{field}={shown(amount)} is invalid: must be a number") from None
    if not d.is_finite() or d < 0 or d > MAX_AMOUNT:
        raise ConfigError(
            f"{field}={shown(amount)} is invalid: must be a finite amount >= 0, at most 10^18"
        )
    if not _whole_in(d, 12):
        raise ConfigError(f"{field}={shown(amount)} is invalid: finer than 10^-12 of the currency")
    _, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    coefficient = int("".join(map(str, digits)))
    if coefficient == 0:  # 0E+999999999 is 0: no scale to compute
        return 0
    shift = exponent + 12  # exact: no Decimal context, no rounding, no overflow
    scale: int = 10 ** abs(shift)
    return coefficient * scale if shift >= 0 else coefficient // scale


def _whole_in(d: Decimal, places: int) -> bool:
    """Is the finite ``d`` a whole number of 10^-places? Exact, whatever its exponent (Decimal
    arithmetic would round to 28 digits, or overflow)."""
    _, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    if exponent >= -places or not any(digits):
        return True
    zeros = -places - exponent  # how many trailing digits must be 0
    return zeros <= len(digits) and not any(digits[len(digits) - zeros :])


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deep"
    return str(exc)


# A subclass of pydantic's model metaclass, reached through BaseModel rather than pydantic's
# private modules (a model's own __init__ would also run for nested entries).
class _Checked(type(BaseModel)):  # type: ignore[misc]
    """Built directly (``ModelPrice(input=...)``), a bad value raises ConfigError naming the
    field and the value, as every configuration does; validation nested in another model (a
    PriceTable's entries) and ``model_validate`` are untouched."""

    def __call__(cls, /, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except pydantic.ValidationError as exc:
            where = f"{cls.__name__}(...)"
            raise ConfigError(explain(exc, where, group="models", label="model")) from None


class Rates(NamedTuple):
    """A model's prices as exact integer pico-units (10^-12 of the currency): per token, and
    per call. Computed once per price table; a call's cost is a few integer products."""

    input: int
    cached_input: int
    cache_write: int
    output: int
    per_call: int
    cache_write_1h: int

    @property
    def per_token(self) -> bool:
        """Does any token cost something?"""
        return bool(
            self.input or self.cached_input or self.cache_write or self.output
            or self.cache_write_1h
        )  # fmt: skip


class ModelPrice(BaseModel, metaclass=_Checked):
    """One model's prices: per million tokens, and per call.

    ``cache_write`` prices the tokens written to a prompt cache (Anthropic's 5-minute writes,
    and every other provider's), ``cache_write_1h`` those written to Anthropic's 1-hour cache.
    Left out, ``cached_input`` and ``cache_write`` cost what ``input`` costs, and
    ``cache_write_1h`` twice ``input`` (Anthropic's rate), but never less than the
    ``cache_write`` in force: a write is never priced at 0 unless you say so.

    Example:
        >>> import aiguard
        >>> p = aiguard.ModelPrice(input="0.40", cached_input="0.10", output="1.60")
        >>> p.cost(aiguard.Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400))
        Decimal('0.0006')
        >>> claude = aiguard.ModelPrice(input="3", cache_write="3.75", output="15")
        >>> claude.cost(aiguard.Usage(input_tokens=1_000_000, cache_write_tokens=1_000_000,
        ...                           cache_write_1h_tokens=1_000_000))  # 2 x input
        Decimal('6')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: _Money = Field(default=Decimal(0), ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
    cached_input: _Money | None = Field(default=None, ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
    cache_write: _Money | None = Field(default=None, ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
    cache_write_1h: _Money | None = Field(default=None, ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
    output: _Money = Field(default=Decimal(0), ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
    per_call: _Money = Field(default=Decimal(0), ge=0, le=MAX_AMOUNT, allow_inf_nan=False)

    @pydantic.field_validator("input", "cached_input", "cache_write", "cache_write_1h", "output")
    @classmethod
    def _per_token_precision(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not _whole_in(value, 6):
            raise ValueError("finer than 10^-12 of the currency per token (6 decimals at most)")
        return value

    @pydantic.field_validator("per_call")
    @classmethod
    def _per_call_precision(cls, value: Decimal) -> Decimal:
        if not _whole_in(value, 12):
            raise ValueError("finer than 10^-12 of the currency (12 decimals at most)")
        return value

    def pico_rates(self) -> Rates:
        """The prices in force (defaults applied) as pico-units: per token, and per call."""
        million = 10**6

        def exact(name: str, value: Decimal) -> int:
            pico = to_pico(value, field=name)
            if pico % million:
                raise ConfigError(f"{name}={value} per million tokens is finer than 10^-12 a token")
            return pico // million

        rin = exact("input", self.input)
        cached = rin if self.cached_input is None else exact("cached_input", self.cached_input)
        write = rin if self.cache_write is None else exact("cache_write", self.cache_write)
        write_1h = (
            max(2 * rin, write)
            if self.cache_write_1h is None
            else exact("cache_write_1h", self.cache_write_1h)
        )
        return Rates(
            rin,
            cached,
            write,
            exact("output", self.output),
            to_pico(self.per_call, field="per_call"),
            write_1h,
        )

    def cost(self, usage: Usage | None) -> Decimal:
        """The cost of one call with this usage."""
        return to_decimal(pico_cost(self.pico_rates(), usage))


def pico_cost(rates: Rates, usage: Usage | None) -> int:
    """Integer pico-units for one call: uncached input, cache reads, 5-minute and 1-hour cache
    writes and output at their own prices, plus the price per call."""
    rin, rcached, rwrite, rout, rcall, rwrite_1h = rates
    if usage is None:
        return rcall
    read, write = usage.cache_read_tokens, usage.cache_write_tokens
    write_1h = usage.cache_write_1h_tokens
    if write_1h > write:  # never: Usage refuses it; priced as the larger figure if it happens
        write = write_1h
    uncached = usage.input_tokens - read - write
    return (
        (uncached if uncached > 0 else 0) * rin
        + read * rcached
        + (write - write_1h) * rwrite
        + write_1h * rwrite_1h
        + usage.output_tokens * rout
        + rcall
    )


class PriceTable(BaseModel, metaclass=_Checked):
    """Prices by model name, in one currency.

    Example:
        >>> import aiguard
        >>> table = aiguard.PriceTable(models={"m": {"input": "1", "output": "2"}})
        >>> table.cost("m", aiguard.Usage(input_tokens=500_000, output_tokens=250_000))
        Decimal('1')
        >>> table.cost("unknown-model", aiguard.Usage(input_tokens=1)) is None
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", min_length=1)
    models: dict[str, ModelPrice] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        rates = {}
        for name, price in self.models.items():
            try:
                rates[name] = price.pico_rates()
            except ConfigError as exc:
                raise ConfigError(f"price of model {name!r}: {exc}") from None
        object.__setattr__(self, "_rates", rates)

    def rates(self, model: str | None) -> Rates | None:
        """The pico rates of ``model``, or None (warning logged once) when it has no price."""
        found: Rates | None = self._rates.get(model)  # type: ignore[attr-defined]
        if found is None:
            errors.warn_once(
                f"price:{model}",
                "aiguard: no price for model %r in the price table: its calls' cost is unknown",
                model,
            )
        return found

    def cost(self, model: str | None, usage: Usage | None) -> Decimal | None:
        """The cost of one call, or None when the model has no price."""
        rates = self.rates(model)
        return None if rates is None else to_decimal(pico_cost(rates, usage))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PriceTable:
        """Load and validate a TOML or JSON price file; ConfigError names the model and field.

        Example:
            >>> import aiguard, pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "prices.toml"
            >>> _ = p.write_text('[models.m]\\ninput = "0.5"\\noutput = "1.5"\\n')
            >>> aiguard.PriceTable.load(p).models["m"].output
            Decimal('1.5')
        """
        p = Path(path)
        try:
            data = p.read_bytes()
            raw = json.loads(data) if p.suffix.lower() == ".json" else tomllib.loads(data.decode())
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            raise ConfigError(f"price file {str(p)!r} cannot be read: {_why(exc)}") from None
        return cls.parse(raw, source=f"price file {str(p)!r}")

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, source: str = "prices") -> PriceTable:
        try:
            return cls.model_validate(raw)
        except pydantic.ValidationError as exc:
            raise ConfigError(explain(exc, source, group="models", label="model")) from None
