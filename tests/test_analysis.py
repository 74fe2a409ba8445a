"""The analyses of frozen features (cocon.analysis: retrieval, probe, consistency, figures) on
hand-made FeatureSets whose answers are known."""
import csv
import json
import math
import tracemalloc

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import roc_auc_score

from cocon.analysis.consistency import class_consistency, class_means, consistency_document, consistency_markdown, \
    nearest_classes
from cocon.analysis.features import ALIGNMENT_BLOCKS, FeatureSet
from cocon.analysis.pairs import FINE_BINS_PER_BIN, pair_histogram
from cocon.analysis.figures import alignment_heatmaps, nearest_neighbour_figure, per_class_gains, \
    relative_similarities, same_class_pairs, similarity_histograms, training_curves, tsne_figure
from cocon.analysis import retrieval
from cocon.analysis.probe import at_grid_edge, linear_probe, probe_document, probe_markdown, top1_at_every_c, \
    write_probe
from cocon.analysis.retrieval import nearest_neighbours, normalized, recall_at_k, retrieval_document, \
    retrieval_markdown, write_retrieval
from cocon.analysis.analyse import gain_comparisons
from cocon.data.manifest import ManifestRow, write_manifest
from cocon.train.evaluate import build_report, ensemble_key
from cocon.train.history import write_metrics


def feature_set(context, labels, roles, init="cocon", view="rgb", video_ids=None, blocks=None) -> FeatureSet:
    """A FeatureSet of ``context`` ``[V, D]``; block features (of the test videos) default to
    random ones."""
    context = np.asarray(context, dtype=np.float32)
    roles = np.asarray(roles)
    video_ids = np.array(video_ids if video_ids is not None else [f"v{index:03d}" for index in range(len(labels))])
    test_ids = video_ids[roles == "test"]
    if blocks is None:
        blocks = np.random.default_rng(0).normal(size=(len(test_ids), ALIGNMENT_BLOCKS, context.shape[1]))
    return FeatureSet(init=init, view=view, split=1, video_ids=video_ids, labels=np.asarray(labels, dtype=int),
                      roles=roles, context=context, windows=np.ones(len(labels), dtype=int),
                      block_video_ids=test_ids, blocks=np.asarray(blocks, dtype=np.float32))


def at_angles(degrees) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def clustered(num_classes, per_class, roles_per_class, dim=16, spread=0.05, seed=0, **kwargs) -> FeatureSet:
    """Videos of ``num_classes`` classes, ``per_class`` each, tightly around one random centre
    per class; ``roles_per_class`` [per_class] roles, repeated for every class."""
    generator = np.random.default_rng(seed)
    centres = generator.normal(size=(num_classes, dim))
    labels = np.repeat(np.arange(num_classes), per_class)
    context = centres[labels] + spread * generator.normal(size=(len(labels), dim))
    return feature_set(context, labels, list(roles_per_class) * num_classes, **kwargs)


# ---------------------------------------------------------------- retrieval

def test_recall_at_k_exact_ranks_and_gallery_too_small():
    # Gallery labels [0, 1, 2, 3]; the queries' class comes at rank 1, 2, 3 and never.
    similarity = np.array([[0.9, 0.5, 0.1, 0.0],
                           [0.9, 0.5, 0.1, 0.0],
                           [0.9, 0.8, 0.7, 0.1],
                           [0.9, 0.8, 0.7, 0.1]])
    recall = recall_at_k(similarity, np.array([0, 1, 2, 9]), np.array([0, 1, 2, 3]), ks=(1, 2, 3, 4, 10))
    assert recall == {1: 0.25, 2: 0.5, 3: 0.75, 4: 0.75, 10: None}


def test_recall_at_k_breaks_ties_by_gallery_order():
    similarity = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert recall_at_k(similarity, np.array([1, 0]), np.array([0, 1]), ks=(1, 2)) == {1: 0.5, 2: 1.0}


def test_recall_at_k_is_monotone():
    features = clustered(5, 6, ["train"] * 3 + ["test"] * 3, spread=1.5)
    queries, gallery = features.role("test"), features.role("train")
    recall = recall_at_k(normalized(features.context[queries]) @ normalized(features.context[gallery]).T,
                         features.labels[queries], features.labels[gallery], ks=(1, 2, 5, 10, 15))
    values = list(recall.values())
    assert all(later >= earlier for earlier, later in zip(values, values[1:])), recall
    assert values[-1] == 1.0  # every class is in the whole gallery


