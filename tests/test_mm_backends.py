"""The optional mmpose and mmsegmentation backends, end to end on real frames.

The models are tiny ones built here with random weights and saved as local checkpoints,
so nothing is downloaded. Each test skips, saying why, where its mm package cannot be
imported (these backends are an optional install, `make mm`) or the real clips are absent;
with ``COCON_REQUIRE_MM=1``, as CI sets it after `make mm`, any skip here is a failure
instead (tests/conftest.py, the ``mm`` marker).
"""
import importlib
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch

from skimage.feature import peak_local_max

from cocon.config import ConfigError, load_schema, validate
from cocon.data.shards import ShardReader
from cocon.data.video import iter_frames
from cocon.views.pose import backend_files, compute_pose, full_checkpoint_loading, render_heatmaps, view_size
from cocon.views.seg import compute_seg
from tests.conftest import run_snakemake, workflow_config, write_yaml

pytestmark = pytest.mark.mm

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

# a person detector: RetinaNet on a one-stage ResNet-18 (8 base channels, stride 8) with one
# anchor shape, keeping the best two boxes after NMS: two people in every frame
DETECTOR_PEOPLE = 2
DETECTOR_CONFIG = """
default_scope = 'mmdet'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=8),
    backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8, num_stages=2, strides=(1, 2),
                  dilations=(1, 1), out_indices=(1,), frozen_stages=-1, norm_cfg=norm_cfg, init_cfg=None),
    neck=dict(type='FPN', in_channels=[16], out_channels=8, num_outs=1),
    bbox_head=dict(type='RetinaHead', num_classes=2, in_channels=8, stacked_convs=1, feat_channels=8,
                   anchor_generator=dict(type='AnchorGenerator', octave_base_scale=8, scales_per_octave=1,
                                         ratios=[2.0], strides=[8]),
                   bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
                   loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.1),
                  max_per_img={people}))
test_dataloader = dict(dataset=dict(type='CocoDataset', metainfo=dict(classes={classes}), pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]))
"""
DETECTOR_SCORE_THRESHOLD = 0.3
TWO_PERSON_CLIP = "ucf101_24_reencoded/Fencing/v_Fencing_g01_c06.mp4"


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


def save_detector_model(folder, classes=("person", "bicycle")) -> dict:
    """A tiny mmdet detector's config and checkpoint in ``folder``, as pose.mmpose.detector settings.

    Its first class scores about 0.9 at every anchor, spread a little by the image; the
    others never pass the threshold. Box regression is random, so boxes are image-driven.
    """
    apis = import_or_skip("mmdet.apis")
    config = folder / "detector.py"
    checkpoint = folder / "detector.pth"
    config.write_text(DETECTOR_CONFIG.format(people=DETECTOR_PEOPLE, classes=tuple(classes)))
    torch.manual_seed(0)
    state = apis.init_detector(str(config), None, device="cpu").state_dict()
    state["bbox_head.retina_cls.weight"] *= 0.3
    state["bbox_head.retina_cls.bias"].copy_(torch.tensor([2.0, -5.0]))
    torch.save({"state_dict": state, "meta": {"dataset_meta": {"classes": tuple(classes)}}}, checkpoint)
    return {"config": str(config), "checkpoint": str(checkpoint), "score_threshold": DETECTOR_SCORE_THRESHOLD}


def save_seg_model(folder, person_class: int, image_driven: bool = False) -> dict:
    """A tiny segmentation model's config and checkpoint in ``folder``, as seg.mmseg settings.

    Its classifier ignores the image and predicts ``SEG_PROBABILITIES`` everywhere, so the
    person mask it should give is known exactly; ``image_driven`` keeps (scaled) random weights.
    """
    apis = import_or_skip("mmseg.apis")
    config = folder / "seg_model.py"
    checkpoint = folder / "seg_model.pth"
    config.write_text(SEG_CONFIG)
    torch.manual_seed(0)
    state = apis.init_model(str(config), None, device="cpu").state_dict()
    # random weights spread the probabilities by under 1%; 20 times as much is visible in uint8
    state["decode_head.conv_seg.weight"] *= 20 if image_driven else 0
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


