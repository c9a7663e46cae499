"""StyleGAN2 training (Karras et al. 2020) as a LightningModule with manual optimization.

Each iteration takes a discriminator step, then a generator step:
- the non-saturating logistic loss: D minimises softplus(D(fake)) + softplus(-D(real)),
  G minimises softplus(-D(G(z)));
- R1 (Mescheder et al. 2018): gamma / 2 * E ||grad_x D(x)||^2 on real images, lazily, every
  `r1_every` iterations, weighted by `r1_every` so that its average strength is the same;
- path-length regularisation (optional): a fixed-size step in W moves the image by a fixed
  amount, lazily every `path_length_every` iterations;
- style mixing: a share of the batches draws two z and switches at a random layer, so that
  neighbouring layers do not learn to depend on each other (what makes W+ edits local);
- DiffAugment (optional, `augment`): D sees every image, real or generated, in its step and in
  G's, through the same differentiable random transformations (diffaugment.py), which keeps a
  discriminator from memorising a few hundred real faces;
- noise inputs (optional, `noise_inputs`): off, the per-layer noise strengths stay at zero and
  out of the optimizer. The layers are still there, so the weights keep StyleGAN2's layout. A
  small generator trained for a few thousand iterations learns to draw eyes and mouths as
  noise-driven speckle through them; without them, it has to draw them from the styles;
- `g_ema`, the exponential moving average of G's weights (the generator one samples from),
  with a half-life counted in images and ramped up at the start (StyleGAN2-ADA's).
Lazy regularisation scales Adam's rate and betas by c = every / (every + 1), as the paper does.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F

from lightning_modules.core.losses import check_finite
from lightning_modules.eclipsed.diffaugment import diff_augment
from lightning_modules.eclipsed.discriminator import Discriminator
from lightning_modules.eclipsed.layers import NoiseInjection
from lightning_modules.eclipsed.stylegan import StyleGenerator

ADAM_BETAS = (0.0, 0.99)   # StyleGAN2's


@dataclass(frozen=True)
class GanConfig:
    lr: float = 2e-3
    r1_gamma: float = 10.0
    r1_every: int = 16
    path_length_weight: float = 0.0      # 2 in StyleGAN2 config F; 0 turns it off
    path_length_every: int = 4
    path_length_decay: float = 0.01
    mixing: float = 0.9
    ema_half_life_images: float = 10_000.0
    ema_rampup: float = 0.05             # the half-life is at most this share of the images seen; 0: none
    xflip: bool = True                   # mirror real images at random (faces are left-right symmetric)
    augment: tuple[str, ...] = ()        # DiffAugment policies (diffaugment.POLICIES); (): none
    noise_inputs: bool = True            # False: the noise strengths are held at zero


def requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def noise_strengths(generator: StyleGenerator) -> list[torch.nn.Parameter]:
    """The learned scale of each layer's noise input, one per StyledConv."""
    return [m.weight for m in generator.modules() if isinstance(m, NoiseInjection)]


