"""params.yaml sections of the SynthWorld stages: synthesize (subjects, scenes), synthesize_persons."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from tasks.core.section import Section


class SynthesizeConfig(Section):
    num_subjects: int = Field(11, ge=1, le=48)
    images_per_subject: PositiveInt = 11
    image_size: int = Field(256, ge=48, le=2048)
    num_scenes: PositiveInt = 100
    scene_size: int = Field(256, ge=32, le=4096)


class SynthesizePersonsConfig(Section):
    """SynthWorld persons: cloth-changing identities for DeSKPro (PRCC / Celeb-reID-light protocols)."""

    num_train_ids: PositiveInt = 100
    num_test_ids: PositiveInt = 100
    train_outfits: int = Field(3, ge=2)        # outfits per training identity
    cameras: int = Field(3, ge=3)              # camera views per outfit (train); PRCC needs A, B, C
    prcc_images_per_camera: PositiveInt = 2
    celeb_outfits: int = Field(4, ge=2)        # Celeb-reID-light: every image in different clothes
    render_height: int = Field(256, ge=64, le=1024)
    render_width: int = Field(128, ge=32, le=512)
    degrade_factor: int = Field(4, ge=1, le=16)  # surveillance images are render size / factor
    face_size: int = Field(32, ge=8, le=256)     # the clean (restored) face crop the teacher sees
