"""SynthWorld's exact judges, trained on real renders only: a classifier of class and scene whose
verdicts on generated images give prompt accuracy (lightning_modules.core.metrics.PromptAccuracy),
and a face classifier of attributes and identity that judges edited faces (eCLIPsed; imported from
lightning_modules.judges.faces, so that the class judge's users do not depend on the faces reader)."""

from lightning_modules.judges.data import NO_SCENE, JudgedImage, JudgedImageDataModule, JudgedImageDataset
from lightning_modules.judges.module import ClassSceneJudge, evaluate_judge, light_augmentation
from lightning_modules.judges.network import ClassSceneClassifier, resize_to, vgg_blocks

__all__ = ["NO_SCENE", "ClassSceneClassifier", "ClassSceneJudge", "JudgedImage", "JudgedImageDataModule",
           "JudgedImageDataset", "evaluate_judge", "light_augmentation", "resize_to", "vgg_blocks"]
