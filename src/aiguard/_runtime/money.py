"""Money as integer pico-units (10^-12 of the currency): exact sums, no float drift."""

from __future__ import annotations

from decimal import Decimal

PICO = 10**12


def to_decimal(pico: int) -> Decimal:
    """Integer pico-units as a Decimal amount."""
    return Decimal(pico).scaleb(-12).normalize() if pico else Decimal(0)


def pico_of(amount: Decimal) -> int:
    """A Decimal amount already checked (an Outcome's cost) as pico-units."""
    return int(amount.scaleb(12))
