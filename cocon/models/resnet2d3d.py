"""ResNet-2d3d encoders, built as DPC (Han, Xie, Zisserman 2019) builds them.

The first two stages see one frame at a time (1x3x3 kernels) and the last two mix
time as well (3x3x3 kernels); the last stage is cut from 512 to 256 channels. An input
block of C x 5 x 128 x 128 comes out as 256 x 2 x 4 x 4.
"""

from torch import nn

BASE_WIDTHS = (64, 128, 256, 256)
SPATIAL_STAGES = 2


def _conv1x3x3(in_planes, out_planes, stride=1):
    return nn.Conv3d(
        in_planes,
        out_planes,
        kernel_size=(1, 3, 3),
        stride=(1, stride, stride),
        padding=(0, 1, 1),
        bias=False,
    )


def _conv3x3x3(in_planes, out_planes, stride=1):
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two convolutions with a residual shortcut.

    `temporal` selects 3x3x3 kernels that stride in time too; otherwise 1x3x3 kernels
    stride in space only. `final_relu=False` leaves the output unbounded, which DPC
    uses for the network's last block so that features can be negative.
    """

    def __init__(self, in_planes, planes, stride=1, temporal=False, final_relu=True):
        super().__init__()
        conv = _conv3x3x3 if temporal else _conv1x3x3
        self.conv1 = conv(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.final_relu = final_relu
        if stride != 1 or in_planes != planes:
            shortcut_stride = stride if temporal else (1, stride, stride)
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_planes, planes, kernel_size=1, stride=shortcut_stride, bias=False),
                nn.BatchNorm3d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu(out) if self.final_relu else out


class ResNet2d3d(nn.Module):
    """Encoder f: `[B, C, T, H, W]` -> `[B, D, T', H/32, W/32]`.

    `width` scales every channel count (1.0 gives 64/128/256/256), so that tests can
    build a narrow encoder with the same structure.
    """

    def __init__(self, blocks_per_stage, in_channels=3, width=1.0):
        super().__init__()
        if len(blocks_per_stage) != len(BASE_WIDTHS):
            raise ValueError(f"need {len(BASE_WIDTHS)} stages, got {blocks_per_stage}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        widths = [max(1, round(base * width)) for base in BASE_WIDTHS]
        self.feature_size = widths[-1]

        self.stem = nn.Sequential(
            nn.Conv3d(
                in_channels,
                widths[0],
                kernel_size=(1, 7, 7),
                stride=(1, 2, 2),
                padding=(0, 3, 3),
                bias=False,
            ),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )

        stages = []
        in_planes = widths[0]
        last_stage = len(widths) - 1
        for stage, (planes, num_blocks) in enumerate(zip(widths, blocks_per_stage)):
            blocks = []
            for index in range(num_blocks):
                is_network_output = stage == last_stage and index == num_blocks - 1
                blocks.append(
                    BasicBlock(
                        in_planes,
                        planes,
                        stride=2 if stage > 0 and index == 0 else 1,
                        temporal=stage >= SPATIAL_STAGES,
                        final_relu=not is_network_output,
                    )
                )
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.stages(self.stem(x))


def resnet18_2d3d(in_channels=3, width=1.0):
    return ResNet2d3d([2, 2, 2, 2], in_channels=in_channels, width=width)


def resnet34_2d3d(in_channels=3, width=1.0):
    return ResNet2d3d([3, 4, 6, 3], in_channels=in_channels, width=width)


ENCODERS = {"resnet18": resnet18_2d3d, "resnet34": resnet34_2d3d}