def test_mmseg_mask_is_every_pixels_person_probability_in_a_two_person_frame(tmp_path, videos_dir):
    """Semantic segmentation has no instances to choose from: the mask is the person channel's
    softmax at every pixel, as mmseg itself computes it, so both fencers are in it wherever
    the model sees a person."""
    model_files = save_seg_model(tmp_path, person_class=1, image_driven=True)
    settings = stage_settings("seg", "mmseg", model_files)
    frames = two_person_frames(videos_dir)[:1]
    masks = compute_seg(frames, settings)

    apis = import_or_skip("mmseg.apis")
    model = apis.init_model(model_files["config"], model_files["checkpoint"], device="cpu")
    logits = apis.inference_model(model, np.ascontiguousarray(frames[0, ..., ::-1])).seg_logits.data
    person = torch.softmax(logits, dim=0)[1].numpy()
    assert person.shape == frames.shape[1:3] and person.std() > 0.01  # image-driven, at the frame's size
    expected = cv2.resize(person, masks.shape[:0:-1], interpolation=cv2.INTER_AREA) * 255
    assert np.abs(masks[0].astype(np.float32) - expected).max() <= 1


def two_person_frames(videos_dir) -> np.ndarray:
    """RGB ``[T, H, W, 3]``: the first frames of a real clip of two fencers, at short side 128."""
    frames = [frame[..., ::-1] for _, frame in zip(range(FRAME_COUNT),
                                                   iter_frames(videos_dir / TWO_PERSON_CLIP, FRAME_SHORT_SIDE))]
    return np.ascontiguousarray(np.stack(frames))