def test_first_match_ranks_agree_with_a_full_stable_sort_and_chunks_change_nothing():
    generator = np.random.default_rng(3)
    # coarse similarities: many ties, which the stable ranking breaks by gallery order
    similarity = generator.integers(0, 4, size=(40, 30)).astype(float)
    query_labels, gallery_labels = generator.integers(0, 6, 40), generator.integers(0, 5, 30)
    order = np.argsort(-similarity, axis=1, kind="stable")
    matches = gallery_labels[order] == query_labels[:, None]
    expected = np.where(matches.any(axis=1), matches.argmax(axis=1), 30)
    np.testing.assert_array_equal(retrieval.first_match_ranks(similarity, query_labels, gallery_labels), expected)

    features = clustered(5, 8, ["train"] * 5 + ["test"] * 3, spread=0.8, seed=1)
    whole = retrieval_document({("cocon", "rgb"): features})
    # 25 gallery videos x 48 bytes: 4 queries a chunk
    assert retrieval_document({("cocon", "rgb"): features}, memory_mb=4 * 25 * 48 / 2 ** 20) == whole
    neighbours = nearest_neighbours([features], k=3)
    chunked = nearest_neighbours([features], k=3, memory_mb=2 * 25 * 48 / 2 ** 20)
    assert [[item["video_id"] for item in row["neighbours"]] for row in chunked] == \
        [[item["video_id"] for item in row["neighbours"]] for row in neighbours]
    np.testing.assert_allclose([[item["similarity"] for item in row["neighbours"]] for row in chunked],
                               [[item["similarity"] for item in row["neighbours"]] for row in neighbours], rtol=1e-5)


def test_centring_removes_a_common_offset():
    # Two classes in opposite directions around a large offset common to every video.
    directions = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [-0.9, -0.1, 0.0]])
    context = 100.0 + directions
    raw = context / np.linalg.norm(context, axis=1, keepdims=True)
    assert np.all(raw @ raw.T > 0.999)  # without centring every pair looks the same
    unit = normalized(context)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    cosine = unit @ unit.T
    assert cosine[0, 2] > 0.99 and cosine[1, 3] > 0.99 and cosine[0, 1] < -0.99
    features = feature_set(context, [0, 1, 0, 1], ["train", "train", "test", "test"])
    assert retrieval_document({("cocon", "rgb"): features}, ks=(1,))["rows"][0]["recall"] == {"1": 1.0}


def two_view_case():
    """Gallery at 0, 90, 180, 270 degrees (labels 0..3, one of them val); two queries whose
    class comes second in both views but first once the views' cosines are summed."""
    roles = ["train", "val", "train", "train", "test", "test"]
    labels = [0, 1, 2, 3, 1, 3]
    rgb = at_angles([0, 90, 180, 270, 40, 220])
    flow = at_angles([0, 90, 180, 270, 140, 320])
    return (feature_set(rgb, labels, roles, view="rgb"), feature_set(flow, labels, roles, view="flow"))


def test_fused_retrieval_sums_the_views_similarities():
    rgb, flow = two_view_case()
    cpc = feature_set(rgb.context, rgb.labels, rgb.roles, init="cpc", view="rgb")
    document = retrieval_document({("cocon", "rgb"): rgb, ("cocon", "flow"): flow, ("cpc", "rgb"): cpc}, ks=(1, 2, 5))
    rows = document["rows"]
    assert [(row["init"], row["view"]) for row in rows] == [("cocon", "rgb"), ("cocon", "flow"), ("cocon", "fused"),
                                                             ("cpc", "rgb")]
    assert rows[0]["recall"] == {"1": 0.0, "2": 1.0, "5": None}
    assert rows[1]["recall"] == {"1": 0.0, "2": 1.0, "5": None}
    assert rows[2]["recall"] == {"1": 1.0, "2": 1.0, "5": None}
    assert (rows[2]["num_queries"], rows[2]["num_gallery"]) == (2, 4)
    table = retrieval_markdown(document)
    assert "| cocon | fused | 100.0 | 100.0 | — |" in table and "| cocon | rgb | 0.0 | 100.0 | — |" in table

    neighbours = nearest_neighbours([rgb, flow], k=2)
    assert [row["query"] for row in neighbours] == ["v004", "v005"]
    first = neighbours[0]
    assert first["query_label"] == 1 and [item["video_id"] for item in first["neighbours"]][0] == "v001"
    assert first["neighbours"][0]["similarity"] == pytest.approx(2 * math.cos(math.radians(50)), abs=1e-5)
    single = nearest_neighbours([rgb], k=10, queries=["v005"])
    assert [item["label"] for item in single[0]["neighbours"]] == [2, 3, 1, 0]


