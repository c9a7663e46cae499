"""Retrieval with a DeSKPro model: embed query and gallery, two-stream distance, CMC / mAP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import torch

from lightning_modules.core.metrics.rank import cmc_map_report, evaluate_rank
from lightning_modules.deskpro.deskpro import DeSKProNet, two_stream_distance


@dataclass
class Embeddings:
    global_embedding: Optional[torch.Tensor]
    face_embedding: Optional[torch.Tensor]
    has_face: torch.Tensor
    pids: np.ndarray
    camids: np.ndarray

    def as_tuple(self):
        return self.global_embedding, self.face_embedding, self.has_face


@torch.no_grad()
def extract(net: DeSKProNet, batches: Iterable[dict[str, torch.Tensor]], device: torch.device | str = "cpu"
            ) -> Embeddings:
    """Embeddings of every image the loader yields (its order is kept)."""
    was_training = net.training
    net = net.to(device).eval()
    # The teacher (DeSKPro*) sees restored faces; a student sees the LR crop as it is.
    face_key = "restored_face" if net.needs_restorer else "face"
    globals_, faces, has, pids, camids = [], [], [], [], []
    for batch in batches:
        has_face = batch["has_face"].to(device)
        g, f = net.embed(batch["image"].to(device), batch[face_key].to(device), has_face)
        globals_.append(g.cpu() if g is not None else None)
        faces.append(f.cpu() if f is not None else None)
        has.append(has_face.cpu())
        pids.append(batch["pid"].numpy())
        camids.append(batch["camid"].numpy())
    net.train(was_training)

    def cat(parts):
        return None if parts[0] is None else torch.cat(parts)

    return Embeddings(cat(globals_), cat(faces), torch.cat(has), np.concatenate(pids), np.concatenate(camids))


def distance_matrix(query: Embeddings, gallery: Embeddings) -> torch.Tensor:
    return two_stream_distance(query.as_tuple(), gallery.as_tuple())


def evaluate(query: Embeddings, gallery: Embeddings, max_rank: int = 50) -> tuple[dict, np.ndarray]:
    """(report with rank1/5/10 and mAP, distance matrix) for one protocol."""
    distmat = distance_matrix(query, gallery).numpy()
    cmc, mean_ap = evaluate_rank(distmat, query.pids, gallery.pids, query.camids, gallery.camids,
                                 max_rank=max_rank)
    report = cmc_map_report(cmc, mean_ap)
    report["queries_with_face"] = round(float(query.has_face.float().mean()), 4)
    return report, distmat
