"""SynthWorld: a deterministic procedural world of subjects, scenes, persons and faces with exact masks."""

from lightning_modules.synthworld.face_painter import FaceRender, render_face
from lightning_modules.synthworld.faces import (
    FACE_ATTRIBUTES,
    PART_CLASSES,
    FaceIdentity,
    FaceLook,
    caption_of,
    face_catalogue,
    look_for,
)
from lightning_modules.synthworld.person_protocols import PROTOCOLS, PlannedImage, outfits_needed, plan_persons
from lightning_modules.synthworld.person_render import PersonRender, render_person
from lightning_modules.synthworld.persons import (
    CLOTH_CLASSES,
    FACE_CLASS,
    PARSING_CLASSES,
    Identity,
    Outfit,
    Shot,
    identity_catalogue,
    outfits_of,
    shot_for,
)
from lightning_modules.synthworld.scenes import Scene, render_scene, scene_catalogue
from lightning_modules.synthworld.subjects import SubjectSpec, View, render_subject, subject_catalogue, view_for
from lightning_modules.synthworld.surveillance import SurveillanceImage, face_crop, restored_face, surveillance_view

__all__ = ["CLOTH_CLASSES", "FACE_ATTRIBUTES", "FACE_CLASS", "FaceIdentity", "FaceLook", "FaceRender", "Identity",
           "Outfit", "PARSING_CLASSES", "PART_CLASSES", "PROTOCOLS", "PersonRender", "PlannedImage", "Scene", "Shot",
           "SubjectSpec", "SurveillanceImage", "View", "caption_of", "face_catalogue", "face_crop", "identity_catalogue",
           "look_for", "outfits_needed", "outfits_of", "plan_persons", "render_person", "render_scene",
           "render_face", "render_subject", "restored_face", "scene_catalogue", "shot_for", "subject_catalogue",
           "surveillance_view", "view_for"]
