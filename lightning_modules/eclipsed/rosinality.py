"""Generator checkpoints in the layout of rosinality's stylegan2-pytorch, read without unpickling code.

The layout (what `load_rosinality` reads):

- a `.pt` / `.pth` file saved by `torch.save`, holding a dict with
    `g_ema`       the generator's state dict (the EMA of the weights: the one to sample from);
    `latent_avg`  optional, the mean w [style_dim] (its convert_weight.py writes it from the
                  TensorFlow model's dlatent_avg; rosinality's training checkpoints lack it);
  or a bare g_ema state dict. Other entries (`g`, `d`, optimizer states) are ignored; a
  training checkpoint's `args` (an argparse.Namespace) is an object, which `weights_only=True`
  refuses: save `{"g_ema": ckpt["g_ema"]}` from it first.
- a `.safetensors` file with the g_ema keys (and `latent_avg` if known).

g_ema's keys, for size 2^L, n_mlp layers, style_dim S and channels C[r] per resolution r:
  style.{1..n_mlp}.weight [S, S], style.{1..n_mlp}.bias [S]   (style.0 is the pixel norm)
  input.input [1, C[4], 4, 4]
  conv1.conv.weight [1, C[4], C[4], 3, 3], conv1.conv.modulation.{weight [C[4], S], bias},
  conv1.noise.weight [1], conv1.activate.bias [C[4]]
  to_rgb1.conv.weight [1, 3, C[4], 1, 1], to_rgb1.conv.modulation.*, to_rgb1.bias [1, 3, 1, 1]
  convs.{2j}   the upsampling conv to r = 2^(j+3) (as conv1, plus conv.blur.kernel [4, 4])
  convs.{2j+1} the second conv at r; to_rgbs.{j} as to_rgb1, plus upsample.kernel [4, 4]
  noises.noise_{k} [1, 1, 2^((k+5)//2), 2^((k+5)//2)], k < 2(L-2)+1
The size, n_mlp, style_dim and channel table are read from these shapes; the mapping's
learning-rate multiplier (0.01) and the blur taps (1, 3, 3, 1) are rosinality's defaults.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from lightning_modules.core.errors import InputDataError
from lightning_modules.eclipsed.stylegan import StyleGenerator

LATENT_AVG = "latent_avg"
REQUIRED = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight")


class NotAGeneratorError(InputDataError, ValueError):
    """A checkpoint that is not (or not readably) a StyleGAN2 generator's state dict."""


def _read(path: Path) -> Any:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise NotAGeneratorError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only: anything but tensors and plain containers is refused, never run
        first = str(err).strip().splitlines()
        what = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first
                    else "")
        raise NotAGeneratorError(f"{path}: holds objects other than tensors, which are never unpickled ({what}); "
                             "save the generator's state dict alone, e.g. {'g_ema': ckpt['g_ema']}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise NotAGeneratorError(f"{path}: not a readable torch checkpoint ({str(err).strip().splitlines()[0]})") from None


def _generator_dict(path: Path, content: Any) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
    if not isinstance(content, dict):
        raise NotAGeneratorError(f"{path}: expected a dict with g_ema (a generator state dict), got {type(content).__name__}")
    latent_avg = content.get(LATENT_AVG)
    state = content["g_ema"] if "g_ema" in content else content
    if not isinstance(state, dict):
        raise NotAGeneratorError(f"{path}: g_ema is a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if k != LATENT_AVG}
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        found = ", ".join(sorted(content)[:4]) + (", ..." if len(content) > 4 else "")
        raise NotAGeneratorError(f"{path}: not a StyleGAN2 generator state dict (no g_ema, and no {', '.join(missing)}; "
                             f"keys: {found or 'none'})")
    bad = [key for key, value in state.items() if not torch.is_tensor(value)]
    if bad:
        raise NotAGeneratorError(f"{path}: g_ema entry {bad[0]} is not a tensor")
    if latent_avg is not None and not torch.is_tensor(latent_avg):
        raise NotAGeneratorError(f"{path}: latent_avg is not a tensor")
    return state, latent_avg


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The generator's constructor arguments, from its tensor shapes."""
    n_mlp = sum(1 for key in state if re.fullmatch(r"style\.\d+\.weight", key))
    style_dim = state["style.1.weight"].shape[1]
    channels = {4: state["conv1.conv.weight"].shape[1]}
    j = 0
    while f"convs.{2 * j}.conv.weight" in state:
        channels[2 ** (j + 3)] = state[f"convs.{2 * j}.conv.weight"].shape[1]
        j += 1
    if j == 0:
        raise ValueError("no convs.0.conv.weight: a generator of 4x4 images only is not a StyleGAN2")
    return {"channels": {str(r): int(c) for r, c in channels.items()}, "style_dim": int(style_dim), "n_mlp": n_mlp}


def load_rosinality(path: Path) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor], dict[str, Any]]:
    """(g_ema state dict, latent_avg or None, StyleGenerator config) of a rosinality checkpoint;
    a NotAGeneratorError (a ValueError) naming the file and what is wrong with it otherwise. The state dict is
    checked against the architecture its shapes imply (every key, every shape)."""
    path = Path(path)
    state, latent_avg = _generator_dict(path, _read(path))
    try:
        config = infer_config(state)
        expected = StyleGenerator.from_config(config).state_dict()
    except (ValueError, IndexError, KeyError) as err:
        raise NotAGeneratorError(f"{path}: not a StyleGAN2 generator state dict ({err})") from None
    expected.pop(LATENT_AVG)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        problems = [f"{kind} {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                    for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        size = max(map(int, config["channels"]))
        raise NotAGeneratorError(f"{path}: g_ema does not match a StyleGAN2 generator of size {size} "
                                 f"({'; '.join(problems)})")
    wrong = [key for key in expected if state[key].shape != expected[key].shape]
    if wrong:
        raise NotAGeneratorError(f"{path}: g_ema {wrong[0]} has shape {list(state[wrong[0]].shape)}, expected "
                             f"{list(expected[wrong[0]].shape)}")
    if latent_avg is not None and latent_avg.numel() != config["style_dim"]:
        raise NotAGeneratorError(f"{path}: latent_avg has {latent_avg.numel()} values, expected {config['style_dim']}")
    return {k: v.float() for k, v in state.items()}, None if latent_avg is None else latent_avg.float().flatten(), \
        config


def generator_from_rosinality(path: Path) -> tuple[StyleGenerator, bool]:
    """The generator of a rosinality checkpoint, and whether its latent_avg came with it (if not,
    it is the mean of the mapping of 4096 z, as rosinality's `mean_latent`)."""
    state, latent_avg, config = load_rosinality(path)
    generator = StyleGenerator.from_config(config)
    generator.load_state_dict({**state, LATENT_AVG: latent_avg if latent_avg is not None
                               else torch.zeros(config["style_dim"])}, strict=True)
    if latent_avg is None:
        generator.update_latent_avg(generator=torch.Generator().manual_seed(0))
    return generator, latent_avg is not None


def to_rosinality(generator: StyleGenerator) -> dict[str, Any]:
    """{"g_ema": state dict, "latent_avg": mean w}: what `torch.save` writes for rosinality's code."""
    state = {k: v.detach().clone() for k, v in generator.state_dict().items()}
    return {"g_ema": {k: v for k, v in state.items() if k != LATENT_AVG}, LATENT_AVG: state[LATENT_AVG]}