def test_retrieval_errors_name_the_features():
    rgb, flow = two_view_case()
    no_test = feature_set(rgb.context, rgb.labels, ["train"] * 6, init="cpc", view="seg")
    with pytest.raises(ValueError, match=r"\(cpc, seg\).*no test video"):
        retrieval_document({("cpc", "seg"): no_test})
    no_gallery = feature_set(rgb.context, rgb.labels, ["test"] * 6, init="cpc", view="seg")
    with pytest.raises(ValueError, match=r"\(cpc, seg\).*no train video"):
        retrieval_document({("cpc", "seg"): no_gallery})
    shuffled = feature_set(flow.context, flow.labels, flow.roles, view="flow", video_ids=flow.video_ids[::-1])
    with pytest.raises(ValueError, match="init cocon: views rgb and flow"):
        retrieval_document({("cocon", "rgb"): rgb, ("cocon", "flow"): shuffled})
    with pytest.raises(ValueError, match="not test videos"):
        nearest_neighbours([rgb], k=1, queries=["v000"])


# ---------------------------------------------------------------- linear probe

def test_linear_probe_separates_separable_classes():
    features = clustered(3, 18, ["train"] * 10 + ["val"] * 3 + ["test"] * 5, dim=8)
    result = linear_probe(features, cs=(0.1, 1.0))
    assert result["top1"] == 1.0 and result["top5"] is None  # 3 classes: a top-5 cannot miss
    assert result["C_selected_on"] == "cross-validation" and result["C"] == 0.1 and result["cv_top1"] == 1.0
    assert result["folds"] == 5 and result["cv_top1_by_C"] == {"0.1": 1.0, "1.0": 1.0}
    assert not result["C_at_grid_edge"]  # the smallest C, but tied with its neighbour
    assert (result["num_train"], result["num_val"], result["num_test"]) == (30, 9, 15)
    document = probe_document({("cocon", "rgb"): features}, cs=(0.1, 1.0))
    markdown = probe_markdown(document)
    assert document["rows"][0]["init"] == "cocon" and "| cocon | rgb | 0.1 | 100.0 (5) | 100.0 | — |" in markdown
    assert "cannot miss" in markdown


def test_linear_probe_top5_is_measured_with_more_than_5_classes():
    features = clustered(6, 8, ["train"] * 5 + ["val"] + ["test"] * 2, dim=4, spread=3.0, seed=1)
    result = linear_probe(features, cs=(1.0,))
    assert result["top5"] is not None and result["top1"] <= result["top5"] <= 1.0
    assert "cannot miss" not in probe_markdown(probe_document({("cpc", "rgb"): features}, cs=(1.0,)))


def test_linear_probe_chooses_c_by_cross_validation_over_train_and_val():
    # the class shows only in the first dimension minus the second (they share a large
    # noise): a tiny C shrinks the probe to the class-mean direction, the first dimension
    # alone, which that noise swamps; cross-validation (5 folds of the 20 train + val
    # videos per class, not the 2 val videos alone) must prefer the larger C
    generator = np.random.default_rng(3)
    labels = np.repeat([0, 1], 40)
    shared = generator.normal(scale=3.0, size=80)
    context = np.stack([labels + shared + generator.normal(scale=0.1, size=80),
                        shared + generator.normal(scale=0.1, size=80)], axis=1)
    roles = np.array((["train"] * 18 + ["val"] * 2 + ["test"] * 20) * 2)
    result = linear_probe(feature_set(context, labels, roles), cs=(1e-6, 100.0))
    assert result["C_selected_on"] == "cross-validation" and result["C"] == 100.0 and result["folds"] == 5
    assert result["cv_top1_by_C"]["1e-06"] < result["cv_top1_by_C"]["100.0"] and result["top1"] > 0.8
    assert result["C_at_grid_edge"]  # the largest C, and better than the next: a wider grid might go further
    markdown = probe_markdown(probe_document({("cpc", "rgb"): feature_set(context, labels, roles)}, cs=(1e-6, 100.0)))
    assert "| 100 (grid edge) |" in markdown and "Grid edge (1 of 1 probes)" in markdown
    # the diagnosis at every C refits the same probe: at the chosen C it is linear_probe's top-1
    by_c = top1_at_every_c(feature_set(context, labels, roles), cs=(1e-6, 100.0))
    assert by_c["100.0"] == result["top1"] and by_c["1e-06"] < by_c["100.0"]


def test_a_grid_edge_is_a_smallest_or_largest_c_strictly_better_than_its_neighbour():
    by_c = {"0.01": 0.30, "0.1": 0.40, "1.0": 0.50, "10.0": 0.45}
    assert not at_grid_edge(by_c, 1.0)                      # inside the grid
    assert at_grid_edge({**by_c, "10.0": 0.55}, 10.0)       # the largest, above 1.0
    assert at_grid_edge({**by_c, "0.01": 0.60}, 0.01)       # the smallest, above 0.1
    assert not at_grid_edge({**by_c, "0.01": 0.40}, 0.01)   # the smallest, tied with 0.1
    assert not at_grid_edge({"1.0": 0.5}, 1.0)              # one C is no grid
    assert not at_grid_edge({}, 1.0)                        # the default C, nothing cross-validated


