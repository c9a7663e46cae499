"""MSP-Diffusion's generation: compositions (layout.py) and the composite sampler (sampler.py)."""

from lightning_modules.msp.layout import Composition, LayoutError, Segment, load_composition
from lightning_modules.msp.sampler import CompositeSampler, MSPSettings, segment_entropy

__all__ = ["Composition", "CompositeSampler", "LayoutError", "MSPSettings", "Segment", "load_composition",
           "segment_entropy"]
