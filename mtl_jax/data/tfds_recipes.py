"""Public TFDS datasets as ready multi-task problems: which features are the tasks, which splits.

Each recipe is a :class:`~mtl_jax.data.tfds_tasks.FeatureTask` per task plus the splits and
input size; :func:`mtl_jax.data.tfds_tasks.load_tfds` prepares and streams it (the first use
downloads the dataset through TFDS; ``celeb_a`` and ``diabetic_retinopathy_detection`` need
their files placed by hand first, as TFDS's catalog says). Kinds and class counts are written
out here, so that listing recipes needs no TFDS import; they are checked against the dataset's
features when it loads.

* ``dsprites`` (Matthey et al. 2017): 737,280 64x64 binary sprites; shape (3 classes) and the
  scale, orientation and x/y position as regressions. TFDS has one split: 80/10/10 %.
* ``shapes3d`` (Burgess & Kim 2018): 480,000 64x64 renders; shape (4 classes) and scale,
  orientation, floor, wall and object hue as regressions. One split: 80/10/10 %.
* ``celeb_a`` (Liu et al. 2015): 40 binary face attributes, T = 40 (Sener & Koltun 2018's
  large-T benchmark); images resized to 64x64 (``data.image_size`` to change).
* ``retinopathy`` (Kaggle diabetic retinopathy, TFDS ``btgraham-300`` preprocessing): fundus
  photographs graded 0-4; ``detection`` (any retinopathy, grade > 0) and ``grade`` (5
  classes), the medical detection + grading pair; 128x128.
* ``cityscapes`` (Cordts et al. 2016): street scenes, the dense pair of MTAN / Nash-MTL's
  Cityscapes benchmark: ``segmentation`` (the 19 evaluated classes, Cityscapes' ``trainId``;
  the rest ignored as -1) and ``disparity`` (per pixel, inverse depth: ``(p - 1) / 256`` for a
  stored value ``p > 0``, missing where ``p = 0``), on the left image, 128x256. TFDS's built-in
  configs hold either labels or disparity, so the recipe builds one with both
  (``CityscapesConfig(segmentation_labels=True, disparity_maps=True)``); the zips
  (``leftImg8bit_trainvaltest``, ``gtFine_trainvaltest``, ``disparity_trainvaltest``) are placed
  by hand, as TFDS's catalog says. The 500 official validation images are the test split; the
  last 10 % of train the validation split.
"""
from __future__ import annotations

import numpy as np

from mtl_jax.data.tfds_tasks import FeatureTask

SLICED = {"train_split": "train[:80%]", "validation_split": "train[80%:90%]", "test_split": "train[90%:]"}

CELEB_A_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()

RETINOPATHY_GRADES = ("none", "mild", "moderate", "severe", "proliferative")


def any_retinopathy(grade):
    """Detection target: 1 where the grade shows any retinopathy (grade > 0)."""
    return grade > 0


# Cityscapes labelId -> trainId (the 19 evaluated classes; every other id is ignored).
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")


def cityscapes_train_ids(label_ids):
    """Segmentation target: each pixel's trainId (0-18), -1 (missing) for the ignored classes."""
    table = np.full(256, -1, np.int32)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        table[label_id] = train_id
    return table[np.asarray(label_ids).astype(np.int64) % 256]


def cityscapes_disparity(stored):
    """Disparity target ``[H, W]``: ``(p - 1) / 256`` where the stored value ``p > 0``, NaN
    (missing) where it is 0, as the Cityscapes toolkit decodes its disparity PNGs."""
    stored = np.asarray(stored, np.float32)
    stored = stored[..., 0] if stored.ndim == 3 else stored
    return np.where(stored > 0, (stored - 1.0) / 256.0, np.nan).astype(np.float32)


def cityscapes_config():
    """The TFDS builder config with both segmentation labels and disparity maps."""
    from tensorflow_datasets.datasets.cityscapes.cityscapes_dataset_builder import CityscapesConfig

    return CityscapesConfig(name="segmentation_and_disparity", segmentation_labels=True, disparity_maps=True,
                            description="Cityscapes left images with fine segmentation labels and disparity maps")


def _regressions(*features: str) -> dict[str, FeatureTask]:
    return {feature.removeprefix("value_"): FeatureTask(feature, "regression") for feature in features}


RECIPES = {
    "dsprites": {
        "tfds_name": "dsprites",
        "description": "dSprites (TFDS, downloads): shape (3 classes); scale, orientation, x_position, y_position "
                       "(regressions)",
        "tasks": {"shape": FeatureTask("label_shape", "classification", 3),
                  **_regressions("value_scale", "value_orientation", "value_x_position", "value_y_position")},
        "class_names": {"shape": ("square", "ellipse", "heart")},
        "defaults": SLICED,
    },
    "shapes3d": {
        "tfds_name": "shapes3d",
        "description": "3D Shapes (TFDS, downloads): shape (4 classes), scale, orientation, floor/wall/object hue "
                       "(regressions)",
        "tasks": {"shape": FeatureTask("label_shape", "classification", 4),
                  **_regressions("value_scale", "value_orientation", "value_floor_hue", "value_wall_hue",
                                 "value_object_hue")},
        "class_names": {"shape": ("cube", "cylinder", "sphere", "capsule")},
        "defaults": SLICED,
    },
    "celeb_a": {
        "tfds_name": "celeb_a",
        "description": "CelebA (TFDS, manual download): 40 binary face attributes (T = 40), 64x64",
        "tasks": {name: FeatureTask(f"attributes/{name}", "binary") for name in CELEB_A_ATTRIBUTES},
        "class_names": {},
        "defaults": {"image_size": (64, 64)},
    },
    "retinopathy": {
        "tfds_name": "diabetic_retinopathy_detection/btgraham-300",
        "description": "diabetic retinopathy fundus photographs (TFDS, manual download): detection (binary), "
                       "grade (5 classes), 128x128",
        "tasks": {"detection": FeatureTask("label", "binary", derive=any_retinopathy),
                  "grade": FeatureTask("label", "classification", 5)},
        "class_names": {"grade": RETINOPATHY_GRADES},
        "defaults": {"image_size": (128, 128)},
    },
    "cityscapes": {
        "tfds_name": "cityscapes",
        "description": "Cityscapes street scenes (TFDS, manual download): segmentation (19 classes) and disparity "
                       "(per pixel), 128x256",
        "tasks": {"segmentation": FeatureTask("segmentation_label", "segmentation", 19, derive=cityscapes_train_ids),
                  "disparity": FeatureTask("disparity_map", "depth", derive=cityscapes_disparity)},
        "class_names": {"segmentation": CITYSCAPES_CLASSES},
        "defaults": {"input": "image_left", "image_size": (128, 256), "builder_config": cityscapes_config,
                     "train_split": "train[:90%]", "validation_split": "train[90%:]", "test_split": "validation"},
    },
}
