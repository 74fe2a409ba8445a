import math

import pytest
import torch
from torch import nn

from cocon.losses import dense_nce, dense_nce_accuracy
from cocon.models import DPC, Classifier, ConvGRU, resnet18_2d3d, resnet34_2d3d

RESNET18_DPC_PARAMETERS = {
    "total": 14_583_104,
    "encoder": 14_057_536,
    "aggregator": 393_984,
    "predictor": 131_584,
}


def count_parameters(module):
    return sum(param.numel() for param in module.parameters())


def parameter_counts(model):
    return {
        "total": count_parameters(model),
        "encoder": count_parameters(model.encoder),
        "aggregator": count_parameters(model.aggregator),
        "predictor": count_parameters(model.predictor),
    }


def encoder_parameters_by_hand(in_channels, blocks_per_stage, widths=(64, 128, 256, 256)):
    """Parameters of a ResNet-2d3d counted from DESIGN.md section 4, independently of
    the module code: convs have no bias, a BatchNorm has 2 per channel."""

    def batch_norm(channels):
        return 2 * channels

    total = in_channels * widths[0] * 7 * 7 + batch_norm(widths[0])
    in_planes = widths[0]
    for stage, (planes, num_blocks) in enumerate(zip(widths, blocks_per_stage)):
        kernel_taps = 1 * 3 * 3 if stage < 2 else 3 * 3 * 3
        for index in range(num_blocks):
            total += in_planes * planes * kernel_taps + batch_norm(planes)
            total += planes * planes * kernel_taps + batch_norm(planes)
            downsamples = stage > 0 and index == 0
            if downsamples or in_planes != planes:
                total += in_planes * planes + batch_norm(planes)
            in_planes = planes
    return total


def tiny_dpc(**overrides):
    settings = {"width": 0.125, "num_blocks": 4, "pred_steps": 2}
    settings.update(overrides)
    return DPC(**settings)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # these small convolutions gain little from threads, and on a busy machine threads
    # that wait for each other make them many times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def resnet18_dpc():
    torch.manual_seed(0)
    return DPC(backbone="resnet18", in_channels=3)


@pytest.mark.parametrize("size, locations", [(128, 4), (64, 2)])
def test_resnet18_dpc_has_the_published_parameter_count_at_any_input_size(
    resnet18_dpc, size, locations
):
    with torch.no_grad():
        pred, gt, z = resnet18_dpc(torch.randn(1, 8, 3, 5, size, size))

    assert pred.shape == gt.shape == (1, 3, 256, locations, locations)
    assert z.shape == (1, 8, 256, locations, locations)
    assert parameter_counts(resnet18_dpc) == RESNET18_DPC_PARAMETERS


def test_hand_count_of_the_encoder_matches_the_published_count():
    assert encoder_parameters_by_hand(3, [2, 2, 2, 2]) == RESNET18_DPC_PARAMETERS["encoder"]


@pytest.mark.parametrize("in_channels", [1, 2, 3, 17])
@pytest.mark.parametrize(
    "build, blocks_per_stage", [(resnet18_2d3d, [2, 2, 2, 2]), (resnet34_2d3d, [3, 4, 6, 3])]
)
def test_encoder_parameter_count(build, blocks_per_stage, in_channels):
    encoder = build(in_channels=in_channels)

    assert count_parameters(encoder) == encoder_parameters_by_hand(in_channels, blocks_per_stage)


def test_encoder_output_at_5x128x128_is_256x2x4x4_and_unbounded_below():
    torch.manual_seed(0)
    encoder = resnet18_2d3d()

    with torch.no_grad():
        features = encoder(torch.randn(2, 3, 5, 128, 128))

    assert features.shape == (2, 256, 2, 4, 4)
    assert (features < 0).any(), "the last block must not end with a ReLU"


def test_encoder_stages_follow_the_2d3d_layout():
    encoder = resnet18_2d3d()
    stem_conv = encoder.stem[0]
    stage_kernels = [(1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3)]
    stage_strides = [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)]

    assert (stem_conv.kernel_size, stem_conv.stride, stem_conv.padding) == (
        (1, 7, 7),
        (1, 2, 2),
        (0, 3, 3),
    )
    assert isinstance(encoder.stem[3], nn.MaxPool3d)
    for stage, kernel, stride in zip(encoder.stages, stage_kernels, stage_strides):
        first_block = stage[0]
        assert first_block.conv1.kernel_size == first_block.conv2.kernel_size == kernel
        assert first_block.conv1.stride == stride
    final_relus = [block.final_relu for stage in encoder.stages for block in stage]
    assert final_relus == [True] * 7 + [False]
    shortcut_convs = [
        block.shortcut[0]
        for stage in encoder.stages
        for block in stage
        if isinstance(block.shortcut, nn.Sequential)
    ]
    assert [conv.stride for conv in shortcut_convs] == stage_strides[1:]
    assert all(conv.kernel_size == (1, 1, 1) for conv in shortcut_convs)


