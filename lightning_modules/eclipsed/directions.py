"""eCLIPsed's direction learning: LELSD's latent directions with a CLIP loss (the paper, sec. 3).

K directions in W (one vector, the same on every chosen layer) or W+ (a vector per chosen
layer), kept at unit norm as LELSD keeps them (per layer in W+). Each training step draws style
codes from latent seeds, moves each image along one of the K directions (drawn at random, LELSD's
near-one-hot mixing) by an alpha drawn from `alpha_range` (redrawn while |alpha| < `alpha_min`:
tiny moves change nothing and make the loss noisy), and minimises

    L = L_CLIP + localization_weight * L_loc + decorrelation_weight * L_corr
    L_CLIP = 1 - cos(E_T(prompt), E_I(G(w + alpha d)))                     (clip_loss "global")

or, with clip_loss "directional" (StyleGAN-NADA's directional CLIP loss, Gal et al. 2021; not
in the paper), the change of the image along the change of the text from a neutral prompt:

    L_CLIP = 1 - cos(E_I(G(w + alpha d)) - E_I(G(w)), E_T(prompt) - E_T(neutral))

The global loss pulls the edit towards everything CLIP ties to the prompt (for "curly hair":
longer, warmer-coloured hair too); the directional one rewards only what the two texts differ in.

with L_loc LELSD's localization loss on the generator's feature maps of `localization_layers`
(the part's mask from the segmenter on the original and on the edit) and L_corr LELSD's
decorrelation of the K directions (localization.py). The generator, CLIP and the segmenter are
frozen and kept out of the checkpoints: only the directions train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.core.losses import check_finite
from lightning_modules.eclipsed.clip import ClipEmbedder
from lightning_modules.eclipsed.editing import latent_size, seeded_latents, style_codes
from lightning_modules.eclipsed.localization import combined_mask, correlation_penalty, localization_loss

TERMS = ("clip", "localization", "decorrelation")
MaskFunction = Callable[[torch.Tensor], torch.Tensor]   # images in [-1, 1] -> B x 1 x H x W part mask


@dataclass(frozen=True)
class DirectionSettings:
    num_directions: int = 1
    latent_space: str = "w+"                 # "w" | "w+"
    layers: tuple[int, ...] = (3, 4)         # style indices the directions move
    localization_layers: tuple[int, ...] = ()   # feature maps the localization score reads (() = layers)
    alpha_range: tuple[float, float] = (0.5, 4.0)
    alpha_min: float = 0.5
    localization_weight: float = 0.05
    decorrelation_weight: float = 1.0
    clip_loss: str = "global"                # "global" | "directional"
    lr: float = 1e-2
    lr_halvings: int = 4                     # LELSD halves the rate this many times over the run
    steps: int = 100
    truncation: float = 0.7
    init_seed: int = 0                       # the directions' random start

    @property
    def scored_layers(self) -> tuple[int, ...]:
        return self.localization_layers or self.layers


class PartMask(nn.Module):
    """The part's mask from a segmenter (a ResNet34UNet, frozen): images in [-1, 1] are resized
    to the side it reads, its arg-max compared with the part's class, the mask resized back."""

    def __init__(self, segmenter: nn.Module, part_index: int, side: int):
        super().__init__()
        self.segmenter = segmenter.eval().requires_grad_(False)
        self.part_index, self.side = part_index, side

    def train(self, mode: bool = True) -> "PartMask":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.clamp(-1, 1) + 1) / 2
        size = images.shape[-2:]
        if size != (self.side, self.side):
            pixels = F.interpolate(pixels, size=(self.side, self.side), mode="bilinear", align_corners=False)
        mask = (self.segmenter(pixels).argmax(1, keepdim=True) == self.part_index).float()
        return F.interpolate(mask, size=size, mode="nearest") if mask.shape[-2:] != size else mask


def unit_directions(raw: torch.Tensor) -> torch.Tensor:
    """Unit norm along the last axis (per direction in W, per direction and layer in W+)."""
    return F.normalize(raw, dim=-1)


