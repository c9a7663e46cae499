"""The MSP sampler: Composite Diffusion from a segment layout, a global diffuser, and
subject-aware segmentation-loss guidance (MSP 2(ii)-(iv), A.4).

One image is drawn in two stages over a scheduler's timesteps (DDIM by default; any scheduler
whose `step` is stateless and returns `pred_original_sample` can replace it):

    scaffolding   the first k = round(scaffolding_fraction x steps) steps. Each segment j has
                  its own latent track, denoised under its own prompt; after every step the
                  tracks are composited by the segment masks, x = sum_j m_j x^j, and every
                  track takes the composite back inside its segment. Outside its segment a track
                  keeps its own content (the segments develop independently) or, given a
                  scaffolding image, the scaffolding image's latent noised to the current step.
    harmonization the remaining steps: one latent, whose noise prediction is the per-segment
                  predictions mixed under their masks, eps = sum_j m_j eps_j, so each segment
                  develops in the context of the others. For the first `global_steps` of them
                  the global diffuser's prediction (the whole latent under the global prompt)
                  is blended in with weight `global_weight`.

Classifier-free guidance is applied to every prediction (the paper: scale 7.5). All the UNet
evaluations of one step (each segment's prompt, the global prompt, the unconditional one) go
through the UNet as one batch.

SAL (A.4), on the steps in `sal_range`: from the guided prediction eps, x0-hat =
(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) is decoded; for each subject segment j the image
masked to the segment goes through the subject segmenter, whose pixel entropy, normalised by
log C and averaged over the pixels, is the loss L_j. Its gradient with respect to x_t moves the
prediction in the classifier-guidance form eps-hat = eps - sqrt(1 - abar_t) g, with g =
-sal_scale x grad L (the loss is a negative log-likelihood). eps is held fixed in the gradient:
it costs a VAE decode and a segmenter pass, not a backward pass through the UNet.

ControlNet (MSP 3, "with ControlNet"): given a ControlNet and a pose image, every UNet call of a
step (each segment, the global and the unconditional prompt, as diffusers' pipelines do without
guess mode) takes ControlNet's residuals for the whole picture's pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from lightning_modules.diffusion.data import tokenize
from lightning_modules.msp.controlnet import control_residuals


@dataclass(frozen=True)
class MSPSettings:
    steps: int = 20
    guidance_scale: float = 7.5
    scaffolding_fraction: float = 0.3     # k / steps
    global_diffuser: bool = True
    global_steps: int = 2                 # harmonization steps that blend in the global prompt
    global_weight: float = 0.5
    sal: bool = False
    sal_scale: float = 1.0
    sal_range: tuple[float, float] = (0.0, 0.5)   # the fraction of the steps SAL guides

    @property
    def scaffolding_steps(self) -> int:
        return min(self.steps, round(self.scaffolding_fraction * self.steps))

    def sal_active(self, i: int) -> bool:
        start, end = self.sal_range
        return self.sal and start * self.steps <= i < end * self.steps


def latent_masks(masks: torch.Tensor, latent_size: int) -> torch.Tensor:
    """S x H x W pixel masks -> S x 1 x h x w soft masks (the area share of each latent cell)
    that sum to one at every latent position."""
    soft = F.adaptive_avg_pool2d(masks.float().unsqueeze(1), latent_size)
    return soft / soft.sum(0, keepdim=True).clamp_min(1e-8)


def composite_noise(predictions: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Harmonization's mixed prediction: S x B x C x h x w predictions, S x 1 x h x w masks."""
    return (predictions * masks.unsqueeze(1)).sum(0)


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy of the class distribution, divided by log C: B x C x H x W -> B x H x W in [0, 1]."""
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1) / math.log(logits.shape[1])


def segment_entropy(segmenter: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor,
                    size: Optional[int] = None) -> torch.Tensor:
    """SAL's loss L_ent(x0 * m_j) for every (image, segment): images B x 3 x H x W in [0, 1],
    masks J x H x W (the subject segments) -> B x J mean normalised entropies."""
    b, j = images.shape[0], masks.shape[0]
    masked = (images.unsqueeze(1) * masks.to(images.dtype)[None, :, None]).flatten(0, 1)
    if size and masked.shape[-1] != size:
        masked = F.interpolate(masked, size=(size, size), mode="bilinear", align_corners=False)
    return normalised_entropy(segmenter(masked)).mean(dim=(1, 2)).view(b, j)


@dataclass
class SampleTrace:
    """What a run of the sampler measured along the way (for tests and diagnostics)."""

    sal_loss: list[float]        # the SAL loss at each guided step (mean over images and segments)


class CompositeSampler:
    """Draws compositions with a text-to-image model's components (diffusers objects)."""

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, settings: MSPSettings,
                 segmenter: Optional[torch.nn.Module] = None, segmenter_size: Optional[int] = None,
                 controlnet: Optional[torch.nn.Module] = None, conditioning_scale: float = 1.0):
        if settings.sal and segmenter is None:
            raise ValueError("SAL needs the subject segmenter")
        if scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type {scheduler.config.prediction_type!r}: the sampler mixes noise or "
                             "velocity predictions (epsilon or v_prediction)")
        self.controlnet, self.conditioning_scale = controlnet, conditioning_scale
        self.condition: Optional[torch.Tensor] = None    # the current drawing's pose image, 1 x 3 x H x W
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        # A training directory holds a DDPM schedule; sampling uses its DDIM twin.
        self.scheduler = DDIMScheduler.from_config(scheduler.config) if _is_ddpm(scheduler) else scheduler
        self.settings, self.segmenter, self.segmenter_size = settings, segmenter, segmenter_size
        self.scale = vae.config.scaling_factor
        self.trace = SampleTrace([])

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = tokenize(self.tokenizer, prompts).to(self.device)
        return self.text_encoder(ids)[0]

    def unet_batch(self, latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """One UNet call (with ControlNet's, when it steers) for every prediction of a step."""
        extra = {}
        if self.condition is not None:
            condition = self.condition.expand(latents.shape[0], -1, -1, -1)
            extra = control_residuals(self.controlnet, latents, t, context, condition, self.conditioning_scale)
        return self.unet(latents, t, encoder_hidden_states=context, **extra).sample

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return (self.vae.decode(latents / self.scale).sample / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images * 2 - 1).latent_dist.mean * self.scale

    def sal_guidance(self, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The prediction moved against the gradient of the segments' entropy loss (module
        docstring). For a v-prediction model `eps` is the velocity v: x0-hat = sqrt(abar) x_t -
        sqrt(1 - abar) v, and the same move of the implied noise is a move of v divided by sqrt(abar)."""
        abar = self.scheduler.alphas_cumprod.to(x.device)[t].to(x.dtype)
        velocity = self.scheduler.config.prediction_type == "v_prediction"
        with torch.enable_grad():
            xt = x.detach().requires_grad_(True)
            if velocity:
                x0 = abar.sqrt() * xt - (1 - abar).sqrt() * eps.detach()
            else:
                x0 = (xt - (1 - abar).sqrt() * eps.detach()) / abar.sqrt()
            loss = segment_entropy(self.segmenter, self.decode(x0), masks, self.segmenter_size)
            (grad,) = torch.autograd.grad(loss.sum(), xt)
        self.trace.sal_loss.append(float(loss.mean()))
        move = self.settings.sal_scale * (1 - abar).sqrt() * grad
        return eps + (move / abar.sqrt() if velocity else move)

    @torch.no_grad()
    def __call__(self, masks: torch.Tensor, prompts: Sequence[str], global_prompt: str,
                 generators: Sequence[torch.Generator], *, scaffolding: Optional[torch.Tensor] = None,
                 subject_segments: Sequence[int] = (), pose: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images (B x 3 x H x W in [0, 1]) of one composition, one per generator.

        masks: S x H x W bool pixel masks (a partition); prompts: the S local prompts;
        scaffolding: 3 x H x W in [0, 1] or None; subject_segments: the segments SAL guides;
        pose: 3 x H x W in [0, 1], ControlNet's condition (needs a ControlNet)."""
        cfg, device = self.settings, self.device
        if masks.shape[0] != len(prompts):
            raise ValueError(f"{masks.shape[0]} segment masks for {len(prompts)} prompts: one prompt per segment")
        if not (masks.sum(0) == 1).all():
            raise ValueError("the segment masks must partition the picture: every pixel in exactly one segment")
        if pose is not None and self.controlnet is None:
            raise ValueError("a pose image needs a ControlNet")
        if pose is None and self.controlnet is not None:
            raise ValueError("this sampler steers with a ControlNet: give it the pose image")
        subject_segments = list(subject_segments)
        dtype = next(self.unet.parameters()).dtype
        s, b = len(prompts), len(generators)
        c, h = self.unet.config.in_channels, self.unet.config.sample_size
        shape = (c, h, h)
        # Each image's noise from its own generator on the CPU: the same picture on any device.
        x = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device, dtype)
        x = x * self.scheduler.init_noise_sigma
        m = latent_masks(masks.to(device), h).to(dtype)                     # S x 1 x h x w
        pixel_masks = masks[subject_segments].to(device) if subject_segments else None
        local = self.embed(list(prompts)).to(dtype)                        # S x L x D
        empty = self.embed([""]).to(dtype)                                  # 1 x L x D
        glob = self.embed([global_prompt]).to(dtype) if cfg.global_diffuser else None
        self.condition = None if pose is None else pose.to(device, dtype).unsqueeze(0)
        scaffold = scaffold_noise = None
        if scaffolding is not None:
            scaffold = self.encode(scaffolding.to(device, dtype).unsqueeze(0))
            scaffold_noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device, dtype)

        self.scheduler.set_timesteps(cfg.steps, device=device)
        self.trace = SampleTrace([])
        k = cfg.scaffolding_steps
        tracks = x.unsqueeze(0).repeat(s, 1, 1, 1, 1)                       # S x B x C x h x w
        g_scale = cfg.guidance_scale
        for i, t in enumerate(self.scheduler.timesteps):
            if i < k:
                # Scaffolding: every track under its own prompt; outside its segment, its own
                # content or the noised scaffolding image.
                outside = tracks if scaffold is None else \
                    self.scheduler.add_noise(scaffold, scaffold_noise, t.reshape(1)).unsqueeze(0).expand_as(tracks)
                inputs = m.unsqueeze(1) * x.unsqueeze(0) + (1 - m.unsqueeze(1)) * outside
                flat = inputs.flatten(0, 1)                                  # (S B) x C x h x w
                context = torch.cat([local.repeat_interleave(b, 0), empty.expand(s * b, -1, -1)])
                pred = self.unet_batch(torch.cat([flat, flat]), t, context)
                cond, uncond = pred.chunk(2)
                eps = uncond + g_scale * (cond - uncond)
                if cfg.sal_active(i) and pixel_masks is not None:
                    eps = torch.cat([self.sal_guidance(flat[j * b:(j + 1) * b], eps[j * b:(j + 1) * b], t,
                                                       pixel_masks[[subject_segments.index(j)]])
                                     if j in subject_segments else eps[j * b:(j + 1) * b] for j in range(s)])
                tracks = self.scheduler.step(eps, t, flat).prev_sample.view(s, b, *shape)
                x = composite_noise(tracks, m)
            else:
                # Harmonization: one latent, the segment predictions mixed under the masks.
                use_global = glob is not None and i - k < cfg.global_steps
                prompts_here = [local] + ([glob] if use_global else []) + [empty]
                n = s + (1 if use_global else 0) + 1
                context = torch.cat([p.repeat_interleave(b, 0) for p in prompts_here])
                pred = self.unet_batch(x.repeat(n, 1, 1, 1), t, context).view(n, b, *shape)
                uncond = pred[-1]
                guided = uncond + g_scale * (pred[:-1] - uncond)                # (S [+1]) x B x ...
                eps = composite_noise(guided[:s], m)
                if use_global:
                    eps = (1 - cfg.global_weight) * eps + cfg.global_weight * guided[s]
                if cfg.sal_active(i) and pixel_masks is not None:
                    eps = self.sal_guidance(x, eps, t, pixel_masks)
                x = self.scheduler.step(eps, t, x).prev_sample
        return self.decode(x).float()


def _is_ddpm(scheduler) -> bool:
    return type(scheduler).__name__ == "DDPMScheduler"
