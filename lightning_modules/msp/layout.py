"""MSP's input (A.3): a coloured subject-segment layout, a local prompt per colour, a global prompt.

A composition is one YAML file; the images it names are read relative to it:

    layout: layout.png                   # one flat colour per segment, the generation's size
    global_prompt: a cartoon and a dog on a beach
    segments:                            # every colour of the layout, and no other
      "#e6194b": a sks cartoon
      "#3cb44b": a pqr dog
      "#ffffff": on a beach              # the background is a segment like any other
    scaffolding: scaffold.png            # optional: the scaffolding image (Composite Diffusion)
    pose: pose.png                       # optional: an OpenPose image, for ControlNet
    subjects: {"#e6194b": cartoon_1}     # optional truth (SynthWorld writes it): what each
                                         # colour should show, for the evaluation

Everything a composition can get wrong is found here, before any sampling, and reported as
one line naming the file and the colour or key (`LayoutError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_KEYS = {"layout", "global_prompt", "segments", "scaffolding", "pose", "subjects"}


class LayoutError(ValueError):
    """A composition that cannot be sampled; the message names the file and the entry."""


@dataclass(frozen=True)
class Segment:
    colour: str                 # "#rrggbb", lower case
    prompt: str
    subject: Optional[str]      # the truth, where the composition states it


@dataclass
class Composition:
    name: str
    source: Path
    global_prompt: str
    segments: list[Segment]
    masks: np.ndarray                       # S x H x W bool, one per segment, a partition of the image
    layout: np.ndarray                      # H x W x 3 uint8, as read
    scaffolding: Optional[np.ndarray] = None   # H x W x 3 uint8
    pose: Optional[np.ndarray] = None          # H x W x 3 uint8
    extra: dict = field(default_factory=dict)

    @property
    def subject_segments(self) -> list[int]:
        """Indices of the segments that should show a subject (those with a truth)."""
        return [i for i, s in enumerate(self.segments) if s.subject]


def hex_colour(rgb: Iterable[int]) -> str:
    r, g, b = (int(c) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _read_rgb(source: Path, key: str, value, size: int) -> np.ndarray:
    if not isinstance(value, str) or not value:
        raise LayoutError(f"{source}: {key}: expected the path of an image, got {value!r}")
    path = (source.parent / value)
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise LayoutError(f"{source}: {key}: {path} not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise LayoutError(f"{source}: {key}: {path} is not a readable image ({err})") from None
    if image.shape[:2] != (size, size):
        raise LayoutError(f"{source}: {key}: {path} is {image.shape[1]} x {image.shape[0]} px; the model "
                          f"generates {size} x {size}")
    return image


def _identifiers_in(prompt: str, rare_tokens: set[str]) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", prompt.lower()) if w in rare_tokens}


def load_composition(source: Path, *, size: int, identifiers: Iterable[str], rare_tokens: Iterable[str] = (),
                     controlnet: bool = False) -> Composition:
    """Read and check one composition for a model that generates `size` px images.

    `identifiers` are the tokens the model was fine-tuned on; `rare_tokens` the pool they were
    drawn from: a prompt word from the pool that is not an identifier names a subject the model
    never learned. `controlnet` says whether a pose image is required (True) or refused."""
    source = Path(source)
    try:
        spec = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise LayoutError(f"{source}: not found") from None
    except yaml.YAMLError as err:
        raise LayoutError(f"{source}: not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise LayoutError(f"{source}: expected a mapping with layout, global_prompt and segments")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise LayoutError(f"{source}: {unknown[0]}: unknown key (known: {', '.join(sorted(_KEYS))})")
    for key in ("layout", "global_prompt", "segments"):
        if key not in spec:
            raise LayoutError(f"{source}: {key}: missing")
    global_prompt = spec["global_prompt"]
    if not isinstance(global_prompt, str) or not global_prompt.strip():
        raise LayoutError(f"{source}: global_prompt: expected a non-empty prompt")
    prompts = spec["segments"]
    if not isinstance(prompts, dict) or not prompts:
        raise LayoutError(f"{source}: segments: expected a mapping of layout colours (#rrggbb) to prompts")
    truth = spec.get("subjects") or {}
    if not isinstance(truth, dict):
        raise LayoutError(f"{source}: subjects: expected a mapping of layout colours to subject names")

    layout = _read_rgb(source, "layout", spec["layout"], size)
    codes = layout.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    present = {hex_colour(((c >> 16) & 255, (c >> 8) & 255, c & 255)): c for c in np.unique(codes)}

    segments, masks, seen = [], [], set()
    for colour, prompt in prompts.items():
        key = str(colour).lower()
        if not _HEX.match(key):
            raise LayoutError(f"{source}: segments: {colour!r} is not a colour (#rrggbb)")
        if key in seen:
            raise LayoutError(f"{source}: segments.{key}: listed twice")
        seen.add(key)
        if not isinstance(prompt, str) or not prompt.strip():
            raise LayoutError(f"{source}: segments.{key}: expected a non-empty prompt")
        if key not in present:
            raise LayoutError(f"{source}: segments.{key}: this colour is not in the layout {spec['layout']}")
        subject = truth.get(colour, truth.get(key))
        segments.append(Segment(key, prompt.strip(), str(subject) if subject else None))
        masks.append(codes == present[key])
    missing = sorted(set(present) - seen)
    if missing:
        raise LayoutError(f"{source}: segments: the layout colour {missing[0]} has no prompt "
                          f"({int((codes == present[missing[0]]).sum())} px)")
    for colour in truth:
        if str(colour).lower() not in seen:
            raise LayoutError(f"{source}: subjects.{colour}: not a colour of segments")

    known, pool = set(identifiers), set(rare_tokens)
    for where, prompt in [("global_prompt", global_prompt)] + [(f"segments.{s.colour}", s.prompt) for s in segments]:
        strangers = sorted(_identifiers_in(prompt, pool) - known)
        if strangers:
            raise LayoutError(f"{source}: {where}: {strangers[0]!r} is an identifier the model was not fine-tuned "
                              f"on (fine-tuned: {', '.join(sorted(known)) or 'none'})")

    scaffolding = _read_rgb(source, "scaffolding", spec["scaffolding"], size) if spec.get("scaffolding") else None
    pose = None
    if controlnet and not spec.get("pose"):
        raise LayoutError(f"{source}: pose: missing, and ControlNet is on (msp rows with controlnet: true need "
                          "an OpenPose image per composition)")
    if spec.get("pose"):
        if not controlnet:
            raise LayoutError(f"{source}: pose: given, but ControlNet is off; remove it or turn controlnet on")
        pose = _read_rgb(source, "pose", spec["pose"], size)
    return Composition(source.stem, source, global_prompt.strip(), segments, np.stack(masks), layout,
                       scaffolding, pose)
