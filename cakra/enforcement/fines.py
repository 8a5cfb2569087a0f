"""How a fine is written: the one formatting of rupiah amounts."""

from __future__ import annotations


def rupiah(amount: int, *, english: bool = False) -> str:
    """``Rp500.000`` as Indonesians write it (the default wherever a fine is
    shown, whatever the reader's language), ``Rp500,000`` on English pages."""
    grouped = f"{int(amount):,}"
    return "Rp" + (grouped if english else grouped.replace(",", "."))
