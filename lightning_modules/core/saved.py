"""Saving a plain torch network the way Hugging Face models are saved: config.json + model.safetensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

Saved = TypeVar("Saved", bound="SavedNetwork")


class SavedNetwork:
    """Mixin for an nn.Module whose constructor arguments are all in `self.config` (a JSON-able
    dict): `save_pretrained(dir)` writes them and the weights; `from_pretrained(dir)` rebuilds."""

    config: dict

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls: type[Saved], directory: Path) -> Saved:
        directory = Path(directory)
        model = cls(**json.loads((directory / CONFIG_NAME).read_text()))
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model
