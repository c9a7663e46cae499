"""The base of every params section, and the field types several sections share."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, PositiveInt


class Section(BaseModel):
    # Unknown keys are errors: a misspelt knob must not be silently ignored. Floats must be
    # finite: `.inf` or `.nan` for a learning rate or a loss weight is never what was meant.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _fraction_or_count(value: Union[int, float]) -> Union[int, float]:
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError("expected a fraction in (0, 1] or a whole number of batches")
    return value


# A fraction of the batches of an epoch, or a whole number of them.
BatchLimit = Annotated[Union[PositiveInt, float], AfterValidator(_fraction_or_count)]
