"""SynthWorld: a deterministic procedural world of subjects and scenes with exact masks."""

from lightning_modules.synthworld.scenes import Scene, render_scene, scene_catalogue
from lightning_modules.synthworld.subjects import SubjectSpec, View, render_subject, subject_catalogue, view_for

__all__ = ["Scene", "SubjectSpec", "View", "render_scene", "render_subject", "scene_catalogue",
           "subject_catalogue", "view_for"]