class LatentDirections(L.LightningModule):
    """Learns K latent directions of a frozen style-based generator for one prompt.

    A batch is a LongTensor of latent seeds (one image each): random seeds, or one seed repeated
    for the paper's single-seed training."""

    def __init__(self, generator: nn.Module, clip: ClipEmbedder, text_embedding: torch.Tensor,
                 settings: DirectionSettings, part_mask: Optional[MaskFunction] = None,
                 neutral_embedding: Optional[torch.Tensor] = None):
        super().__init__()
        s = settings
        if s.latent_space not in ("w", "w+"):
            raise ValueError(f"latent_space: expected w or w+, got {s.latent_space!r}")
        if s.clip_loss not in ("global", "directional"):
            raise ValueError(f"clip_loss: expected global or directional, got {s.clip_loss!r}")
        if s.clip_loss == "directional" and neutral_embedding is None:
            raise ValueError("the directional CLIP loss needs the neutral prompt's embedding")
        num_ws, w_dim = generator.num_ws, generator.w_dim
        outside = [i for i in (*s.layers, *s.scored_layers) if not 0 <= i < num_ws]
        if outside or not s.layers:
            raise ValueError(f"layers: the generator has style layers 0..{num_ws - 1}, got {list(s.layers)} "
                             f"(localization {list(s.scored_layers)})")
        if s.localization_weight > 0 and part_mask is None:
            raise ValueError("a localization weight needs the part's mask (a segmenter)")
        self.settings = s
        # Frozen helpers live outside the module tree: not in checkpoints, not in the optimizer.
        self._frozen = {"generator": generator.eval().requires_grad_(False), "clip": clip, "part_mask": part_mask}
        self.register_buffer("text_embedding", F.normalize(text_embedding.detach().flatten(), dim=0))
        if s.clip_loss == "directional":
            # unit embeddings first, as CLIP compares them, then their difference
            change = self.text_embedding - F.normalize(neutral_embedding.detach().flatten(), dim=0)
            if change.norm() < 1e-6:
                raise ValueError("the prompt and the neutral prompt embed alike: no text change to follow")
            self.register_buffer("text_change", F.normalize(change, dim=0))
        shape = (s.num_directions, w_dim) if s.latent_space == "w" else (s.num_directions, len(s.layers), w_dim)
        start = torch.randn(shape, generator=torch.Generator().manual_seed(s.init_seed))
        self.directions = nn.Parameter(unit_directions(start))
        self.num_ws, self.w_dim = num_ws, w_dim

    # -- the frozen models ------------------------------------------------------------------
    @property
    def generator(self) -> nn.Module:
        return self._frozen["generator"]

    @property
    def clip(self) -> ClipEmbedder:
        return self._frozen["clip"]

    @property
    def part_mask(self) -> Optional[MaskFunction]:
        return self._frozen["part_mask"]

    def on_fit_start(self) -> None:
        for module in self._frozen.values():
            if isinstance(module, nn.Module):
                module.to(self.device)

    # -- directions ---------------------------------------------------------------------------
    def full_directions(self) -> torch.Tensor:
        """K x num_ws x w_dim: the unit directions placed on their layers, zero elsewhere (in W
        the same vector on every chosen layer)."""
        unit = unit_directions(self.directions)
        full = unit.new_zeros(unit.shape[0], self.num_ws, self.w_dim)
        layers = list(self.settings.layers)
        if self.settings.latent_space == "w":
            full[:, layers] = unit[:, None, :].expand(-1, len(layers), -1)
        else:
            full[:, layers] = unit
        return full

    def sample_alphas(self, count: int) -> torch.Tensor:
        """Uniform in alpha_range, redrawn where |alpha| < alpha_min (LELSD)."""
        low, high = self.settings.alpha_range
        alphas = torch.empty(count).uniform_(low, high)
        for _ in range(1000):
            small = alphas.abs() < self.settings.alpha_min
            if not small.any():
                break
            alphas[small] = torch.empty(int(small.sum())).uniform_(low, high)
        else:
            raise ValueError(f"alpha_range {list(self.settings.alpha_range)} leaves no |alpha| >= alpha_min")
        return alphas.to(self.device)

    def style_codes(self, seeds: torch.Tensor) -> torch.Tensor:
        z = seeded_latents(seeds.tolist(), latent_size(self.generator), self.device)
        return style_codes(self.generator, z, self.settings.truncation)

    # -- the loss -----------------------------------------------------------------------------
    def loss_terms(self, seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss and its terms for a batch of latent seeds: clip, localization (LELSD's loss,
        -1 best), decorrelation, and the localization score (minus the loss, for the logs)."""
        s = self.settings
        ws = self.style_codes(seeds)
        count = ws.shape[0]
        which = torch.randint(s.num_directions, (count,)).to(self.device)
        alphas = self.sample_alphas(count)
        moved = ws + alphas[:, None, None] * self.full_directions()[which]
        scored = list(s.scored_layers)
        localize = s.localization_weight > 0
        directional = s.clip_loss == "directional"
        edited, edited_features = self.generator.synthesis(moved, noise="const", return_features=True)
        if localize or directional:
            with torch.no_grad():
                original, original_features = self.generator.synthesis(ws, noise="const", return_features=True)
        embeddings = self.clip.images(edited)
        if directional:
            with torch.no_grad():
                original_embeddings = self.clip.images(original)
            clip_loss = (1 - F.normalize(embeddings - original_embeddings, dim=-1) @ self.text_change).mean()
        else:
            clip_loss = (1 - embeddings @ self.text_embedding).mean()
        zero = clip_loss.new_zeros(())
        local = zero
        if localize:
            with torch.no_grad():
                # one segmenter pass over both: the masks of the original and of the edit
                before, after = self.part_mask(torch.cat([original, edited.detach()])).chunk(2)
                mask = combined_mask(before, after)
            local = localization_loss([original_features[i] for i in scored], [edited_features[i] for i in scored],
                                      mask)
        decorrelation = correlation_penalty(self.directions) if s.num_directions > 1 else zero
        loss = clip_loss + s.localization_weight * local + s.decorrelation_weight * decorrelation
        return {"loss": loss, "clip": clip_loss, "localization": local, "decorrelation": decorrelation,
                "localization_score": -local.detach()}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        terms = self.loss_terms(batch)
        check_finite(terms["loss"], "the eCLIPsed loss", self.global_step)
        size = batch.shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        for name in TERMS:
            self.log(f"train/{name}", terms[name], on_step=True, on_epoch=False, batch_size=size)
        return terms["loss"]

    def configure_optimizers(self):
        optimizer = torch.optim.Adam([self.directions], lr=self.settings.lr)
        # LELSD: the rate halves `lr_halvings` times, at equal intervals of the run
        interval = max(1, self.settings.steps // (self.settings.lr_halvings + 1))
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=interval, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        with torch.no_grad():   # LELSD: back to unit norm after every step
            self.directions.copy_(unit_directions(self.directions))


class TermsHistory(L.Callback):
    """The loss terms every n steps (the CLIP loss curve of the metrics); kept in checkpoints, so
    a resumed run's curve is the whole run's."""

    def __init__(self, every_n_steps: int = 10):
        self.every_n_steps = every_n_steps
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps and step != 1 and step != trainer.max_steps:
            return
        metrics = trainer.callback_metrics
        row = {"step": step, **{name: round(float(metrics[f"train/{name}"]), 6) for name in TERMS
                                if f"train/{name}" in metrics}}
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
