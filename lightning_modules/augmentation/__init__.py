"""MSP appendix A.1 augmentation and VideoDreamer's Disen-Mix mixed images."""

from lightning_modules.augmentation.disen_mix import MixedImage, mix_combinations, mix_subject_images
from lightning_modules.augmentation.subject_augment import (AugmentParams, PlaceSubject, SubjectAugmenter, composite,
                                                            tight_crop)

__all__ = ["AugmentParams", "MixedImage", "PlaceSubject", "SubjectAugmenter", "composite", "mix_combinations",
           "mix_subject_images", "tight_crop"]
