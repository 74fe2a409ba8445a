"""The optional mmpose and mmsegmentation backends, end to end on real frames.

The models are tiny ones built here with random weights and saved as local checkpoints,
so nothing is downloaded. Each test skips, saying why, where its mm package cannot be
imported (these backends are an optional install).
"""
import importlib
from types import ModuleType

import numpy as np
import pytest
import torch

from cocon.config import ConfigError, load_schema, validate
from cocon.data.video import iter_frames
from cocon.views.pose import backend_files, compute_pose, view_size
from cocon.views.seg import compute_seg

FRAME_COUNT = 4
FRAME_SHORT_SIDE = 128

# a top-down heatmap model: a two-stage ResNet-18 with 8 base channels (stride 8) and one
# deconvolution, so the 48x64 input gives the codec's 12x16 heatmaps
POSE_CONFIG = """
codec = dict(type='MSRAHeatmap', input_size=(48, 64), heatmap_size=(12, 16), sigma=2)
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8, num_stages=2,
                  strides=(1, 2), dilations=(1, 1), out_indices=(1,), init_cfg=None),
    head=dict(type='HeatmapHead', in_channels=16, out_channels={keypoints},
              deconv_out_channels=(16,), deconv_kernel_sizes=(4,),
              loss=dict(type='KeypointMSELoss', use_target_weight=True), decoder=codec, init_cfg=None),
    test_cfg=dict(flip_test=False))
# the keypoint names and count (dataset_meta) come from the training dataset's metainfo
train_dataloader = dict(dataset=dict(type='{dataset}'))
test_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs'),
]))
"""

# an encoder-decoder with a two-stage ResNet-18-V1c (8 base channels) and a one-conv FCN head
SEG_CLASSES = ("background", "person", "other")
SEG_CONFIG = f"""
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    pretrained=None,
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
    backbone=dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8, num_stages=2,
                  strides=(1, 2), dilations=(1, 1), out_indices=(1,), norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(type='FCNHead', in_channels=16, in_index=0, channels=8, num_convs=1, concat_input=False,
                     num_classes={len(SEG_CLASSES)}, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    test_cfg=dict(mode='whole'))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='PackSegInputs'),
]
"""
# the class probabilities that the seg checkpoint predicts at every pixel
SEG_PROBABILITIES = (0.1, 0.6, 0.3)


def import_or_skip(module: str) -> ModuleType:
    """``module``, or a skip with the import error: an installed but broken mm stack skips too."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pytest.skip(f"{module} cannot be imported ({error}): the optional mm backends need "
                    "mmpose / mmsegmentation with mmengine and a compiled mmcv")


def stage_settings(view: str, backend: str, model_files: dict) -> dict:
    """The ``view`` section of a dataset config with schema defaults, using ``backend`` with ``model_files``."""
    dataset = validate({"layout": "folder", "root": ".", view: {"backend": backend, backend: model_files}},
                       load_schema("dataset.schema.yaml"), "test")
    return dataset[view]


@pytest.fixture(scope="module")
def clip_frames(real_clip) -> np.ndarray:
    """RGB ``[T, H, W, 3]``: the first frames of a real clip at short side 128."""
    if not real_clip.is_file():
        pytest.skip(f"needs the real clip {real_clip}; it is absent here")
    frames = [frame[..., ::-1] for _, frame in zip(range(FRAME_COUNT), iter_frames(real_clip, FRAME_SHORT_SIDE))]
    return np.ascontiguousarray(np.stack(frames))


def save_pose_model(folder, keypoints: int, dataset: str, meta: dict | None = None) -> dict:
    """A tiny top-down pose model's config and checkpoint (with ``meta``) in ``folder``, as pose.mmpose settings."""
    apis = import_or_skip("mmpose.apis")
    config = folder / "pose_model.py"
    checkpoint = folder / "pose_model.pth"
    config.write_text(POSE_CONFIG.format(keypoints=keypoints, dataset=dataset))
    torch.manual_seed(0)
    state = apis.init_model(str(config), None, device="cpu").state_dict()
    # random weights leave the scores (heatmap maxima) anywhere, often below 0; a small spread
    # around 0.8 makes every keypoint confident enough to be drawn, its location still image-driven
    state["head.final_layer.weight"] *= 0.05
    state["head.final_layer.bias"].fill_(0.8)
    torch.save({"state_dict": state, "meta": meta or {}}, checkpoint)
    return {"config": str(config), "checkpoint": str(checkpoint), "device": "cpu"}