def test_linear_probe_without_two_videos_in_a_class_uses_the_default_c():
    generator = np.random.default_rng(4)
    labels = np.array([0] * 6 + [1] + [0, 1])
    roles = np.array(["train"] * 7 + ["test"] * 2)
    result = linear_probe(feature_set(generator.normal(size=(9, 3)), labels, roles), cs=(0.1, 10.0))
    assert result["C_selected_on"] == "default" and result["C"] == 1.0
    assert result["folds"] == 0 and result["cv_top1"] is None and result["cv_top1_by_C"] == {}
    assert not result["C_at_grid_edge"]


def test_linear_probe_on_random_labels_is_near_chance():
    generator = np.random.default_rng(1)
    count = 600
    roles = np.where(np.arange(count) < 400, "train", "test")
    features = feature_set(generator.normal(size=(count, 20)), generator.integers(0, 5, size=count), roles)
    result = linear_probe(features, cs=(1.0,))
    assert result["C_selected_on"] == "cross-validation" and 0.1 < result["cv_top1"] < 0.32
    assert 0.1 < result["top1"] < 0.32, result
    assert result["top5"] is None  # five classes: the top 5 holds them all


def test_linear_probe_counts_a_class_unseen_in_training_as_a_miss():
    seen = clustered(4, 15, ["train"] * 10 + ["test"] * 5, dim=8)
    # Class 3 has no train video: relabel its train videos as test videos of class 3.
    roles = np.where((seen.labels == 3), "test", seen.roles)
    features = feature_set(seen.context, seen.labels, roles)
    result = linear_probe(features)
    assert result["num_classes_seen"] == 3 and result["num_test"] == 30
    assert result["top1"] == pytest.approx(15 / 30) and result["top5"] is None


def test_linear_probe_needs_two_classes_to_train():
    features = feature_set(np.eye(4), [0, 0, 1, 1], ["train", "train", "test", "test"], init="cpc", view="pose")
    with pytest.raises(ValueError, match=r"\(cpc, pose\).*two classes"):
        linear_probe(features)


def test_write_retrieval_and_probe_from_features_files(tmp_path):
    rgb, flow = two_view_case()
    rgb.init = flow.init = "ucf101/cocon/rgb+flow"
    paths = [tmp_path / "rgb.npz", tmp_path / "flow.npz"]
    rgb.save(paths[0])
    flow.save(paths[1])
    # given flow first, the rows still come in the results tables' view order
    document = write_retrieval(paths[::-1], (1, 2), tmp_path / "retrieval.json", tmp_path / "retrieval.md")
    assert json.loads((tmp_path / "retrieval.json").read_text()) == document
    assert [row["view"] for row in document["rows"]] == ["rgb", "flow", "fused"]
    assert document["rows"][2]["recall"] == {"1": 1.0, "2": 1.0}
    assert "| ucf101/cocon/rgb+flow | fused | 100.0 | 100.0 |" in (tmp_path / "retrieval.md").read_text()
    probe = write_probe(paths[:1], (1.0,), 0, tmp_path / "probe.json", tmp_path / "probe.md", threads=1)
    assert json.loads((tmp_path / "probe.json").read_text()) == probe and probe["rows"][0]["num_test"] == 2
    with pytest.raises(ValueError, match=r"a second features file of \(ucf101/cocon/rgb\+flow, rgb\)"):
        write_retrieval([paths[0], paths[0]], (1,), tmp_path / "x.json", tmp_path / "x.md")


# ---------------------------------------------------------------- class consistency

# Six classes on a circle in two views; with k = 2 the nearest classes agree fully for the
# first three, partly for the last two and not at all for the fourth.
CONSISTENCY_LABELS = np.array([3, 5, 7, 8, 10, 12])
VIEW_ONE = at_angles([0, 10, 25, 90, 100, 120]) * np.array([[1.0], [2.0], [0.5], [3.0], [1.0], [4.0]])
VIEW_TWO = at_angles([0, 40, 10, 300, 100, 130])


