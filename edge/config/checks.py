"""Cross-field errors that name the offending key, shared by the config sections."""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticCustomError


def cross_field(field: str, message: str, **context: Any) -> PydanticCustomError:
    """An error the loader reports at ``<section>.<field>`` rather than at the section."""
    return PydanticCustomError("cross_field", message, {"field": field, **context})


def require_not_above(low_field: str, low: float, high_field: str, high: float) -> None:
    if low > high:
        raise cross_field(low_field, f"must not exceed {high_field} ({{max}})", max=high)
