"""params.yaml sections of the diffusion stages: zoo, pretraining, class images, fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, create_model, field_validator, model_validator

from tasks.core.section import (
    MAX_STEPS,
    BatchSize,
    GuidanceScale,
    InferenceSteps,
    Layers,
    LearningRate,
    LossWeight,
    Probability,
    Section,
    Steps,
    TableRows,
    TableSection,
    WeightDecay,
)

TINY = "tiny"


def _tiny_or_directory(value: str) -> str:
    if value != TINY and not Path(value).is_dir():
        raise ValueError("expected tiny or the path of a local model directory (not found)")
    return value


# "tiny" (built by the zoo stage) or a local diffusers / transformers directory.
ModelSource = Annotated[str, AfterValidator(_tiny_or_directory)]
# Widths of the tiny models: their attention has one head per 32 channels (tiny.py), the UNet
# and VAE normalise in groups of 8; a real model is loaded by path, never sized here.
TinyWidth = Annotated[int, Field(ge=8, le=1024)]
ATTENTION_HEAD_WIDTH = 32
NORM_GROUPS = 8
MAX_UNET_LEVELS = 5


class ZooConfig(Section):
    """The base models by path, and the sizes of the tiny ones the pipeline builds."""

    text_to_image: ModelSource = TINY   # a StableDiffusionPipeline directory
    clip: ModelSource = TINY            # a CLIPModel directory with its processor and tokenizer
    dino: ModelSource = TINY            # a ViT directory (DINO) with its image processor
    resolution: int = Field(32, ge=16, le=1024)
    unet_channels: list[TinyWidth] = Field([32, 64], max_length=MAX_UNET_LEVELS)
    # The autoencoder's levels: each after the first halves the pixels (Stable Diffusion: 4
    # levels, 8x). 3 levels on 64 px keep the latents at 16 x 16, as 2 levels on 32 px do.
    vae_channels: list[TinyWidth] = Field([32, 64], min_length=2, max_length=MAX_UNET_LEVELS)
    text_width: TinyWidth = 64
    text_layers: Layers = 2
    vision_width: TinyWidth = 64
    vision_layers: Layers = 2
    patch_size: int = Field(4, ge=1, le=64)
    max_length: int = Field(32, ge=8, le=77)
    rare_tokens: int = Field(64, ge=1, le=256)
    # class nouns of your own subjects, for the tiny tokenizer (one vocabulary entry each)
    extra_words: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field([], max_length=10_000)

    @model_validator(mode="after")
    def _shapes(self) -> "ZooConfig":
        if len(self.unet_channels) < 2:
            raise ValueError("unet_channels: at least 2 levels (the first has no cross-attention)")
        vae_scale = 2 ** (len(self.vae_channels) - 1)
        if self.resolution % vae_scale or (self.resolution // vae_scale) % 2 ** (len(self.unet_channels) - 1):
            raise ValueError(f"resolution: the latents (resolution / {vae_scale}, one halving per vae_channels level "
                             "after the first) must halve at every UNet level")
        if self.resolution % self.patch_size:
            raise ValueError("resolution: must be a multiple of patch_size")
        for key in ("text_width", "vision_width"):
            width = getattr(self, key)
            if width > ATTENTION_HEAD_WIDTH and width % ATTENTION_HEAD_WIDTH:
                raise ValueError(f"{key}: {width} splits into attention heads of {ATTENTION_HEAD_WIDTH} channels: "
                                 f"use a multiple of {ATTENTION_HEAD_WIDTH} (or at most {ATTENTION_HEAD_WIDTH})")
        for key in ("unet_channels", "vae_channels"):
            if any(channels % NORM_GROUPS for channels in getattr(self, key)):
                raise ValueError(f"{key}: every level is normalised in {NORM_GROUPS} groups: "
                                 f"use multiples of {NORM_GROUPS}")
        return self


class PretrainBaseConfig(Section):
    """Tiny text-to-image pretraining on SynthWorld captions (skipped for a real model)."""

    batch_size: BatchSize = 16   # the denoiser's
    vae_batch_size: BatchSize = 8
    vae_steps: Steps = 300
    vae_lr: LearningRate = 1e-3
    kl_weight: LossWeight = 1e-3
    steps: Steps = 600
    lr: LearningRate = 5e-4
    weight_decay: WeightDecay = 1e-2
    caption_dropout: float = Field(0.1, ge=0, lt=1)   # unconditional samples for guidance
    # Extra loss weight on the subjects' pixels, from the augment stage's masks: the subjects
    # cover ~5 % of a picture (losses.subject_weights). One for the VAE's reconstruction, one
    # for the denoising loss.
    vae_subject_loss_weight: LossWeight = 0.0
    subject_loss_weight: LossWeight = 0.0
    # Captions beyond "a <class> <scene>", so that every prompt the pipeline later asks for is
    # in distribution: "a <class>" for this share of the images, the scenes alone, several
    # subjects together (the Disen-Mix images).
    class_only_share: Annotated[float, Field(ge=0, le=1)] = 0.25
    scene_images: bool = True
    mixed_images: bool = True
    sample_steps: InferenceSteps = 20
    guidance_scale: GuidanceScale = 3.0


class PretrainClipConfig(Section):
    batch_size: int = Field(32, ge=2, le=4096)   # the contrastive loss needs two pairs at least
    steps: Steps = 450
    lr: LearningRate = 5e-4
    weight_decay: WeightDecay = 1e-2
    # The share of the training pairs that are SynthWorld faces with their attribute captions
    # (data/faces, split train), beside the subjects' class captions; 0: subjects only.
    face_share: Probability = 0.6
    # Face attributes to write a hard negative caption for (the caption with that attribute
    # changed, NegCLIP); names of the faces folder's attributes. []: none.
    hard_negatives: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        ["glasses", "mouth"], max_length=16)


# A share of an image's area (crop scales).
AreaShare = Annotated[float, Field(gt=0, le=1)]
# Softmax temperatures: DINO's are 0.04 (teacher) and 0.1 (student); above 1 the logits
# (cosines in [-1, 1]) would give near-uniform distributions.
Temperature = Annotated[float, Field(gt=0, le=1)]
# EMA momenta: 1 would never move, and a negative one is no average.
Momentum = Annotated[float, Field(ge=0, le=1)]


class PretrainDinoConfig(Section):
    """DINO self-distillation of the tiny ViT on the subjects' images (skipped for a real DINO)."""

    batch_size: int = Field(32, ge=2, le=4096)   # the head's batch norm needs two images at least
    steps: Steps = 300
    warmup_steps: int = Field(30, ge=0, le=MAX_STEPS)
    lr: LearningRate = 1e-3
    weight_decay: WeightDecay = 4e-2
    local_crops: int = Field(4, ge=0, le=32)
    out_dim: int = Field(512, ge=2, le=65536)    # K prototypes (DINO: 65536)
    head_hidden_dim: int = Field(256, ge=1, le=8192)
    bottleneck_dim: int = Field(64, ge=1, le=1024)
    teacher_temperature: Temperature = 0.04
    student_temperature: Temperature = 0.1
    momentum: Momentum = 0.97
    center_momentum: Momentum = 0.9
    global_crop_scale: tuple[AreaShare, AreaShare] = (0.4, 1.0)
    local_crop_scale: tuple[AreaShare, AreaShare] = (0.05, 0.4)
    color_jitter: float = Field(0.2, ge=0, le=1)
    background_swap: Probability = 0.8   # share of the student's views with the subject on a random scene

    @field_validator("global_crop_scale", "local_crop_scale")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError("expected [min, max] with min <= max")
        return value

    @model_validator(mode="after")
    def _warmup_within_training(self) -> "PretrainDinoConfig":
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps: {self.warmup_steps} is more than steps ({self.steps}): "
                             "the learning rate would never reach pretrain_dino.lr")
        return self


