"""SynthWorld: a Subject-Dataset11-like world, deterministic, with exact masks."""

from __future__ import annotations

import numpy as np

from lightning_modules.synthworld import render_scene, render_subject, scene_catalogue, subject_catalogue, view_for
from lightning_modules.synthworld.subjects import ORIENTATIONS, POSES


def test_catalogue_has_11_subjects_in_4_classes_with_unique_tokens():
    specs = subject_catalogue(11)
    assert len(specs) == 11
    assert len({s.class_noun for s in specs}) >= 4
    assert len({s.identifier for s in specs}) == 11
    assert len({s.name for s in specs}) == 11


def test_images_vary_pose_orientation_and_scale():
    views = [view_for(0, k, seed=3) for k in range(11)]
    assert {v.orientation for v in views} == set(ORIENTATIONS)
    assert {v.pose for v in views} == set(POSES)
    assert len({round(v.scale, 3) for v in views}) > 5


def test_rendering_is_deterministic():
    spec = subject_catalogue(11)[5]
    a = render_subject(spec, view_for(spec.class_index, 2, seed=7), 96)
    b = render_subject(spec, view_for(spec.class_index, 2, seed=7), 96)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = render_subject(spec, view_for(spec.class_index, 2, seed=8), 96)
    assert not np.array_equal(a[1], c[1])


def test_subjects_of_one_class_differ_only_in_appearance():
    specs = subject_catalogue(12)
    for noun in {s.class_noun for s in specs}:
        same = [s for s in specs if s.class_noun == noun]
        assert len(same) >= 2
        for k in range(4):
            renders = [render_subject(s, view_for(s.class_index, k, seed=0), 96) for s in same]
            # identical silhouettes ...
            assert all(np.array_equal(renders[0][1], r[1]) for r in renders[1:])
            # ... clearly different colors inside them
            a, b = renders[0][0][renders[0][1]], renders[1][0][renders[1][1]]
            assert np.abs(a.astype(int) - b.astype(int)).mean() > 20


def test_mask_is_exactly_the_painted_pixels():
    spec = subject_catalogue(11)[0]
    image, mask = render_subject(spec, view_for(0, 0, seed=0), 128)
    assert mask.dtype == bool and 0.02 < mask.mean() < 0.6
    # outside the mask the render is the flat white background
    assert (image[~mask] == 255).all()


def test_scenes_are_distinct():
    scenes = scene_catalogue(100)
    assert len(scenes) == 100 and len({s.kind for s in scenes}) >= 6
    pixels = [render_scene(s, 48, seed=0) for s in scenes[:16]]
    digests = {p.tobytes() for p in pixels}
    assert len(digests) == 16


# --- pose images (ControlNet-OpenPose) ------------------------------------------------------


def test_pose_keypoints_lie_on_their_figure_in_every_view():
    """Every keypoint of a cartoon or robot falls on (or within two pixels of) its silhouette,
    through the view's scale, tilt and mirror: the pose image describes the render."""
    from scipy.ndimage import binary_dilation

    from lightning_modules.synthworld.poses import keypoints

    size = 128
    for spec in subject_catalogue(4):
        for k in range(12):
            view = view_for(spec.class_index, k, seed=0)
            points = keypoints(spec, view)
            if spec.class_noun not in ("cartoon", "robot"):
                assert points == {}
                continue
            assert {"neck", "l_hip", "r_hip", "l_ankle", "r_ankle"} <= set(points), (spec.name, view)
            _, mask = render_subject(spec, view, size)
            near = binary_dilation(mask, iterations=2)
            for name, (x, y) in points.items():
                assert near[min(int(y * size), size - 1), min(int(x * size), size - 1)], (spec.name, view, name)


def test_pose_images_use_openpose_colours_and_sides():
    from lightning_modules.synthworld.poses import COLOURS, KEYPOINTS, LIMB_BRIGHTNESS, render_pose

    cartoon = subject_catalogue(1)[0]
    front = view_for(cartoon.class_index, 0, seed=0)          # image 0 faces the viewer
    image = render_pose(cartoon, front, 256)
    colours = {tuple(c) for c in image.reshape(-1, 3)} - {(0, 0, 0)}
    joints = {COLOURS[k] for k in range(len(KEYPOINTS))}
    limbs = {tuple(round(LIMB_BRIGHTNESS * c) for c in colour) for colour in COLOURS[:17]}
    assert colours <= joints | limbs and len(colours & joints) >= 14
    # facing the viewer, the right shoulder (colour 2) is on the picture's left
    xs = lambda colour: np.nonzero((image == colour).all(-1))[1].mean()   # noqa: E731
    assert xs(COLOURS[2]) < xs(COLOURS[5])
    back = next(view_for(cartoon.class_index, k, 0) for k in range(12) if view_for(cartoon.class_index, k, 0).orientation == "back")
    behind = render_pose(cartoon, back, 256)
    assert np.nonzero((behind == COLOURS[2]).all(-1))[1].mean() > np.nonzero((behind == COLOURS[5]).all(-1))[1].mean()
    assert not (behind == COLOURS[0]).all(-1).any()              # no face seen from behind


def test_pose_pairs_put_the_skeleton_on_the_figures(tmp_path):
    import yaml
    from PIL import Image

    from lightning_modules.synthworld.poses import write_pose_pairs

    assert write_pose_pairs(tmp_path, subject_catalogue(4), scene_catalogue(3), 12, 64, seed=0) == 12
    pairs = yaml.safe_load((tmp_path / "pairs.yaml").read_text())["pairs"]
    assert len(pairs) == 12 and all(p["caption"].startswith(("a cartoon", "a robot")) for p in pairs)
    for pair in pairs:
        pose = np.asarray(Image.open(tmp_path / pair["pose"]))
        mask = np.asarray(Image.open(tmp_path / pair["mask"])) > 0
        drawn = pose.any(-1)
        assert drawn.any() and mask.any()
        assert (drawn & mask).sum() >= 0.6 * drawn.sum()       # the skeleton lies on the figures
    assert write_pose_pairs(tmp_path / "none", [s for s in subject_catalogue(4) if s.class_noun == "dog"],
                            scene_catalogue(3), 5, 64, seed=0) == 0
