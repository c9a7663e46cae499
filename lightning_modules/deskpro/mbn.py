"""The Multi-Branch Network head of LightMBN (Herzog et al. 2021), as DeSKPro uses it.

F (the truncated OSNet's feature map) feeds three branches, each with its own copy of the
OSNet tail: a global branch (average-pooled, plus a batch-drop-block copy max-pooled), a part
branch (max-pooled whole plus two horizontal stripes) and a channel branch (the pooled vector
split into two channel groups that share one reduction). Every pooled vector goes through a
BNNeck: a 1x1 reduction to the embedding size, a batch-norm neck and an identity classifier.
The logits form the set I of the paper, the pre-neck features of the two global vectors and
the part branch's whole vector form R (the triplet set), and the post-neck embeddings are
concatenated for retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lightning_modules.deskpro.backbone import tail_copies

BRANCH_VECTORS = ("global", "global_drop", "part", "part_top", "part_bottom", "channel_0", "channel_1")
TRIPLET_VECTORS = ("global", "global_drop", "part")


@dataclass
class MBNOutput:
    logits: list[torch.Tensor]             # I: one (B, classes) per branch vector
    triplet_features: list[torch.Tensor]   # R: pre-neck features used by the triplet loss
    embedding: torch.Tensor                # (B, 7 * dim): post-neck vectors, concatenated


class BNNeck(nn.Module):
    def __init__(self, in_channels: int, dim: int, num_classes: int):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU())
        self.neck = nn.BatchNorm1d(dim)
        # BNNeck (Luo et al.): no shift, so the neck only rescales what the triplet loss shaped.
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feature = self.reduce(pooled).flatten(1)
        embedding = self.neck(feature)
        return feature, embedding, self.classifier(embedding)


class BatchDropBlock(nn.Module):
    """Zero one random horizontal band of every feature map in the batch (training only):
    the branch must then identify people from the rest of the body."""

    def __init__(self, height_ratio: float = 0.33):
        super().__init__()
        self.height_ratio = height_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        height = x.shape[2]
        band = max(1, round(height * self.height_ratio))
        start = int(torch.randint(0, height - band + 1, (1,)))
        mask = torch.ones_like(x[:1, :1])
        mask[:, :, start:start + band] = 0
        return x * mask


class MultiBranchNetwork(nn.Module):
    def __init__(self, tail: nn.Sequential, tail_channels: int, num_classes: int, dim: int):
        super().__init__()
        self.global_tail, self.part_tail, self.channel_tail = tail_copies(tail, 3)
        self.drop = BatchDropBlock()
        half = tail_channels // 2
        self.heads = nn.ModuleDict({name: BNNeck(tail_channels, dim, num_classes)
                                    for name in BRANCH_VECTORS if not name.startswith("channel")})
        # One reduction shared by both channel groups, a neck and classifier per group.
        self.channel_reduce = nn.Sequential(nn.Conv2d(half, tail_channels, 1, bias=False),
                                            nn.BatchNorm2d(tail_channels), nn.ReLU())
        for name in ("channel_0", "channel_1"):
            self.heads[name] = BNNeck(tail_channels, dim, num_classes)

    def forward(self, feature_map: torch.Tensor) -> MBNOutput:
        glo = self.global_tail(feature_map)
        par = self.part_tail(feature_map)
        cha = self.channel_tail(feature_map)
        stripes = nn.functional.adaptive_avg_pool2d(par, (2, 1))
        channel = nn.functional.adaptive_avg_pool2d(cha, 1)
        half = channel.shape[1] // 2
        pooled = {
            "global": nn.functional.adaptive_avg_pool2d(glo, 1),
            "global_drop": nn.functional.adaptive_max_pool2d(self.drop(glo), 1),
            "part": nn.functional.adaptive_max_pool2d(par, 1),
            "part_top": stripes[:, :, :1],
            "part_bottom": stripes[:, :, 1:],
            "channel_0": self.channel_reduce(channel[:, :half]),
            "channel_1": self.channel_reduce(channel[:, half:2 * half]),
        }
        features, embeddings, logits = {}, [], []
        for name in BRANCH_VECTORS:
            features[name], embedding, logit = self.heads[name](pooled[name])
            embeddings.append(embedding)
            logits.append(logit)
        return MBNOutput(logits, [features[name] for name in TRIPLET_VECTORS], torch.cat(embeddings, dim=1))