class ClassImagesConfig(Section):
    """DreamBooth's class images, generated by the base model for prior preservation."""

    images_per_class: int = Field(8, ge=1, le=100_000)
    prompt: str = Field("a {class_noun}", max_length=1000)
    inference_steps: InferenceSteps = 20
    guidance_scale: GuidanceScale = 3.0

    @field_validator("prompt")
    @classmethod
    def _has_class(cls, value: str) -> str:
        if "{class_noun}" not in value:
            raise ValueError("the class prompt must contain {class_noun}")
        return value


AdamBeta = Annotated[float, Field(ge=0, lt=1)]


class FinetuneConfig(Section):
    """Multi-subject DreamBooth (MSP 2(i)) and its baselines: one mode per run."""

    mode: Literal["full", "lora", "textual_inversion", "custom_diffusion"] = "lora"
    batch_size: BatchSize = 4
    max_steps: Steps = 400
    accumulate_grad_batches: int = Field(1, ge=1, le=1024)
    lr: LearningRate = 1e-4                 # UNet weights (full), adapters (lora), K/V (custom diffusion)
    text_encoder_lr: LearningRate = 5e-5
    embedding_lr: LearningRate = 5e-3       # identifier embeddings (textual inversion, custom diffusion)
    weight_decay: WeightDecay = 1e-2
    # Adam's moment decays: 1 would never forget a gradient (and divides by zero in the bias
    # correction), a negative one is no average.
    adam_betas: tuple[AdamBeta, AdamBeta] = (0.9, 0.999)
    adam_epsilon: float = Field(1e-8, gt=0, le=1)
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS)
    prior_preservation: bool = True
    prior_preservation_weight: LossWeight = 1.0   # lambda
    # Extra loss weight on the subject's pixels of the instance images (their augment masks),
    # as for pretrain_base: identity lives in a few percent of each picture.
    subject_loss_weight: LossWeight = 0.0
    train_text_encoder: bool = False
    train_identifier_embeddings: bool = True    # MSP's modifier tokens; always on for TI / custom diffusion
    lora_rank: int = Field(4, ge=1, le=1024)
    lora_alpha: float = Field(4.0, gt=0, le=4096)
    gradient_checkpointing: bool = False
    # null: the tokenizer's rare_tokens.json (tiny models)
    rare_tokens: Optional[list[Annotated[str, Field(min_length=1, max_length=64)]]] = Field(None, max_length=10_000)
    validation_every_n_steps: int = Field(100, ge=0, le=MAX_STEPS)   # 0: only at the end
    validation_inference_steps: InferenceSteps = 20
    guidance_scale: GuidanceScale = 3.0

    @model_validator(mode="after")
    def _warmup_within_training(self) -> "FinetuneConfig":
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps: {self.warmup_steps} is more than max_steps ({self.max_steps}): "
                             "the learning rate would never reach finetune.lr")
        return self


