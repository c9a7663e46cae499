"""The base of every params section, and the field types several sections share.

Every number has an upper bound as well as a lower one: a count, a size or a step that no
machine can hold (``augment.augmentations_per_subject: 1e12``) must stop at validation,
naming the key, not surface later as an allocation failure with a traceback. The bounds are
what the methods mean (a learning rate of an Adam optimizer, a probability) or far above
what any run of them uses; what a given machine can hold is checked on top of them
(tasks/core/machine.py).
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator


class Section(BaseModel):
    # Unknown keys are errors: a misspelt knob must not be silently ignored. Floats must be
    # finite: `.inf` or `.nan` for a learning rate or a loss weight is never what was meant.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


MAX_STEPS = 10_000_000          # optimizer steps of one run
MAX_EPOCHS = 100_000
MAX_BATCH = 4096                # samples in one batch (what fits is checked per machine)
MAX_COUNT = 1_000_000           # items a stage makes or reads (images, identities, ...)
MAX_CHANNELS = 4096             # widths of layers, embeddings
MAX_LAYERS = 24             # transformer layers of a tiny model (CLIP ViT-L has 24)
MAX_INFERENCE_STEPS = 1000      # a sampler cannot take more steps than the 1000 training timesteps

Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
BatchSize = Annotated[int, Field(ge=1, le=MAX_BATCH)]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
OptionalCount = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Channels = Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
Layers = Annotated[int, Field(ge=1, le=MAX_LAYERS)]
InferenceSteps = Annotated[int, Field(ge=1, le=MAX_INFERENCE_STEPS)]
# Adam / AdamW step sizes: above 1 every update overshoots.
LearningRate = Annotated[float, Field(gt=0, le=1)]
# Decoupled (AdamW) or L2 decay per step: above 1 a weight changes sign every step.
WeightDecay = Annotated[float, Field(ge=0, le=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
LossWeight = Annotated[float, Field(ge=0, le=1000)]
# Classifier-free guidance: 1 is none; diffusion pipelines are used up to ~20.
GuidanceScale = Annotated[float, Field(ge=1, le=100)]


def _fraction_or_count(value: Union[int, float]) -> Union[int, float]:
    fraction = isinstance(value, float) and 0.0 < value <= 1.0
    count = isinstance(value, int) and 1 <= value <= MAX_STEPS
    if not (fraction or count):
        raise ValueError(f"expected a fraction in (0, 1] or a whole number of batches up to {MAX_STEPS:,}")
    return value


# A fraction of the batches of an epoch, or a whole number of them (one check, one message for
# both kinds; the schema states the bounds it enforces).
BatchLimit = Annotated[
    Union[int, float], AfterValidator(_fraction_or_count),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_STEPS},
                              {"type": "number", "exclusiveMinimum": 0, "maximum": 1}]}),
]


def _row_names(rows: dict) -> dict:
    for name in rows:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"row name {name!r}: use letters, digits and underscores")
    return rows


# The rows of a table (a foreach stage family): each name becomes part of a DVC stage name
# (`reid_ablation@<row>`) and of file names.
TableRows = AfterValidator(_row_names)


class TableSection(Section):
    """A table's section: `rows` defines every row the table knows (subclasses type it), and
    `table` names the rows that run, in the order the report prints them. dvc.yaml expands
    the family over `table`, so a profile runs a few rows of a table without losing the
    definitions of the others (`subjectlab params -S 'reid_ablation.table=[baseline,csa]'`)."""

    table: list[str] = Field([], max_length=256)

    @model_validator(mode="after")
    def _table_names_rows(self) -> "TableSection":
        rows = getattr(self, "rows")
        for name in self.table:
            if name not in rows:
                raise ValueError(f"table: {name!r} is not a key of rows (rows: {', '.join(rows) or 'none'})")
        repeated = sorted({name for name in self.table if self.table.count(name) > 1})
        if repeated:
            raise ValueError(f"table: {', '.join(repeated)} listed more than once")
        return self
