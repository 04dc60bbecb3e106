"""Money as integer micro-dollars: parsing and display. Floats never hold money here."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000


def usd_to_micros(value: str | int | float | Decimal) -> int:
    """'5', '5.00', '$0.10', 0.08 -> micro-dollars, exactly (floats go through their repr)."""
    text = str(value).strip().lstrip("$").replace(",", "")
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount of dollars: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not an amount of dollars: {value!r}")
    micros = (amount * MICROS_PER_USD).to_integral_value(rounding=ROUND_HALF_UP)
    return int(micros)


def micros_to_usd(micros: int) -> float:
    """For JSON output only: a float rounded to cents-and-below precision."""
    return float(Decimal(micros) / MICROS_PER_USD)


def format_usd(micros: int) -> str:
    """'$0.80'; sub-cent amounts keep their digits ('$0.157')."""
    amount = Decimal(micros) / MICROS_PER_USD
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    cents = amount.quantize(Decimal("0.01"))
    if cents == amount:
        return f"{sign}${cents:,.2f}"
    return f"{sign}${amount.normalize():,f}"
