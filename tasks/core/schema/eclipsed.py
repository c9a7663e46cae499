"""params.yaml sections of eCLIPsed (CLIP-guided local latent directions for a style-based GAN):
train_face_parts (the part segmenter that localizes edits), train_stylegan (the generator), and
eclipsed (the direction-learning table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator

from tasks.core.resources import LABEL, RESNET_STEM, RGB, BatchEstimate
from tasks.core.schema.msp import five_decoder_blocks
from tasks.core.section import (
    BatchLimit,
    BatchSize,
    Channels,
    Count,
    Epochs,
    LearningRate,
    LossWeight,
    Section,
    Steps,
    TableRows,
    TableSection,
)


class TrainFacePartsConfig(Section):
    """The face part segmenter (ResNet-34 U-Net of lightning_modules/segmentation) that localizes
    eCLIPsed's edits, trained on SynthWorld's exact part maps (data/faces/parts)."""

    # The side faces are resized to (a multiple of 32: the U-Net halves five times).
    image_size: Annotated[int, Field(ge=32, le=1024, multiple_of=32)] = 64
    batch_size: BatchSize = 16
    lr: LearningRate = 1e-3
    # Cross-entropy class weights (most frequent class's pixels / class's pixels) ** power:
    # eyes, brows and glasses are a few pixels each against the skin and the background.
    class_weight_power: Annotated[float, Field(ge=0.0, le=2.0)] = 0.5
    max_epochs: Epochs = 3
    limit_train_batches: BatchLimit = 1.0
    limit_val_batches: BatchLimit = 1.0
    decoder_channels: list[Channels] = [256, 128, 64, 32, 16]

    _five_blocks = field_validator("decoder_channels")(five_decoder_blocks)

    def batch_memory(self) -> BatchEstimate:
        return BatchEstimate(f"train_face_parts.batch_size {self.batch_size} x train_face_parts.image_size "
                             f"{self.image_size}^2",
                             self.batch_size * self.image_size ** 2 * (RGB + LABEL + RESNET_STEM))


# --- train_stylegan: the generator ------------------------------------------------------------

# 4 px to 1024 px (FFHQ's StyleGAN2): 9 resolutions.
MAX_RESOLUTIONS = 9
Interval = Annotated[int, Field(ge=1, le=10_000)]


class TrainStyleganConfig(Section):
    """The StyleGAN2 generator eCLIPsed edits: trained on the train split of data/faces, or a
    rosinality checkpoint imported by path (`checkpoint`), converted to safetensors."""

    checkpoint: Optional[Path] = None     # null: train; a path: import this g_ema instead
    # Channels at 4, 8, 16, ... px (the generator's and the discriminator's); the image size is
    # 4 x 2^(entries - 1). A list, so that a profile replaces it whole (YAML mappings would merge).
    channels: list[Channels] = Field([128, 128, 64, 32, 16], min_length=2, max_length=MAX_RESOLUTIONS)
    style_dim: Channels = 128
    n_mlp: int = Field(4, ge=1, le=16)
    batch_size: BatchSize = 16
    steps: Steps = 1000                   # iterations: one discriminator and one generator step each
    lr: LearningRate = 2e-3
    r1_gamma: Annotated[float, Field(ge=0, le=1000)] = 0.1
    r1_every: Interval = 16
    path_length_weight: LossWeight = 0.0  # 2 in StyleGAN2; 0: off
    path_length_every: Interval = 4
    mixing: Annotated[float, Field(ge=0, le=1)] = 0.9
    ema_half_life_images: Annotated[float, Field(gt=0, le=1e9)] = 2000.0
    ema_rampup: Annotated[float, Field(ge=0, le=1)] = 0.05
    xflip: bool = True
    # DiffAugment (Zhao et al. 2020) policies, applied in order to every image D sees: what
    # keeps D from memorising a few hundred faces over a long run; []: none.
    augment: list[Literal["color", "translation", "cutout"]] = Field([], max_length=3)
    # The per-layer noise inputs' strengths: trained (StyleGAN2), or held at zero (false).
    noise_inputs: bool = True
    fid_every: Steps = 250                # iterations between points of the FID curve
    fid_samples: Count = 800
    grid_images: Annotated[int, Field(ge=1, le=256)] = 32

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: Optional[Path]) -> Optional[Path]:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @property
    def image_size(self) -> int:
        return 4 * 2 ** (len(self.channels) - 1)

    @property
    def channel_table(self) -> dict[int, int]:
        """{resolution: channels}, the generator's `channels` argument."""
        return {4 * 2 ** i: c for i, c in enumerate(self.channels)}

    def batch_memory(self) -> BatchEstimate:
        """The real and generated batches, and the generator's last feature map at full size
        (kept for the backward pass)."""
        per_pixel = 2 * RGB + self.channels[-1] * 4   # float32 activations
        return BatchEstimate(f"train_stylegan.batch_size {self.batch_size} x image size {self.image_size}^2 "
                             "(train_stylegan.channels)", self.batch_size * self.image_size ** 2 * per_pixel)


# --- eclipsed: the direction-learning table --------------------------------------------------

# Style layers of a generator: 2 log2(size) - 2 of them (18 at 1024 px).
StyleLayer = Annotated[int, Field(ge=0, le=63)]
Alpha = Annotated[float, Field(ge=-1000, le=1000)]
MAX_SEED = 2**31 - 1


EMPTY_TEXT = {"prompt": "empty prompt: say what the edit should make (e.g. a person with curly hair)",
              "neutral_prompt": "empty neutral prompt: say what the face is before the edit (e.g. a person)"}


