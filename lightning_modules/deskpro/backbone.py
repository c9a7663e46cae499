"""torchreid's OSNet, split where DeSKPro splits it.

The paper passes the person image "through the truncated OSNet backbone up until the first
layer of its third convolutional block" (conv3[0]) to get F; LightMBN then gives each of its
branches its own copy of the rest of the network (conv3[1:], conv4, conv5).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

OSNET_NAMES = ("osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0",
               "osnet_ain_x1_0", "osnet_ain_x0_75", "osnet_ain_x0_5", "osnet_ain_x0_25")


def _torchreid_models():
    # torchreid 0.2.5 ships no compiled rank evaluation and says so on import: not our concern,
    # the project has its own evaluation (lightning_modules.core.metrics.rank).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cython evaluation")
        import torchreid

    return torchreid.models


def build_osnet(name: str, weights: Optional[Path] = None) -> nn.Module:
    """An OSNet from torchreid's registry, random init or local ImageNet weights (no download)."""
    if name not in OSNET_NAMES:
        raise ValueError(f"unknown OSNet variant {name!r} (expected one of {', '.join(OSNET_NAMES)})")
    net = _torchreid_models().build_model(name, num_classes=1, pretrained=False, use_gpu=False)
    if weights is not None:
        state = load_state_dict(weights)
        # torchreid's own ImageNet checkpoints carry a 1000-way classifier: keep only the trunk.
        trunk = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc."))}
        missing, unexpected = net.load_state_dict(trunk, strict=False)
        missing = [k for k in missing if not k.startswith(("classifier.", "fc."))]
        if missing or unexpected:
            raise KeyError(f"{weights}: not {name} weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return net


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or a plain tensor dict loaded with weights_only (no pickled code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


@torch.no_grad()
def stream_channels(stem: nn.Module, tail: nn.Module) -> tuple[int, int]:
    """(channels of F, channels after the tail), read off a dummy pass: the OSNet variants
    name their last convolutions differently."""
    was_training = stem.training
    stem.eval(), tail.eval()
    feature = stem(torch.zeros(1, 3, 64, 32))
    out = tail(feature).shape[1]
    stem.train(was_training), tail.train(was_training)
    return feature.shape[1], out


def split_osnet(osnet: nn.Module) -> tuple[nn.Sequential, nn.Sequential]:
    """(stem up to conv3[0] -> F, tail conv3[1:] + conv4 + conv5) of one OSNet."""
    stem = nn.Sequential(osnet.conv1, osnet.maxpool, osnet.conv2, osnet.conv3[0])
    tail = nn.Sequential(*osnet.conv3[1:], osnet.conv4, osnet.conv5)
    return stem, tail


def tail_copies(tail: nn.Sequential, count: int) -> nn.ModuleList:
    """Independent copies of the tail: LightMBN's branches share the stem but not the tail."""
    return nn.ModuleList(copy.deepcopy(tail) for _ in range(count))