class StyleGAN2(L.LightningModule):
    def __init__(self, generator: StyleGenerator, discriminator: Discriminator, config: GanConfig = GanConfig()):
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator, self.config = generator, discriminator, config
        frozen = [] if config.noise_inputs else noise_strengths(generator)
        for strength in frozen:
            strength.data.zero_()
            strength.requires_grad_(False)
        # What G's optimizer steps and its step switches gradients on for: once, not per step.
        self.trained_generator_weights = [p for p in generator.parameters() if not any(p is f for f in frozen)]
        self.g_ema = copy.deepcopy(generator).eval()
        requires_grad(self.g_ema, False)
        # In the checkpoint: a resumed run regularises and averages as the uninterrupted one.
        self.register_buffer("iterations", torch.tensor(0, dtype=torch.long))
        self.register_buffer("images_seen", torch.tensor(0, dtype=torch.long))
        self.register_buffer("mean_path_length", torch.tensor(0.0))
        self.save_hyperparameters({"gan": asdict(config), "generator": generator.config,
                                   "discriminator": discriminator.config})

    def judge(self, images: torch.Tensor) -> torch.Tensor:
        """D's logits for images as D always sees them: through the DiffAugment policies."""
        return self.discriminator(diff_augment(images, self.config.augment))

    # --- the losses (benchmarks call these) ---------------------------------------------
    @staticmethod
    def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
        """Non-saturating: -log sigmoid(D(G(z)))."""
        return F.softplus(-fake_logits).mean()

    @staticmethod
    def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Logistic: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))."""
        return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()

    def r1_penalty(self, real_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E ||grad_x D(x)||^2 over the real batch, the real logits), the gradient kept in the
        graph so that the penalty itself can be minimised."""
        real_images = real_images.detach().requires_grad_(True)
        logits = self.judge(real_images)
        grad, = torch.autograd.grad(logits.sum(), real_images, create_graph=True)
        return grad.pow(2).flatten(1).sum(1).mean(), logits

    def path_length_penalty(self, images: torch.Tensor, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E (||J_w^T y|| - a)^2, the batch's mean path length): y a random image-space
        direction scaled by 1 / sqrt(pixels), a the running mean of the path length."""
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        grad, = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grad.pow(2).sum(2).mean(1).sqrt()
        target = self.mean_path_length.lerp(lengths.mean().detach(), self.config.path_length_decay)
        return (lengths - target).pow(2).mean(), target

    # --- sampling -------------------------------------------------------------------------
    def sample_ws(self, batch: int) -> torch.Tensor:
        """ws for a batch of the training distribution: W, or two w switched at a random layer."""
        g = self.generator
        z = torch.randn(batch, g.style_dim, device=self.device)
        ws = g.broadcast(g.mapping(z))
        if self.config.mixing > 0 and torch.rand(()) < self.config.mixing:
            other = g.mapping(torch.randn(batch, g.style_dim, device=self.device))
            crossover = int(torch.randint(1, g.num_ws, ()))
            ws = torch.cat([ws[:, :crossover], other.unsqueeze(1).expand(-1, g.num_ws - crossover, -1)], 1)
        return ws

    # --- training -------------------------------------------------------------------------
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, torch.Tensor]:
        reals = batch[0] if isinstance(batch, (list, tuple)) else batch
        if self.config.xflip:
            flip = torch.rand(reals.shape[0], device=reals.device) < 0.5
            reals = torch.where(flip.view(-1, 1, 1, 1), reals.flip(3), reals)
        g_opt, d_opt = self.optimizers()
        cfg, it, step = self.config, int(self.iterations), self.global_step
        logs: dict[str, torch.Tensor] = {}

        # Discriminator
        requires_grad(self.generator, False)
        requires_grad(self.discriminator, True)
        with torch.no_grad():
            fakes = self.generator.synthesis(self.sample_ws(reals.shape[0]))
        fake_logits = self.judge(fakes)
        if cfg.r1_gamma > 0 and it % cfg.r1_every == 0:
            r1, real_logits = self.r1_penalty(reals)
            d_loss = self.discriminator_loss(real_logits, fake_logits)
            logs["train/r1"] = r1.detach()
            d_total = d_loss + cfg.r1_gamma / 2 * r1 * cfg.r1_every
        else:
            real_logits = self.judge(reals)
            d_total = d_loss = self.discriminator_loss(real_logits, fake_logits)
        d_opt.zero_grad(set_to_none=True)
        self.manual_backward(check_finite(d_total, "the discriminator loss", step))
        d_opt.step()

        # Generator
        for p in self.trained_generator_weights:
            p.requires_grad_(True)
        requires_grad(self.discriminator, False)
        ws = self.sample_ws(reals.shape[0])
        regularise = cfg.path_length_weight > 0 and it % cfg.path_length_every == 0
        if regularise:
            ws = ws.detach().requires_grad_(True)
        fakes = self.generator.synthesis(ws)
        g_loss = g_total = self.generator_loss(self.judge(fakes))
        if regularise:
            penalty, mean_length = self.path_length_penalty(fakes, ws)
            self.mean_path_length.copy_(mean_length)
            logs["train/path_length"] = mean_length
            g_total = g_loss + cfg.path_length_weight * cfg.path_length_every * penalty
        g_opt.zero_grad(set_to_none=True)
        self.manual_backward(check_finite(g_total, "the generator loss", step))
        g_opt.step()
        requires_grad(self.discriminator, True)

        self.iterations += 1
        self.images_seen += reals.shape[0] * self.trainer.world_size
        self.update_ema(reals.shape[0] * self.trainer.world_size)

        self.log("train/loss", d_loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, on_step=True)
        self.log("train/real_score", real_logits.detach().mean(), on_step=True)
        self.log("train/fake_score", fake_logits.detach().mean(), on_step=True)
        for name, value in logs.items():
            self.log(name, value, on_step=True)
        return {"loss": d_loss.detach()}

    @torch.no_grad()
    def update_ema(self, batch_images: int) -> None:
        half_life = self.config.ema_half_life_images
        if self.config.ema_rampup > 0:
            half_life = min(half_life, float(self.images_seen) * self.config.ema_rampup)
        beta = 0.5 ** (batch_images / max(half_life, 1e-8))
        for ema, live in zip(self.g_ema.parameters(), self.generator.parameters()):
            ema.lerp_(live.detach(), 1.0 - beta)
        for ema, live in zip(self.g_ema.buffers(), self.generator.buffers()):
            ema.copy_(live)

    def configure_optimizers(self):
        cfg = self.config

        def adam(params, every: Optional[int]):
            c = every / (every + 1) if every else 1.0
            return torch.optim.Adam(params, lr=cfg.lr * c, betas=(ADAM_BETAS[0] ** c, ADAM_BETAS[1] ** c))

        g_every = cfg.path_length_every if cfg.path_length_weight > 0 else None
        d_every = cfg.r1_every if cfg.r1_gamma > 0 else None
        return [adam(self.trained_generator_weights, g_every), adam(self.discriminator.parameters(), d_every)]


@torch.no_grad()
def sample_images(generator: StyleGenerator, count: int, seed: int, batch_size: int = 64,
                  truncation: float = 1.0) -> torch.Tensor:
    """`count` images in [-1, 1] from seeded z and noise: the same images every call (a curve's
    points differ by the weights alone). The caller's random state is left as it was."""
    device = generator.latent_avg.device
    was_training = generator.training
    generator.eval()
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = torch.randn(count, generator.style_dim).to(device)
        for start in range(0, count, batch_size):
            out.append(generator(z[start:start + batch_size], truncation=truncation).clamp(-1, 1).cpu())
    generator.train(was_training)
    return torch.cat(out)