def test_nearest_classes_exclude_themselves_and_break_ties_in_order():
    np.testing.assert_array_equal(nearest_classes(VIEW_ONE, 2), [[1, 2], [0, 2], [1, 0], [4, 5], [3, 5], [4, 3]])
    np.testing.assert_array_equal(nearest_classes(np.ones((4, 3)), 3), [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    with pytest.raises(ValueError, match="k = 6"):
        nearest_classes(VIEW_ONE, 6)


def test_class_consistency_known_answer():
    result = class_consistency({"rgb": VIEW_ONE, "flow": VIEW_TWO}, CONSISTENCY_LABELS, k=2)
    assert result["views"] == ["rgb", "flow"]
    assert result["per_class"] == {3: [5, 7], 5: [3, 7], 7: [5, 3], 8: [], 10: [12], 12: [10]}
    assert result["at_least"] == {1: 5, 2: 3}
    assert result["fully_consistent"] == 3
    alone = class_consistency({"rgb": VIEW_ONE}, CONSISTENCY_LABELS, k=2)
    assert alone["at_least"] == {1: 6, 2: 6}


def test_consistency_document_compares_cpc_on_the_joint_views():
    names = [f"class{index}" for index in range(6)]
    joint_rgb = clustered(6, 4, ["train", "test", "test", "test"], seed=2)
    # Identical views: every class is fully consistent with itself.
    joint = {"rgb": joint_rgb, "flow": feature_set(joint_rgb.context, joint_rgb.labels, joint_rgb.roles, view="flow")}
    cpc_rgb = clustered(6, 4, ["train", "test", "test", "test"], seed=3, init="cpc")
    flow_roles = np.where(joint_rgb.labels == 5, "train", joint_rgb.roles)  # class 5 has no test video in CPC flow
    cpc_flow = feature_set(clustered(6, 4, ["test"] * 4, seed=4).context, joint_rgb.labels, flow_roles, init="cpc",
                           view="flow")
    document = consistency_document({"rgb": cpc_rgb, "flow": cpc_flow, "pose": cpc_rgb}, {"cocon/rgb+flow": joint},
                                    names, k=2)
    entry = document["inits"][0]
    assert document["variants"] == ["raw"] and "centred" not in entry
    assert entry["views"] == ["rgb", "flow"] and entry["num_classes"] == 5
    assert entry["raw"]["joint"]["at_least"] == {"1": 5, "2": 5} and entry["raw"]["joint"]["fully_consistent"] == 5
    assert "class5" not in entry["raw"]["joint"]["per_class"]
    shared = np.arange(5)
    by_view = {}
    for view, features in (("rgb", cpc_rgb), ("flow", cpc_flow)):
        labels, means = class_means(features)
        by_view[view] = means[np.isin(labels, shared)]
    expected = class_consistency(by_view, shared, k=2)
    assert entry["raw"]["cpc"]["per_class"] == {names[label]: [names[other] for other in agreed]
                                                for label, agreed in expected["per_class"].items()}
    table = consistency_markdown(document)
    assert "| at least 2 | " + str(expected["at_least"][2]) + " | 5 |" in table
    class_rows = [line for line in table.splitlines() if line.startswith("| class")]
    assert len(class_rows) == 1 + 5  # the header, and every class: each has consistent neighbours in the joint init
    with pytest.raises(ValueError, match=r"no CPC features of view\(s\) \['flow'\]"):
        consistency_document({"rgb": cpc_rgb}, {"cocon/rgb+flow": joint}, names, k=2)


def test_consistency_of_raw_class_means_differs_from_centred_ones():
    """The paper compares raw class means. Here the flow view is the rgb view with one video
    (class 0's) five times longer: no raw cosine moves, so every raw nearest class agrees,
    but centring over the videos moves class 2's nearest class in flow."""
    names = ["A", "B", "C", "D"]
    rgb = feature_set([[3.0, 1.0], [1.0, 3.0], [3.0, -1.0], [-2.0, 2.5]], [0, 1, 2, 3], ["test"] * 4)
    flow = feature_set(rgb.context * np.array([[5.0], [1.0], [1.0], [1.0]]), rgb.labels, rgb.roles, view="flow")
    labels, raw_means = class_means(rgb)
    np.testing.assert_allclose(raw_means, rgb.context)  # one video per class: the raw features themselves
    assert nearest_classes(raw_means, 1)[:, 0].tolist() == [2, 0, 0, 1]
    assert nearest_classes(class_means(rgb, variant="centred")[1], 1)[:, 0].tolist() == [2, 3, 0, 1]
    assert nearest_classes(class_means(flow, variant="centred")[1], 1)[:, 0].tolist() == [2, 3, 3, 1]
    cpc = {"rgb": rgb, "flow": flow}
    document = consistency_document(cpc, {"cocon/rgb+flow": cpc}, names, k=1, variants=("raw", "centred"))
    entry = document["inits"][0]
    assert entry["raw"]["joint"]["at_least"] == {"1": 4}
    assert entry["centred"]["joint"]["at_least"] == {"1": 3} and entry["centred"]["joint"]["per_class"]["C"] == []
    table = consistency_markdown(document)
    assert "| consistent neighbours (of 1) | CPC, raw | cocon/rgb+flow, raw | CPC, centred | cocon/rgb+flow, centred |" \
        in table
    assert "| at least 1 | 4 | 4 | 3 | 3 |" in table and "the mean of the raw features (the paper's)" in table
    with pytest.raises(ValueError, match="unknown cosine variant 'mean'"):
        class_means(rgb, variant="mean")


def test_ensemble_gains_compare_cpc_over_the_joint_methods_views(tmp_path):
    """CPC is fine-tuned on four views, CoCon on rgb+flow: CoCon's ensemble is compared with
    CPC's ensemble of rgb and flow, never with CPC's four-view ensemble."""
    names = ["A", "B", "C"]
    labels = np.array([0, 1, 2, 0, 1, 2])
    rows = [ManifestRow(f"v{index}", names[label], int(label), "test", "00000", "ok", 40, 25.0, 64, 48, f"v{index}.avi")
            for index, label in enumerate(labels)]
    write_manifest(rows, tmp_path / "manifest.tsv", tmp_path / "excluded.tsv")
    right = np.eye(3)[labels]  # every video right
    wrong = np.eye(3)[(labels + 1) % 3]  # every video wrong
    scores = {("demo/cpc", "rgb"): right, ("demo/cpc", "flow"): right, ("demo/cpc", "pose"): wrong,
              ("demo/cpc", "seg"): wrong, ("demo/cocon/rgb+flow", "rgb"): right,
              ("demo/cocon/rgb+flow", "flow"): right}
    entries = {}
    for (init, view), values in scores.items():
        path = tmp_path / f"{init.replace('/', '_')}_{view}.npz"
        np.savez(path, scores=values, labels=labels, video_ids=np.array([row.video_id for row in rows]), windows=6)
        entries[(init, view)] = {"scores": str(path), "checkpoint": None}
    dataset = {"name": "demo", "pretrain": {}, "finetune": {"ensemble_weights": {"rgb": 1, "flow": 1, "pose": 3,
                                                                                 "seg": 3}}}
    _, details = build_report(dataset, 1, tmp_path / "manifest.tsv", entries)
    assert details["demo/cpc/ensemble"]["views"] == ["rgb", "flow", "pose", "seg"]
    assert set(details["demo/cpc/ensemble"]["per_class_top1"].values()) == {0.0}  # pose and seg outweigh
    assert details[ensemble_key("demo/cpc", ["rgb", "flow"])]["views"] == ["rgb", "flow"]
    comparisons = gain_comparisons(details, "demo/cpc", "demo/cocon/rgb+flow", ["rgb", "flow", "pose", "seg"])
    assert [view for view, _, _ in comparisons] == ["rgb", "flow", "ensemble"]
    _, baseline, improved = comparisons[-1]
    assert baseline["views"] == improved["views"] == ["rgb", "flow"]
    assert set(baseline["per_class_top1"].values()) == {1.0}, "CPC's ensemble over rgb and flow is right"


# ---------------------------------------------------------------- figures

TINY_NAMES = ["Archery", "Bowling", "Diving", "Fencing", "Surfing"]


@pytest.fixture(scope="module")
def tiny() -> FeatureSet:
    """5 classes, 2 train and 2 test videos each."""
    return clustered(5, 4, ["train", "train", "test", "test"], spread=0.3)


def assert_image(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.ndim == 3 and len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 1


def read_csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_tsne_figure_tiny_with_groups_and_large_without(tiny, tmp_path):
    other = clustered(5, 4, ["train", "train", "test", "test"], spread=0.3, seed=7, init="cpc")
    summary = tsne_figure({"CPC": other, "CoCon": tiny}, TINY_NAMES, tmp_path / "tsne.png", tmp_path / "tsne.csv",
                          groups={"sports": [0, 1, 3], "water": [2, 4]})
    assert summary == {"CPC": 10, "CoCon": 10}
    assert_image(tmp_path / "tsne.png")
    rows = read_csv(tmp_path / "tsne.csv")
    assert list(rows[0]) == ["panel", "video_id", "label", "class", "x", "y"] and len(rows) == 20
    assert {row["class"] for row in rows} == set(TINY_NAMES)

    large = clustered(20, 6, ["train"] + ["test"] * 5, spread=0.5)
    names = [f"class{index}" for index in range(20)]
    assert tsne_figure({"CoCon": large}, names, tmp_path / "large.png", tmp_path / "large.csv") == {"CoCon": 100}
    assert_image(tmp_path / "large.png")
    subset = tsne_figure({"CoCon": large}, names, tmp_path / "subset.png", tmp_path / "subset.csv", classes=[1, 2, 3])
    assert subset == {"CoCon": 15}


def test_similarity_histograms_auc_and_counts(tiny, tmp_path):
    scrambled = feature_set(np.random.default_rng(5).normal(size=tiny.context.shape), tiny.labels, tiny.roles)
    aucs = similarity_histograms({"CoCon": tiny, "random": scrambled}, tmp_path / "hist.png", tmp_path / "hist.json",
                                 variants=("raw", "centred"))
    assert aucs["raw"]["CoCon"] == 1.0 and aucs["raw"]["random"] < 1.0 and aucs["centred"]["CoCon"] == 1.0
    assert_image(tmp_path / "hist.png")
    data = json.loads((tmp_path / "hist.json").read_text())
    for variant in ("raw", "centred"):
        entry = data[variant]["CoCon"]
        assert (entry["same_pairs"], entry["other_pairs"]) == (5, 40)  # 10 test videos: 45 pairs
        assert sum(entry["same_counts"]) == 5 and sum(entry["other_counts"]) == 40
        assert len(entry["bin_edges"]) == 51 and entry["same_mean"] > entry["other_mean"]


def brute_force_pairs(features: np.ndarray, labels: np.ndarray, variant: str):
    """Every pair's cosine and same-class flag, all at once (the small-data reference)."""
    unit = features.astype(np.float64)
    if variant == "centred":
        unit = unit - unit.mean(axis=0)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    first, second = np.triu_indices(len(unit), k=1)
    return np.einsum("pd,pd->p", unit[first], unit[second]), labels[first] == labels[second]


@pytest.mark.parametrize("variant", ["raw", "centred"])
def test_pair_histogram_equals_all_pairs_at_once_in_chunks(variant):
    generator = np.random.default_rng(3)
    features = generator.normal(size=(300, 8)) + 2.0  # a common offset: raw cosines sit high
    labels = generator.integers(0, 6, size=300)
    cosine, same = brute_force_pairs(features, labels, variant)
    edges = np.histogram_bin_edges(cosine, bins=20)
    pairs = pair_histogram(features, labels, variant, bins=20, memory_mb=0.05)  # chunks of a few rows
    np.testing.assert_allclose(pairs.edges, edges)
    assert pairs.same_counts.tolist() == np.histogram(cosine[same], bins=edges)[0].tolist()
    assert pairs.other_counts.tolist() == np.histogram(cosine[~same], bins=edges)[0].tolist()
    assert pairs.same_mean == pytest.approx(cosine[same].mean()) and pairs.other_mean == pytest.approx(cosine[~same].mean())
    exact = roc_auc_score(same, cosine)
    assert 0 < pairs.auc_error_bound < 1e-4 and abs(pairs.auc - exact) <= pairs.auc_error_bound
    if variant == "raw":
        assert cosine.mean() > 0.6  # the offset that the centred variant removes


def test_pair_histogram_memory_is_bounded_by_the_budget_not_the_pairs():
    """4,000 vectors are 8 million pairs: their vectors side by side would take 8 GB, their
    cosines 64 MB. Every allocation numpy makes is traced."""
    generator = np.random.default_rng(4)
    features = generator.normal(size=(4000, 64)).astype(np.float32)
    labels = generator.integers(0, 101, size=4000)
    budget_mb = 8
    tracemalloc.start()
    try:
        pairs = pair_histogram(features, labels, "raw", memory_mb=budget_mb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pairs.same_pairs + pairs.other_pairs == 4000 * 3999 // 2
    fixed = features.size * 8 + 2 * 50 * FINE_BINS_PER_BIN * 8  # the float64 unit rows and the fine counts
    assert peak < budget_mb * 2 ** 20 + fixed + 2 ** 20, peak / 2 ** 20


def test_per_class_gains(tmp_path):
    baseline = {"Archery": 0.5, "Bowling": 0.5, "Diving": 0.9, "Fencing": 0.2, "Surfing": 0.6, "Yoyo": 0.1}
    improved = {"Archery": 0.75, "Bowling": 0.5, "Diving": 0.7, "Fencing": 0.6, "Surfing": 0.55}
    summary = per_class_gains(baseline, improved, tmp_path / "gains.png", tmp_path / "gains.csv", extremes=2)
    assert summary["classes"] == 5 and (summary["gains"], summary["losses"], summary["unchanged"]) == (2, 2, 1)
    assert summary["mean_gain"] == pytest.approx((0.25 + 0.0 - 0.2 + 0.4 - 0.05) / 5)
    assert_image(tmp_path / "gains.png")
    rows = read_csv(tmp_path / "gains.csv")
    assert [row["class"] for row in rows] == ["Fencing", "Archery", "Bowling", "Surfing", "Diving"]
    assert float(rows[0]["gain"]) == pytest.approx(0.4) and float(rows[0]["baseline"]) == 0.2


def test_relative_similarities_per_row():
    similarity = np.array([[0.2, 0.4, 0.6], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(relative_similarities(similarity), [[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]])


def test_alignment_heatmaps_and_same_class_pairs(tiny, tmp_path):
    pairs = same_class_pairs(tiny, 3, seed=0)
    assert len(pairs) == 3 and pairs == same_class_pairs(tiny, 3, seed=0)
    label_of = dict(zip(tiny.video_ids.tolist(), tiny.labels.tolist()))
    assert all(first != second and label_of[first] == label_of[second] for first, second in pairs)
    assert len({label_of[first] for first, _ in pairs}) == 3  # from different classes first
    assert len(same_class_pairs(tiny, 10)) == 5  # two test videos per class: one pair each

    summary = alignment_heatmaps(tiny, pairs, TINY_NAMES, tmp_path / "align.png", tmp_path / "align.json", sigma=0)
    assert summary == {"pairs": 3}
    assert_image(tmp_path / "align.png")
    data = json.loads((tmp_path / "align.json").read_text())
    entry = data["pairs"][0]
    first, second = (list(tiny.block_video_ids).index(video_id) for video_id in pairs[0])
    blocks_a, blocks_b = tiny.blocks[first], tiny.blocks[second]
    expected = (blocks_a / np.linalg.norm(blocks_a, axis=1, keepdims=True)) @ \
        (blocks_b / np.linalg.norm(blocks_b, axis=1, keepdims=True)).T
    np.testing.assert_allclose(entry["cosine"], expected, atol=1e-5)
    np.testing.assert_allclose(entry["displayed"], relative_similarities(np.array(entry["cosine"])))
    assert np.array(entry["displayed"]).shape == (18, 18) and entry["first_class"] == TINY_NAMES[label_of[pairs[0][0]]]

    alignment_heatmaps(tiny, pairs[:1], TINY_NAMES, tmp_path / "smooth.png", tmp_path / "smooth.json")
    smoothed = np.array(json.loads((tmp_path / "smooth.json").read_text())["pairs"][0]["displayed"])
    assert smoothed.std() < np.array(entry["displayed"]).std()
    with pytest.raises(ValueError, match="no block features for \\['v000'\\]"):
        alignment_heatmaps(tiny, [("v000", "v002")], TINY_NAMES, tmp_path / "x.png", tmp_path / "x.json")


def test_nearest_neighbour_figure(tiny, tmp_path):
    rows = nearest_neighbours([tiny], k=3, queries=["v002", "v007"])

    def frame(video_id):
        shade = int(video_id[1:]) * 12
        image = np.zeros((24, 32, 3), dtype=np.uint8)
        image[:, :16] = shade
        image[:, 16:, 1] = 255 - shade
        return image

    summary = nearest_neighbour_figure(rows, frame, TINY_NAMES, tmp_path / "nn.png", tmp_path / "nn.json")
    assert summary["queries"] == 2 and summary["neighbours"] == 6 and summary["same_class"] >= 2
    assert_image(tmp_path / "nn.png")
    data = json.loads((tmp_path / "nn.json").read_text())
    assert data[0]["query"] == "v002" and data[0]["query_class"] == TINY_NAMES[0]
    assert data[0]["neighbours"][0]["class"] == TINY_NAMES[data[0]["neighbours"][0]["label"]]


def test_training_curves_of_pretraining_and_finetuning(tmp_path):
    pretrain, finetune = tmp_path / "pretrain" / "metrics.csv", tmp_path / "finetune" / "metrics.csv"
    pretrain.parent.mkdir()
    finetune.parent.mkdir()
    write_metrics(pretrain, [{"epoch": epoch, "lr": 1e-3, "loss": 5.0 - epoch, "cpc/rgb": 2.0, "top1/rgb": 0.1 * epoch,
                              "val_loss": 5.5 - epoch, "val_top1/rgb": 0.05 * epoch, "seconds": 3.0,
                              "clips_per_s": 10.0, "val_seconds": 0.5} for epoch in range(3)])
    write_metrics(finetune, [{"epoch": epoch, "lr": 1e-3 / (epoch + 1), "loss": 2.0 / (epoch + 1),
                              "train_top1": 0.2 * epoch, "val_top1": 0.1 * epoch, "seconds": 4.0} for epoch in range(4)])
    summary = training_curves({"cocon": pretrain, "finetune rgb": finetune}, tmp_path / "curves.png",
                              tmp_path / "curves.csv")
    assert summary == {"cocon": 3, "finetune rgb": 4}
    assert_image(tmp_path / "curves.png")
    rows = read_csv(tmp_path / "curves.csv")
    assert list(rows[0]) == ["run", "epoch", "metric", "value"]
    assert len(rows) == 3 * 9 + 4 * 5
    assert {"run": "finetune rgb", "epoch": "3", "metric": "val_top1", "value": str(0.1 * 3)} in rows
    with pytest.raises(FileNotFoundError, match="missing/metrics.csv"):
        training_curves({"gone": tmp_path / "missing" / "metrics.csv"}, tmp_path / "x.png", tmp_path / "x.csv")