class EclipsedDirections(Section):
    """What one row of eCLIPsed's Table 1 trains: K directions for one prompt (the paper, sec. 3)."""

    prompt: str = Field("a person with curly hair", max_length=300)
    # auto: the segmenter's part CLIP finds closest to the prompt; or a part name of the segmenter
    part: str = Field("auto", min_length=1, max_length=64)
    prompt_extension: Literal["none", "emphasis"] = "none"   # emphasis: the paper's extended prompt
    # global: the paper's 1 - cos(E_T(prompt), E_I(edit)); directional (StyleGAN-NADA's loss, ours
    # here): 1 - cos(E_I(edit) - E_I(original), E_T(prompt) - E_T(neutral_prompt)), the image's
    # change along the text's change only, not towards everything CLIP ties to the prompt
    clip_loss: Literal["global", "directional"] = "global"
    neutral_prompt: str = Field("a person", max_length=300)   # the directional loss's starting text
    latent_space: Literal["w+", "w"] = "w+"
    layers: list[StyleLayer] = Field([3, 4], min_length=1, max_length=64)
    localization_layers: list[StyleLayer] = Field([], max_length=64)   # [] = layers
    num_directions: int = Field(1, ge=1, le=64)
    alpha_range: tuple[Alpha, Alpha] = (0.5, 4.0)
    alpha_min: float = Field(0.5, ge=0, le=1000)
    localization_weight: LossWeight = 0.05
    decorrelation_weight: LossWeight = 1.0
    single_seed: bool = False          # train on eclipsed.train_seed's image alone
    steps: Steps = 200
    batch_size: BatchSize = 4
    lr: LearningRate = 1e-2
    truncation: float = Field(0.7, gt=0, le=1)

    @field_validator("prompt", "neutral_prompt")
    @classmethod
    def _said(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError(EMPTY_TEXT[info.field_name])
        return value

    @field_validator("layers", "localization_layers")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("a layer is listed more than once")
        return sorted(value)

    @model_validator(mode="after")
    def _alphas(self) -> "EclipsedDirections":
        low, high = self.alpha_range
        if low > high:
            raise ValueError(f"alpha_range: min {low:g} > max {high:g}; expected [min, max]")
        if max(abs(low), abs(high)) < self.alpha_min:
            raise ValueError(f"alpha_range: [{low:g}, {high:g}] holds no alpha with |alpha| >= alpha_min "
                             f"({self.alpha_min:g})")
        return self

    @model_validator(mode="after")
    def _text_change(self) -> "EclipsedDirections":
        if self.clip_loss == "directional" and self.neutral_prompt.strip() == self.prompt.strip():
            raise ValueError(f"neutral_prompt: the same as prompt ({self.prompt!r}); the directional loss "
                             "reads the change from one to the other")
        return self


# A row of the table: the keys it sets differently from the section's (each with its own type
# and bounds; the merged row is checked again as a whole).
EclipsedOverrides = create_model(
    "EclipsedOverrides", __base__=Section,
    **{name: (Optional[Annotated[(field.annotation, *field.metadata)]] if field.metadata else
              Optional[field.annotation], None) for name, field in EclipsedDirections.model_fields.items()})


class EclipsedConfig(EclipsedDirections, TableSection):
    """eCLIPsed's Table 1 (`eclipsed@<row>`): the section's keys are the final configuration, each
    row the keys it changes; plus the models and how every row is measured."""

    generator: Path = Path("data/models/stylegan")          # train_stylegan's, or a converted StyleGAN2
    segmenter: Path = Path("data/models/face_parts")
    attribute_classifier: Path = Path("data/models/face_attributes")
    train_seed: int = Field(7, ge=0, le=MAX_SEED)           # the image single-seed rows train on
    eval_seeds: Count = 16                                  # evaluation latents: seeds from eval_seed_start
    eval_seed_start: int = Field(1_000_000, ge=0, le=MAX_SEED)
    eval_alpha: Alpha = 3.0
    strip_alphas: list[Alpha] = Field([-4.0, -2.0, 0.0, 2.0, 4.0], min_length=1, max_length=32)
    # edit accuracy and its parts measured at each of these (empty: no curve)
    curve_alphas: list[Alpha] = Field([0.5, 1.0, 2.0, 3.0, 4.0, 6.0], max_length=32)
    strip_seeds: Count = 4
    sequential: list[str] = Field([], max_length=16)        # rows the report edits with one after the other
    rows: Annotated[dict[str, EclipsedOverrides], TableRows] = Field({}, max_length=256)

    def row(self, name: str) -> EclipsedDirections:
        """The row's whole configuration: the section's keys with the row's on top."""
        base = {key: getattr(self, key) for key in EclipsedDirections.model_fields}
        return EclipsedDirections(**{**base, **self.rows[name].model_dump(exclude_none=True)})

    @model_validator(mode="after")
    def _rows_whole(self) -> "EclipsedConfig":
        for name in self.rows:
            try:
                row = self.row(name)
            except ValidationError as err:
                first = err.errors()[0]
                key = ".".join(str(part) for part in first["loc"])
                message = first["msg"].removeprefix("Value error, ")
                raise ValueError(f"rows.{name}{'.' + key if key else ''}: {message}") from None
            if row.single_seed:
                continue
            # random-seed training draws seeds 0, 1, ...: the evaluation's must be others
            if row.steps * row.batch_size > self.eval_seed_start:
                raise ValueError(f"rows.{name}: trains on seeds 0..{row.steps * row.batch_size - 1}, past "
                                 f"eval_seed_start ({self.eval_seed_start}); raise eval_seed_start")
        for name in self.sequential:
            if name not in self.table:
                raise ValueError(f"sequential: {name!r} is not a row of table ({', '.join(self.table) or 'none'})")
        return self
