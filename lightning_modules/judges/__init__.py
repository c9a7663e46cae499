"""SynthWorld's exact judges: a classifier of class and scene trained on real renders only, whose
verdicts on generated images give prompt accuracy (lightning_modules.core.metrics.PromptAccuracy)."""

from lightning_modules.judges.data import NO_SCENE, JudgedImage, JudgedImageDataModule, JudgedImageDataset
from lightning_modules.judges.module import ClassSceneJudge, evaluate_judge, light_augmentation
from lightning_modules.judges.network import ClassSceneClassifier, resize_to

__all__ = ["NO_SCENE", "ClassSceneClassifier", "ClassSceneJudge", "JudgedImage", "JudgedImageDataModule",
           "JudgedImageDataset", "evaluate_judge", "light_augmentation", "resize_to"]
