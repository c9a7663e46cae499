"""DeSKPro at inference: a global stream and/or a face stream, and the two-stream distance.

Neither the human parser nor (for DeSKPro proper) the face restorer and teacher are part of
it: they only shape training. DeSKPro* keeps the teacher as its face stream and so needs the
restorer at inference too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.deskpro.streams import ReidStream

FaceStreamKind = Literal["none", "student", "teacher"]
CONFIG_FILE = "deskpro.json"


class DeSKProNet(nn.Module):
    def __init__(self, global_stream: Optional[ReidStream], face_stream: Optional[ReidStream],
                 face_kind: FaceStreamKind, image_size: tuple[int, int], face_size: int):
        super().__init__()
        self.global_stream = global_stream
        self.face_stream = face_stream
        self.face_kind = face_kind if face_stream is not None else "none"
        self.image_size = tuple(image_size)
        self.face_size = face_size

    @property
    def needs_restorer(self) -> bool:
        return self.face_kind == "teacher"

    @torch.no_grad()
    def embed(self, images: torch.Tensor, faces: torch.Tensor, has_face: torch.Tensor
              ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """L2-normalised (global, face) embeddings; face rows of images without a face are 0."""
        global_embedding = face_embedding = None
        if self.global_stream is not None:
            global_embedding = F.normalize(self.global_stream(images).mbn.embedding.float(), dim=1)
        if self.face_stream is not None:
            face_embedding = torch.zeros(images.shape[0], self.face_stream.embedding_size, device=images.device)
            if has_face.any():
                out = self.face_stream(faces[has_face]).mbn.embedding.float()
                face_embedding[has_face] = F.normalize(out, dim=1)
        return global_embedding, face_embedding

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"global_stream": self.global_stream is not None, "face_kind": self.face_kind,
                  "image_size": list(self.image_size), "face_size": self.face_size}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if self.global_stream is not None:
            self.global_stream.save_pretrained(directory / "global")
        if self.face_stream is not None:
            self.face_stream.save_pretrained(directory / "face")

    @classmethod
    def from_pretrained(cls, directory: Path) -> "DeSKProNet":
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory / CONFIG_FILE}: missing (not a saved DeSKPro model)")
        config = json.loads((directory / CONFIG_FILE).read_text())
        global_stream = ReidStream.from_pretrained(directory / "global") if config["global_stream"] else None
        face = ReidStream.from_pretrained(directory / "face") if config["face_kind"] != "none" else None
        return cls(global_stream, face, config["face_kind"], tuple(config["image_size"]), config["face_size"])


def cosine_distance(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    return 1.0 - query @ gallery.T


def two_stream_distance(query: tuple[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor],
                        gallery: tuple[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Cosine distance on the concatenated, per-stream normalised embeddings.

    Each argument is (global, face, has_face). With both streams the similarity of a pair is
    the mean of the two cosines; a pair where either image shows no face uses the global
    stream alone (the paper: "for query images with no face detected, we only enable the
    global stream"). A face-only model has no evidence for such pairs: distance 1.
    """
    q_global, q_face, q_has = query
    g_global, g_face, g_has = gallery
    both = q_has[:, None] & g_has[None, :]
    if q_face is None:
        return cosine_distance(q_global, g_global)
    face = cosine_distance(q_face, g_face)
    if q_global is None:
        return torch.where(both, face, torch.ones_like(face))
    body = cosine_distance(q_global, g_global)
    return torch.where(both, (body + face) / 2, body)

