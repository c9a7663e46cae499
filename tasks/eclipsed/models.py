"""The frozen models eCLIPsed's training and measures read, loaded from the paths in params: the
face part segmenter (eclipsed.segmenter), the face attribute judge (eclipsed.attribute_classifier)
and the pipeline's CLIP (pretrain_clip's record); and the row's part and prompt. The generator and
the learned directions are in learned.py (what an editing page needs, without the rest)."""

from __future__ import annotations

from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

from lightning_modules.eclipsed.clip import ClipEmbedder
from lightning_modules.eclipsed.directions import PartMask
from lightning_modules.eclipsed.parts import choose_part, extend_prompt
from lightning_modules.judges.faces import FaceAttributeClassifier
from lightning_modules.segmentation import ResNet34UNet
from tasks.core.errors import ParamsError
from tasks.core.models import clip_model_path
from tasks.core.params import Params
from tasks.core.schema.eclipsed import EclipsedDirections
from tasks.eclipsed.learned import model_dir

AUTO = "auto"


def load_segmenter(params: Params) -> ResNet34UNet:
    path = model_dir(params.eclipsed.segmenter, "segmenter", "train_face_parts")
    return ResNet34UNet.from_pretrained(path).eval().requires_grad_(False)


def load_classifier(params: Params) -> FaceAttributeClassifier:
    path = model_dir(params.eclipsed.attribute_classifier, "attribute_classifier", "train_face_attributes")
    return FaceAttributeClassifier.from_pretrained(path).eval().requires_grad_(False)


def load_clip(params: Params) -> ClipEmbedder:
    path = clip_model_path(params)
    clip = CLIPModel.from_pretrained(path)
    tokenizer, processor = AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)
    return ClipEmbedder.from_processor(clip, tokenizer, processor)


def segmenter_side(segmenter: ResNet34UNet, image_size: int) -> int:
    """The side the segmenter reads: the one it was trained at, else the image's (a multiple of 32)."""
    return segmenter.image_size or max(32, image_size // 32 * 32)


def part_mask(segmenter: ResNet34UNet, part: str, image_size: int) -> PartMask:
    return PartMask(segmenter, segmenter.class_names.index(part), segmenter_side(segmenter, image_size))


def resolve_part(row: EclipsedDirections, row_key: str, part_names: list[str], clip: ClipEmbedder) -> str:
    """The row's part: named (it must be one of the segmenter's), or chosen from the prompt."""
    if row.part != AUTO and row.part not in part_names:
        raise ParamsError(f"{row_key}.part: {row.part!r} is not a part the segmenter knows "
                          f"(known: {', '.join([AUTO, *part_names])})")
    return choose_part(row.prompt, part_names, clip.texts, None if row.part == AUTO else row.part)


def training_prompt(row: EclipsedDirections, part: str) -> str:
    """The prompt the CLIP loss reads: as written, or the paper's extension of it."""
    return extend_prompt(row.prompt, part) if row.prompt_extension == "emphasis" else row.prompt
