"""Sequential editing with the learned directions of several rows, for pages and notebooks.

    editor = load_editor(params, ["final", "mouth_open"])
    picture = editor.render(seed=3, alphas={"final": 2.0, "mouth_open": -1.0})   # uint8 H x W x 3

`editor.rows` maps each row to its directions.json (prompt, part, latent_space, layers,
alpha_range, ...). A row's first direction is the one applied (K > 1: `direction_index`).
The generator is the one eclipsed.generator names, with each row's own truncation; the
directions of every row are applied one after the other (sequential editing: the sum of alpha
times direction), with the generator's constant noise, so alpha 0 everywhere is the seed's
unedited face.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from lightning_modules.eclipsed.editing import render, seed_codes, to_uint8
from tasks.core.errors import InputDataError
from tasks.core.params import Params
from tasks.eclipsed.learned import LearnedDirections, load_directions, load_generator


class Editor:
    def __init__(self, generator: torch.nn.Module, learned: Sequence[LearnedDirections], direction_index: int = 0):
        self.generator = generator
        self.directions = {d.row: d.directions[min(direction_index, d.directions.shape[0] - 1)] for d in learned}
        self.rows = {d.row: d.meta for d in learned}
        truncations = {float(d.meta.get("truncation", 1.0)) for d in learned}
        # One latent per seed for every row: rows trained at different truncations share the first's.
        self.truncation = float(learned[0].meta.get("truncation", 1.0)) if learned else 1.0
        self.mixed_truncation = len(truncations) > 1

    @torch.no_grad()
    def render(self, seed: int, alphas: Mapping[str, float]) -> np.ndarray:
        """The seed's face after every row's direction with its alpha (rows left out: 0)."""
        unknown = [row for row in alphas if row not in self.directions]
        if unknown:
            raise KeyError(f"rows not loaded: {', '.join(unknown)} (loaded: {', '.join(self.directions)})")
        ws = seed_codes(self.generator, [int(seed)], self.truncation)
        edits = [(self.directions[row], float(alpha)) for row, alpha in alphas.items() if alpha]
        return to_uint8(render(self.generator, ws, edits))[0]


def load_editor(params: Params, rows: Sequence[str]) -> Editor:
    """The generator and the named rows' trained directions (InputDataError when a row has none)."""
    if not rows:
        raise InputDataError("no rows to edit with: name at least one row of eclipsed.rows with trained directions")
    generator = load_generator(params)
    return Editor(generator, [load_directions(params, row, generator) for row in rows])