def test_initialisation_follows_dpc(resnet18_dpc):
    batch_norms = [m for m in resnet18_dpc.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all((bn.weight == 1).all() and (bn.bias == 0).all() for bn in batch_norms)

    # kaiming_normal_ with mode="fan_out": std = sqrt(2 / (out_channels * kernel taps));
    # this conv has 128 input channels, so fan_in would give a std sqrt(2) larger
    conv = resnet18_dpc.encoder.stages[2][0].conv1
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 27)), rel=0.02)

    gate = resnet18_dpc.aggregator.cell.update_gate
    rows = gate.weight.reshape(256, -1)
    assert torch.allclose(rows @ rows.T, torch.eye(256), atol=1e-4)
    assert (gate.bias == 0).all()


@pytest.mark.parametrize("in_channels", [1, 2, 17])
def test_full_width_dpc_on_64px_views(in_channels):
    torch.manual_seed(0)
    model = DPC(in_channels=in_channels)
    blocks = torch.randn(1, 8, in_channels, 5, 64, 64)

    with torch.no_grad():
        pred, gt, z = model(blocks)
        context = model.context(blocks)

    assert pred.shape == gt.shape == (1, 3, 256, 2, 2)
    assert z.shape == (1, 8, 256, 2, 2)
    assert context.shape == (1, 256, 2, 2)
    assert torch.equal(gt, z[:, 5:])


def test_tiny_flow_dpc_at_128px():
    torch.manual_seed(0)
    model = tiny_dpc(in_channels=2, num_blocks=8, pred_steps=3)

    with torch.no_grad():
        pred, gt, z = model(torch.randn(2, 8, 2, 5, 128, 128))

    assert pred.shape == gt.shape == (2, 3, 32, 4, 4)
    assert z.shape == (2, 8, 32, 4, 4)


def test_normalised_variant_has_unit_features_predictions_and_context():
    torch.manual_seed(0)
    model = tiny_dpc(normalize=True)
    blocks = torch.randn(2, 4, 3, 5, 64, 64)

    with torch.no_grad():
        pred, gt, z = model(blocks)
        context = model.context(blocks)

    for name, tensor, channel_dim in [("pred", pred, 2), ("z", z, 2), ("context", context, 1)]:
        norms = tensor.norm(dim=channel_dim)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), name


def test_block_features_are_the_encoder_output_averaged_over_time():
    torch.manual_seed(0)
    model = tiny_dpc().eval()
    blocks = torch.randn(2, 4, 3, 5, 32, 32)

    with torch.no_grad():
        z = model.encode(blocks)
        features = model.encoder(blocks.reshape(8, 3, 5, 32, 32))

    assert features.shape[2] == 2
    assert torch.allclose(z, features.mean(dim=2).reshape(2, 4, 32, 1, 1), atol=1e-6)


def record_inputs(module):
    inputs = []
    module.register_forward_pre_hook(lambda _, args: inputs.append(args[0].detach()))
    return inputs


def test_normalised_variant_feeds_unit_vectors_to_aggregator_and_predictor():
    torch.manual_seed(0)
    model = tiny_dpc(normalize=True, num_blocks=6, pred_steps=3)
    aggregator_inputs = record_inputs(model.aggregator)
    predictor_inputs = record_inputs(model.predictor)

    with torch.no_grad():
        model(torch.randn(2, 6, 3, 5, 64, 64))

    assert len(aggregator_inputs) == 1 + 3 and len(predictor_inputs) == 3
    for sequence in aggregator_inputs:
        assert torch.allclose(sequence.norm(dim=2), torch.ones(sequence.shape[:2] + (2, 2)))
    for context in predictor_inputs:
        assert torch.allclose(context.norm(dim=1), torch.ones(2, 2, 2))


def test_plain_dpc_feeds_relu_features_to_the_aggregator():
    torch.manual_seed(0)
    model = tiny_dpc()
    aggregator_inputs = record_inputs(model.aggregator)

    with torch.no_grad():
        _, _, z = model(torch.randn(2, 4, 3, 5, 64, 64))

    assert (z < 0).any()
    assert torch.equal(aggregator_inputs[0], z[:, :2].clamp(min=0))
    assert all((sequence >= 0).all() for sequence in aggregator_inputs)


def test_plain_dpc_is_not_normalised():
    torch.manual_seed(0)
    model = tiny_dpc()

    with torch.no_grad():
        pred, _, z = model(torch.randn(2, 4, 3, 5, 64, 64))

    assert not torch.allclose(z.norm(dim=2), torch.ones(2, 4, 2, 2), atol=1e-2)
    assert not torch.allclose(pred.norm(dim=2), torch.ones(2, 2, 2, 2), atol=1e-2)


