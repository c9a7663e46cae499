"""DeSKPro (Wu et al.): cloth-changing person re-ID with a cloth-irrelevant spatial attention
supervised by parsing maps and a face teacher/student pair."""

from lightning_modules.deskpro.data import (
    PersonDataset,
    PersonRecord,
    clean_face_restorer,
    identity_restorer,
    module_restorer,
)
from lightning_modules.deskpro.deskpro import DeSKProNet, two_stream_distance
from lightning_modules.deskpro.modules import DeSKProModule, DeSKProWeights, FaceTeacherModule, Optimization
from lightning_modules.deskpro.sampler import IdentityBatchSampler
from lightning_modules.deskpro.streams import ReidStream

__all__ = ["DeSKProModule", "DeSKProNet", "DeSKProWeights", "FaceTeacherModule", "IdentityBatchSampler",
           "Optimization", "PersonDataset", "PersonRecord", "ReidStream", "clean_face_restorer",
           "identity_restorer", "module_restorer", "two_stream_distance"]
