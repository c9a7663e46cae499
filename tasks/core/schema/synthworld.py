"""params.yaml sections of the SynthWorld stages: synthesize (subjects, scenes), synthesize_persons, synthesize_faces."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from tasks.core.section import Section

# Images of one kind a SynthWorld stage renders: far above any dataset it stands in for
# (Subject-Dataset11: 11 per subject; PRCC: 3 cameras); the disk they take is checked per run.
MAX_RENDERS = 100_000
# Subjects of one MSP composition: one segment colour each (compositions.PALETTE).
MAX_COMPOSITION_SUBJECTS = 8


class SynthesizeConfig(Section):
    num_subjects: int = Field(11, ge=1, le=48)
    images_per_subject: int = Field(11, ge=1, le=MAX_RENDERS)
    image_size: int = Field(256, ge=48, le=2048)
    num_scenes: int = Field(100, ge=1, le=MAX_RENDERS)
    scene_size: int = Field(256, ge=32, le=4096)
    # MSP compositions (lightning_modules/synthworld/compositions.py): layouts at the size the
    # base model generates, `compositions_per_count` of each subject count (counts above
    # num_subjects are skipped, and the stage says so).
    composition_size: int = Field(32, ge=16, le=2048)
    composition_counts: list[Annotated[int, Field(ge=1, le=MAX_COMPOSITION_SUBJECTS)]] = Field(
        [1, 2, 3, 4], min_length=1)
    compositions_per_count: int = Field(5, ge=1, le=1000)
    # ControlNet-OpenPose's training pairs (lightning_modules/synthworld/poses.py), at
    # composition_size: figures placed at random with their pose images.
    pose_pairs: int = Field(2000, ge=0, le=MAX_RENDERS)


class SynthesizePersonsConfig(Section):
    """SynthWorld persons: cloth-changing identities for DeSKPro (PRCC / Celeb-reID-light protocols)."""

    num_train_ids: int = Field(100, ge=1, le=MAX_RENDERS)
    num_test_ids: int = Field(100, ge=1, le=MAX_RENDERS)
    train_outfits: int = Field(3, ge=2, le=100)        # outfits per training identity
    cameras: int = Field(3, ge=3, le=100)              # camera views per outfit (train); PRCC needs A, B, C
    prcc_images_per_camera: int = Field(2, ge=1, le=1000)
    celeb_outfits: int = Field(4, ge=2, le=100)        # Celeb-reID-light: every image in different clothes
    render_height: int = Field(256, ge=64, le=1024)
    render_width: int = Field(128, ge=32, le=512)
    degrade_factor: int = Field(4, ge=1, le=16)  # surveillance images are render size / factor
    face_size: int = Field(32, ge=8, le=256)     # the clean (restored) face crop the teacher sees


class SynthesizeFacesConfig(Section):
    """SynthWorld faces: aligned portraits with part maps and captions (eCLIPsed's FFHQ)."""

    num_identities: int = Field(100, ge=1, le=MAX_RENDERS)
    images_per_identity: int = Field(10, ge=1, le=1000)
    image_size: int = Field(64, ge=16, le=1024)
    supersample: int = Field(4, ge=1, le=8)     # drawn this many times larger, then reduced (anti-aliasing)
    val_per_identity: int = Field(1, ge=0, le=1000)
    test_per_identity: int = Field(1, ge=0, le=1000)
    # Per image, independently of the identity and of the other attributes; hair style, hair
    # color and mouth are uniform over their vocabularies.
    glasses_probability: float = Field(0.35, ge=0, le=1)
    beard_probability: float = Field(0.3, ge=0, le=1)
    max_yaw: float = Field(20.0, ge=0, le=45)   # degrees either way

    @model_validator(mode="after")
    def _splits_leave_training_images(self) -> "SynthesizeFacesConfig":
        held_out = self.val_per_identity + self.test_per_identity
        if held_out >= self.images_per_identity:
            raise ValueError(f"images_per_identity: {self.images_per_identity} leaves no training image after "
                             f"val_per_identity {self.val_per_identity} + test_per_identity {self.test_per_identity}")
        if self.image_size * self.supersample > 4096:
            raise ValueError(f"supersample: image_size {self.image_size} x supersample {self.supersample} is over "
                             "4096 pixels a side")
        return self