def test_predictions_depend_only_on_the_observed_blocks():
    torch.manual_seed(0)
    # eval mode: in training, BatchNorm statistics would mix every block of the batch
    model = tiny_dpc(num_blocks=5, pred_steps=3).eval()
    blocks = torch.randn(2, 5, 3, 5, 32, 32)
    future_changed = blocks.clone()
    future_changed[:, 2:] = torch.randn(2, 3, 3, 5, 32, 32)
    past_changed = blocks.clone()
    past_changed[:, 0] = torch.randn(2, 3, 5, 32, 32)

    with torch.no_grad():
        pred, gt, _ = model(blocks)
        pred_future_changed, gt_future_changed, _ = model(future_changed)
        pred_past_changed, _, _ = model(past_changed)

    assert torch.allclose(pred, pred_future_changed)
    assert not torch.allclose(gt, gt_future_changed)
    assert not torch.allclose(pred, pred_past_changed)


def test_configurable_hidden_size():
    torch.manual_seed(0)
    model = tiny_dpc(hidden=48)
    blocks = torch.randn(2, 4, 3, 5, 64, 64)

    with torch.no_grad():
        pred, _, _ = model(blocks)
        context = model.context(blocks)

    assert pred.shape == (2, 2, 32, 2, 2)
    assert context.shape == (2, 48, 2, 2)


@pytest.mark.parametrize("normalize", [False, True])
def test_every_parameter_receives_gradient(normalize):
    torch.manual_seed(0)
    model = tiny_dpc(normalize=normalize)
    pred, gt, _ = model(torch.randn(2, 4, 3, 5, 64, 64))

    dense_nce(pred, gt, temperature=0.07**2 if normalize else 1.0).backward()

    for part in ("encoder", "aggregator", "predictor"):
        for name, param in getattr(model, part).named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{part}.{name}"


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 3, 5, 32, 32), (2, 5, 3, 5, 32, 32), (2, 3, 5, 32, 32)],
    ids=["too-few-blocks", "too-many-blocks", "missing-block-axis"],
)
def test_forward_rejects_inputs_of_the_wrong_shape(shape):
    model = tiny_dpc()

    with pytest.raises(ValueError):
        model(torch.randn(*shape))


@pytest.mark.parametrize(
    "settings",
    [{"pred_steps": 4}, {"pred_steps": 0}, {"backbone": "resnet50"}],
    ids=["nothing-observed", "nothing-predicted", "unknown-backbone"],
)
def test_invalid_settings_are_refused(settings):
    with pytest.raises(ValueError):
        tiny_dpc(**settings)


def test_convgru_parameter_count_and_steps():
    torch.manual_seed(0)
    gru = ConvGRU(256, 256, kernel_size=1).eval()
    inputs = torch.randn(2, 3, 256, 2, 2)

    with torch.no_grad():
        final = gru(inputs)
        stepwise = None
        for step in range(3):
            stepwise = gru(inputs[:, step : step + 1], stepwise)

    assert count_parameters(gru) == RESNET18_DPC_PARAMETERS["aggregator"]
    assert final.shape == (2, 256, 2, 2)
    assert torch.allclose(final, stepwise)
    assert torch.allclose(gru(inputs[:, :1]), gru(inputs[:, :1], torch.zeros(2, 256, 2, 2)))


def test_convgru_drops_out_the_hidden_state_in_training_only():
    torch.manual_seed(0)
    gru = ConvGRU(8, 16, dropout=0.5)
    inputs = torch.randn(4, 2, 8, 3, 3)

    with torch.no_grad():
        trained = gru(inputs)
        gru.eval()
        evaluated = gru(inputs)

    assert (trained == 0).float().mean() > 0.3
    assert (evaluated == 0).float().mean() < 0.01


def test_tiny_dpc_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_dpc(num_blocks=3, pred_steps=1)
    blocks = torch.randn(8, 3, 3, 3, 32, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def evaluate():
        model.eval()
        with torch.no_grad():
            pred, gt, _ = model(blocks)
        model.train()
        return dense_nce(pred, gt).item(), dense_nce_accuracy(pred, gt).item()

    loss_before, accuracy_before = evaluate()
    for _ in range(60):
        pred, gt, _ = model(blocks)
        loss = dense_nce(pred, gt)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss_after, accuracy_after = evaluate()

    assert loss_after < 0.25 * loss_before
    assert accuracy_after >= 0.875 > accuracy_before


def test_classifier_head_is_dpcs_batchnorm_dropout_linear():
    torch.manual_seed(0)
    backbone = tiny_dpc()
    model = Classifier(backbone, num_classes=5, dropout=0.7)
    hidden = backbone.hidden_size
    assert [type(layer) for layer in model.head] == [nn.BatchNorm1d, nn.Dropout, nn.Linear]
    norm, dropout, linear = model.head
    # DPC's LC: final_bn starts at weight 1, bias 0; final_fc is orthogonal with zero bias
    assert norm.num_features == hidden
    assert torch.equal(norm.weight, torch.ones(hidden)) and torch.equal(norm.bias, torch.zeros(hidden))
    assert dropout.p == 0.7
    assert (linear.in_features, linear.out_features) == (hidden, 5)
    assert torch.allclose(linear.weight @ linear.weight.T, torch.eye(5), atol=1e-5)
    assert torch.equal(linear.bias, torch.zeros(5))
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, 4, 3, 5, 32, 32))
    assert logits.shape == (2, 5)
