"""The Fréchet distance between two sets of image features (FID; Heusel et al. 2017), as a
torchmetrics `Metric` over any feature extractor.

FID fits a Gaussian to each set's features and measures
    ||mu_r - mu_g||^2 + tr(S_r) + tr(S_g) - 2 tr((S_r S_g)^(1/2)).
The usual extractor is Inception-v3, trained on ImageNet photographs; on a procedural world
the judge trained on that world's real images is the meaningful space (its features separate
exactly what the world varies), so the extractor is a parameter, not a fixed network.

The states are sums (of features, of their outer products, of counts) reduced with "sum":
the statistics of the union of what every rank saw. Sums are kept in float64: a covariance
from sums of squares cancels badly in float32.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torchmetrics import Metric

SUM_DTYPE = torch.float64


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], covariance [D, D], unbiased) of N x D features."""
    features = features.to(SUM_DTYPE)
    mean = features.mean(0)
    centred = features - mean
    return mean, centred.t() @ centred / max(features.shape[0] - 1, 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.t()) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.t()


def frechet_distance(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """The closed form between two Gaussians. tr((S1 S2)^(1/2)) is taken as the trace of
    (S1^(1/2) S2 S1^(1/2))^(1/2), which is symmetric PSD, so eigh is exact where sqrtm of a
    non-symmetric product is not (and needs no scipy)."""
    root1 = _psd_sqrt(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp(min=0).sqrt().sum()
    return (mean1 - mean2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross


class FrechetDistance(Metric):
    """FID between "real" and "generated" images in the space of `feature_fn`.

    `update(x, real)` takes images (passed through `feature_fn`, without gradients) or, with
    no `feature_fn`, N x D features. `reset_real_features=False` keeps the real statistics
    across `reset()`: a reference set measured once, generated sets measured many times.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_features: int, feature_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 reset_real_features: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.feature_fn = feature_fn
        self.reset_real_features = reset_real_features
        self.num_features = num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(num_features, dtype=SUM_DTYPE), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(num_features, num_features, dtype=SUM_DTYPE),
                           dist_reduce_fx="sum")
            self.add_state(f"{side}_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, real: bool) -> None:
        if self.feature_fn is not None:
            with torch.no_grad():
                x = self.feature_fn(x)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected N x {self.num_features} features, got shape {tuple(x.shape)}")
        x = x.detach().to(SUM_DTYPE)
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + x.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + x.t() @ x)
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + x.shape[0])

    def _statistics(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        n = int(getattr(self, f"{side}_count"))
        if n < 2:
            raise ValueError(f"FID needs at least 2 {side} samples, got {n}")
        total = getattr(self, f"{side}_sum")
        mean = total / n
        cov = (getattr(self, f"{side}_outer") - n * torch.outer(mean, mean)) / (n - 1)
        return mean, cov

    def compute(self) -> torch.Tensor:
        return frechet_distance(*self._statistics("real"), *self._statistics("fake"))

    def reset(self) -> None:
        if self.reset_real_features:
            super().reset()
            return
        kept = {name: getattr(self, name).clone() for name in ("real_sum", "real_outer", "real_count")}
        super().reset()
        for name, value in kept.items():
            setattr(self, name, value)