def _optional(field) -> object:
    """The field's type with its bounds, or None."""
    kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return Optional[kind]


# A row of the personalization table: the finetune keys it sets differently, each with the
# finetune schema's own type and bounds (the stage checks the row again merged with finetune).
FinetuneOverrides = create_model(
    "FinetuneOverrides", __base__=Section,
    **{name: (_optional(field), None) for name, field in FinetuneConfig.model_fields.items()})


class PersonalizationConfig(TableSection):
    """The personalization table: one fine-tuning per row, generated from one prompt set and
    its seeds, and measured by the same judges (DreamBooth's Table 1 on SynthWorld)."""

    prompt_set: Path = Path("prompts/personalization.yaml")
    inference_steps: InferenceSteps = 20
    guidance_scale: GuidanceScale = 3.0
    batch_size: BatchSize = 16        # images per generation batch (fixed chunks of the set)
    rows: Annotated[dict[str, FinetuneOverrides], TableRows] = Field({}, max_length=256)


class EvaluateBaseConfig(Section):
    """The base model's class prior measured: "a <class> <scene>" judged by the classifier."""

    prompt_set: Path = Path("prompts/base.yaml")
    inference_steps: InferenceSteps = 20
    guidance_scale: GuidanceScale = 3.0
    batch_size: BatchSize = 16
