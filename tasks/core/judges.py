"""The judges every generating method measures with, loaded once per stage: the subject
segmenter (train_segmenter), the class / scene classifier (train_classifier), and the CLIP and
DINO of the zoo (pretrained by pretrain_clip / pretrain_dino, or real ones by path). They were
trained on real renders only, never on generated images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, CLIPModel
from transformers.utils import logging as hf_logging

from lightning_modules.judges import ClassSceneClassifier
from lightning_modules.segmentation import ResNet34UNet
from tasks.core.errors import InputDataError
from tasks.core.models import clip_model_path, dino_model_path
from tasks.core.params import Params

BATCH = 64
# Evaluation runs on rank zero over the images every rank drew (gathered by the generation):
# its metrics must not wait for the other ranks, which have finished.
LOCAL = {"sync_on_compute": False}


@dataclass
class Judges:
    clip: CLIPModel
    clip_processor: Any
    clip_tokenizer: Any
    dino: Any
    dino_processor: Any
    segmenter: ResNet34UNet
    segmenter_size: int
    classifier: ClassSceneClassifier


def _model_dir(path: Path, stage: str) -> Path:
    if not (path / "config.json").is_file():
        raise InputDataError(f"{path}: no model; run the {stage} stage first (dvc repro {stage})")
    return path


def load_segmenter(params: Params) -> tuple[ResNet34UNet, int]:
    """The subject segmenter and the side it reads images at."""
    segmenter = ResNet34UNet.from_pretrained(_model_dir(params.paths.data / "models" / "segmenter",
                                                        "train_segmenter")).eval()
    return segmenter, segmenter.image_size or max(32, params.augment.canvas_size // 32 * 32)


def load_judges(params: Params) -> Judges:
    models = params.paths.data / "models"
    clip_path, dino_path = clip_model_path(params), dino_model_path(params)
    segmenter, segmenter_size = load_segmenter(params)
    classifier = ClassSceneClassifier.from_pretrained(_model_dir(models / "classifier", "train_classifier")).eval()
    dino = load_dino(dino_path)
    return Judges(CLIPModel.from_pretrained(clip_path).eval(), AutoImageProcessor.from_pretrained(clip_path),
                  AutoTokenizer.from_pretrained(clip_path), dino,
                  AutoImageProcessor.from_pretrained(dino_path), segmenter, segmenter_size, classifier)


def load_dino(path: Path):
    """The DINO metric reads the [CLS] token of the last layer; a ViT built with a pooler that
    its checkpoint lacks (DINO's have none) gets a fresh one, which transformers reports as
    missing weights at length. That pooler is never used, so the report is silenced."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModel.from_pretrained(path).eval()
    finally:
        hf_logging.set_verbosity(previous)


def as_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x size x size in [0, 1] (what the judges read)."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False) \
        if pixels.shape[-1] != size else pixels