def reference_people_heatmaps(frames_rgb: np.ndarray, settings: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    """The heatmaps that mmdet and mmpose called directly give (the authors' recipe: every person
    box at or above the threshold, its heatmaps times its score, summed, clipped), and each
    frame's kept boxes, best first."""
    det_apis, pose_apis = import_or_skip("mmdet.apis"), import_or_skip("mmpose.apis")
    from mmengine.config import Config
    from mmpose.utils import adapt_mmdet_pipeline

    mm = settings["mmpose"]
    detector = det_apis.init_detector(adapt_mmdet_pipeline(Config.fromfile(mm["detector"]["config"])),
                                      mm["detector"]["checkpoint"], device="cpu")
    model = pose_apis.init_model(mm["config"], mm["checkpoint"], device="cpu")
    frame_height, frame_width = frames_rgb.shape[1:3]
    height, width = view_size(frame_height, frame_width, settings["short_side"])
    heatmaps, frame_boxes = [], []
    for frame in frames_rgb:
        frame_bgr = np.ascontiguousarray(frame[..., ::-1])
        found = det_apis.inference_detector(detector, frame_bgr).pred_instances
        keep = (found.labels == 0) & (found.scores >= mm["detector"]["score_threshold"])
        scores, boxes = found.scores[keep].numpy(), found.bboxes[keep].numpy()
        order = np.argsort(-scores)[:None if settings["people"] == "all" else 1]
        total = np.zeros((17, height, width), np.float32)
        for pose, score in zip(pose_apis.inference_topdown(model, frame_bgr, boxes[order], bbox_format="xyxy"),
                               scores[order]):
            keypoints = np.column_stack([pose.pred_instances.keypoints[0] / (frame_width, frame_height),
                                         np.clip(pose.pred_instances.keypoint_scores[0], 0, 1)])
            total += score * render_heatmaps(keypoints.astype(np.float32), height, width, settings["sigma"])
        heatmaps.append(np.round(np.clip(total, 0, 1) * 255).astype(np.uint8))
        frame_boxes.append(boxes[order])
    return np.stack(heatmaps), frame_boxes


def people_settings(folder, people: str, classes=("person", "bicycle")) -> dict:
    """pose settings of the mmpose backend with the tiny pose model on the tiny detector's boxes."""
    model_files = save_pose_model(folder, keypoints=17, dataset="CocoDataset")
    model_files["detector"] = save_detector_model(folder, classes)
    dataset = validate({"layout": "folder", "root": ".", "pose": {"backend": "mmpose", "people": people,
                                                                  "mmpose": model_files}},
                       load_schema("dataset.schema.yaml"), "test")
    return dataset["pose"]


def peaks_per_channel(heatmaps: np.ndarray) -> np.ndarray:
    """``[T, 17]``: how many separate peaks of at least a quarter of full confidence each heatmap holds."""
    return np.array([[len(peak_local_max(channel.astype(np.float32), min_distance=4, threshold_abs=64,
                                         exclude_border=False)) for channel in frame] for frame in heatmaps])


@pytest.mark.parametrize("people", ["one", "all"])
def test_mmpose_people_on_detector_boxes_in_a_two_person_clip(tmp_path, videos_dir, people):
    """Fencing: two fencers; the detector keeps two person boxes a frame. ``all`` sums both
    people's heatmaps weighted by their detection scores, ``one`` draws the best box's alone."""
    settings = people_settings(tmp_path, people)
    assert backend_files(settings, "pose")[2:] == [settings["mmpose"]["detector"]["config"],
                                                   settings["mmpose"]["detector"]["checkpoint"]]
    frames = two_person_frames(videos_dir)
    heatmaps = compute_pose(frames, settings)
    expected, boxes = reference_people_heatmaps(frames, settings)
    assert [len(frame_boxes) for frame_boxes in boxes] == [DETECTOR_PEOPLE if people == "all" else 1] * FRAME_COUNT
    assert np.abs(heatmaps.astype(np.int16) - expected).max() <= 1
    peaks = peaks_per_channel(heatmaps)
    if people == "all":
        # two sets of peaks: most keypoints show twice in every frame
        assert ((peaks >= 2).sum(axis=1) >= 5).all(), peaks
    else:
        assert peaks.max() == 1


def test_mmpose_detector_without_a_person_class_is_a_config_error(tmp_path, clip_frames):
    settings = people_settings(tmp_path, "all", classes=("car", "bicycle"))
    with pytest.raises(ConfigError, match=r"pose\.mmpose\.detector\.config: .* has no class named person"):
        compute_pose(clip_frames, settings)


@pytest.mark.e2e
def test_all_people_pose_through_the_workflow(tmp_path):
    """pose.people: all with the tiny detector and pose model, through the real DAG on demo videos."""
    settings = people_settings(tmp_path, "all")
    mm = settings["mmpose"]
    write_yaml(tmp_path / "people.yaml", f"""
        layout: demo
        root: results/people/videos
        shard_size: 4
        demo: {{num_classes: 2, videos_per_class: 2, num_frames: 6, width: 128, height: 96}}
        frames: {{short_side: 96}}
        pose:
          backend: mmpose
          people: all
          short_side: 24
          mmpose:
            config: {mm['config']}
            checkpoint: {mm['checkpoint']}
            detector: {{config: {mm['detector']['config']}, checkpoint: {mm['detector']['checkpoint']},
                        score_threshold: {DETECTOR_SCORE_THRESHOLD}}}
    """)
    config = workflow_config(tmp_path, {"people": "people.yaml"}, ["people"])
    run_snakemake(tmp_path, "results/people/views/pose/00000.h5", "--configfile", str(config))

    views = tmp_path / "results" / "people" / "views"
    with ShardReader(views / "rgb" / "00000.h5", view="rgb") as rgb, \
            ShardReader(views / "pose" / "00000.h5", view="pose") as pose:
        assert pose.attrs["people"] == "all" and pose.attrs["detector_config"] == mm["detector"]["config"]
        assert pose.attrs["detector_score_threshold"] == DETECTOR_SCORE_THRESHOLD
        assert len(pose.video_ids) == 4
        for video in pose.video_ids:
            expected, boxes = reference_people_heatmaps(rgb.read(video), {**settings, "short_side": 24})
            assert all(len(frame_boxes) == DETECTOR_PEOPLE for frame_boxes in boxes)
            assert np.abs(pose.read(video).astype(np.int16) - expected).max() <= 1
    assert (tmp_path / "results" / "people" / "logs" / "pose" / "00000.log").is_file()