def save_seg_model(folder, person_class: int) -> dict:
    """A tiny segmentation model's config and checkpoint in ``folder``, as seg.mmseg settings.

    Its classifier ignores the image and predicts ``SEG_PROBABILITIES`` everywhere, so the
    person mask it should give is known exactly.
    """
    apis = import_or_skip("mmseg.apis")
    config = folder / "seg_model.py"
    checkpoint = folder / "seg_model.pth"
    config.write_text(SEG_CONFIG)
    torch.manual_seed(0)
    state = apis.init_model(str(config), None, device="cpu").state_dict()
    state["decode_head.conv_seg.weight"].zero_()
    state["decode_head.conv_seg.bias"].copy_(torch.log(torch.tensor(SEG_PROBABILITIES)))
    # class names in the checkpoint, as mmseg expects (else it guesses a dataset by class count and warns)
    meta = {"dataset_meta": {"classes": SEG_CLASSES, "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]}}
    torch.save({"state_dict": state, "meta": meta}, checkpoint)
    return {"config": str(config), "checkpoint": str(checkpoint), "device": "cpu", "person_class": person_class}


def test_mmpose_heatmaps_peak_at_the_model_keypoints(tmp_path, clip_frames):
    model_files = save_pose_model(tmp_path, keypoints=17, dataset="CocoDataset")
    settings = stage_settings("pose", "mmpose", model_files)
    assert backend_files(settings, "pose") == [model_files["config"], model_files["checkpoint"]]

    heatmaps = compute_pose(clip_frames, settings)
    frame_height, frame_width = clip_frames.shape[1:3]
    height, width = view_size(frame_height, frame_width, settings["short_side"])
    assert heatmaps.shape == (FRAME_COUNT, 17, height, width)
    assert heatmaps.dtype == np.uint8

    # the same model called directly through mmpose (BGR, whole frame as the box) is the reference
    apis = import_or_skip("mmpose.apis")
    model = apis.init_model(model_files["config"], model_files["checkpoint"], device="cpu")
    checked = 0
    for frame, frame_heatmaps in zip(clip_frames, heatmaps):
        predicted = apis.inference_topdown(model, np.ascontiguousarray(frame[..., ::-1]))[0].pred_instances
        for (x, y), score, heatmap in zip(predicted.keypoints[0], predicted.keypoint_scores[0], frame_heatmaps):
            # the keypoint in heatmap pixel-index units (pixel centres at +0.5)
            column, row = x / frame_width * width - 0.5, y / frame_height * height - 0.5
            if not (0 <= column <= width - 1 and 0 <= row <= height - 1):
                continue  # outside the frame only a Gaussian tail is drawn
            peak_row, peak_column = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
            assert abs(peak_column - column) <= 1 and abs(peak_row - row) <= 1
            assert heatmap.max() == pytest.approx(min(float(score), 1.0) * 255, rel=0.08, abs=1)
            checked += 1
    assert checked >= FRAME_COUNT, "too few keypoints inside the frames to check"


def test_mmpose_model_without_the_17_coco_keypoints_is_a_config_error(tmp_path, clip_frames):
    # MPII's 16 keypoints
    settings = stage_settings("pose", "mmpose", save_pose_model(tmp_path, keypoints=16, dataset="MpiiDataset"))
    with pytest.raises(ConfigError, match=r"pose\.mmpose\.config: .* predicts 16 keypoints"):
        compute_pose(clip_frames, settings)


def test_mmpose_loads_a_checkpoint_with_numpy_dataset_meta(tmp_path, clip_frames):
    # mmpose 1.x training saves the dataset metainfo, numpy arrays included, in the checkpoint's
    # meta; torch >= 2.6 loads with weights_only=True by default, which refuses them
    utils = import_or_skip("mmpose.datasets.datasets.utils")
    dataset_meta = utils.parse_pose_metainfo({"from_file": "configs/_base_/datasets/coco.py"})
    assert isinstance(dataset_meta["sigmas"], np.ndarray)
    model_files = save_pose_model(tmp_path, keypoints=17, dataset="CocoDataset", meta={"dataset_meta": dataset_meta})
    heatmaps = compute_pose(clip_frames, stage_settings("pose", "mmpose", model_files))
    assert heatmaps.shape[:2] == (FRAME_COUNT, 17)


@pytest.mark.parametrize("person_class", [1, 2])
def test_mmseg_mask_is_the_person_class_probability(tmp_path, clip_frames, person_class):
    model_files = save_seg_model(tmp_path, person_class)
    settings = stage_settings("seg", "mmseg", model_files)
    assert backend_files(settings, "seg") == [model_files["config"], model_files["checkpoint"]]

    masks = compute_seg(clip_frames, settings)
    assert masks.shape == (FRAME_COUNT, *view_size(*clip_frames.shape[1:3], settings["short_side"]))
    assert masks.dtype == np.uint8
    expected = SEG_PROBABILITIES[person_class] * 255
    assert np.abs(masks.astype(np.float32) - expected).max() <= 1
