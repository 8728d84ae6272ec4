"""Deep residual networks (He, Zhang, Ren & Sun, 2016) with torchvision's layout.

A residual block computes ``relu(F(x) + shortcut(x))``: its layers learn the
residual F(x) = H(x) - x instead of the whole mapping H(x), so a block that
has nothing to add can stay close to the identity. The shortcut is ``x``
itself, or a 1x1 convolution + BN (a *projection*) where the block changes
the number of channels or the resolution.

    BasicBlock   3x3 conv - BN - ReLU - 3x3 conv - BN           expansion 1
    Bottleneck   1x1 conv - BN - ReLU - 3x3 conv - BN - ReLU    expansion 4
                 - 1x1 conv - BN (stride on the 3x3, as torchvision's "v1.5")

``resnet18``, ``resnet34`` and ``resnet50`` have torchvision's parameter
counts and ``state_dict`` keys, so a torchvision checkpoint loads into them.
``CifarResNet`` is the paper's 6n+2-layer network for small images and, with
``residual=False``, its plain twin with exactly the same parameters.

The graded bodies lie between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
the argument checks before them stay in the exercise.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import check_image


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BN follows it)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                     bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BN follows it)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _check_block_args(name: str, inplanes, planes, stride, downsample, expansion: int) -> None:
    for value, what in [(inplanes, "inplanes"), (planes, "planes"), (stride, "stride")]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")
    if downsample is not None and not isinstance(downsample, nn.Module):
        raise TypeError(f"{name}: downsample must be an nn.Module or None, "
                        f"got {type(downsample).__name__}")
    if downsample is None and (stride != 1 or inplanes != planes * expansion):
        raise ValueError(
            f"{name}({inplanes}, {planes}, stride={stride}) changes the shape from "
            f"{inplanes} to {planes * expansion} channels or the resolution, so x cannot "
            f"be added to the output: pass a downsample (1x1 conv + BN) for the shortcut")


class BasicBlock(nn.Module):
    """The two-layer residual block of ResNet-18 and ResNet-34: ``relu(F(x) + s(x))``.

    The residual branch is ``F(x) = bn2(conv2(relu(bn1(conv1(x)))))``.

    Args:
        inplanes: input channels.
        planes: output channels (``planes * expansion``, with ``expansion = 1``).
        stride: stride of ``conv1``; with stride 2 the block halves H and W.
        downsample: the shortcut ``s`` (a module mapping ``(N, inplanes, H, W)``
            to the output's shape, torchvision's 1x1 conv + BN), or None for
            the identity. Needed whenever the block changes the shape.

    Shapes: ``(N, inplanes, H, W) -> (N, planes, H', W')`` with
    ``H' = (H - 1) // stride + 1`` (the same for W).

    Submodules, named as torchvision's so state dicts interchange: ``conv1``
    (3x3, stride), ``bn1``, ``relu``, ``conv2`` (3x3), ``bn2``, ``downsample``.
    Convolutions have no bias: the BN after each has one.
    """
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        _check_block_args("BasicBlock", inplanes, planes, stride, downsample, self.expansion)
        self.inplanes = inplanes
        ### BEGIN SOLUTION
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.inplanes, "BasicBlock")
        ### BEGIN SOLUTION
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)
        ### END SOLUTION


class Bottleneck(nn.Module):
    """The three-layer bottleneck block of ResNet-50 and deeper.

    A 1x1 conv reduces ``inplanes`` to ``planes`` channels, a 3x3 conv works
    at that width (and carries the stride, as torchvision's "ResNet v1.5"),
    and a 1x1 conv expands to ``planes * 4``; BN follows every conv, ReLU
    follows the first two and the sum with the shortcut.

    Args:
        inplanes: input channels.
        planes: the bottleneck's width; the output has ``planes * expansion``
            channels, ``expansion = 4``.
        stride: stride of ``conv2``, the 3x3 conv.
        downsample: the shortcut (1x1 conv + BN) or None for the identity;
            needed whenever ``stride != 1`` or ``inplanes != planes * 4``.

    Shapes: ``(N, inplanes, H, W) -> (N, 4 * planes, H', W')``,
    ``H' = (H - 1) // stride + 1``.

    Submodules: ``conv1`` (1x1), ``bn1``, ``conv2`` (3x3, stride), ``bn2``,
    ``conv3`` (1x1), ``bn3``, ``relu``, ``downsample``; convolutions without bias.
    """
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        _check_block_args("Bottleneck", inplanes, planes, stride, downsample, self.expansion)
        self.inplanes = inplanes
        ### BEGIN SOLUTION
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.inplanes, "Bottleneck")
        ### BEGIN SOLUTION
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)
        ### END SOLUTION


def make_layer(block, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """One stage of a ResNet: ``blocks`` blocks, the first of which may downsample.

    The first block takes ``inplanes`` channels and the ``stride``; it gets a
    projection shortcut ``nn.Sequential(conv1x1(inplanes, planes * expansion,
    stride), nn.BatchNorm2d(planes * expansion))`` when ``stride != 1`` or
    ``inplanes != planes * block.expansion``, and the identity otherwise. The
    other ``blocks - 1`` blocks map ``planes * expansion`` channels to
    themselves with stride 1 and identity shortcuts. (torchvision's
    ``ResNet._make_layer``.)

    Returns:
        ``nn.Sequential`` of the blocks, indexed ``0 .. blocks - 1``:
        ``(N, inplanes, H, W) -> (N, planes * expansion, H', W')``.
    """
    if not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"make_layer: blocks must be a positive int, got {blocks!r}")
    ### BEGIN SOLUTION
    width = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != width:
        downsample = nn.Sequential(conv1x1(inplanes, width, stride), nn.BatchNorm2d(width))
    return nn.Sequential(block(inplanes, planes, stride, downsample),
                         *[block(width, planes) for _ in range(blocks - 1)])
    ### END SOLUTION


class ResNet(nn.Module):
    """ResNet for 224x224 ImageNet images, torchvision's ``ResNet``.

    stem: ``conv1`` (7x7, 64 channels, stride 2, padding 3, no bias), ``bn1``,
    ``relu``, ``maxpool`` (3x3, stride 2, padding 1); then ``layer1`` ..
    ``layer4``, stages of ``layers[i]`` blocks with ``planes`` 64, 128, 256,
    512 and strides 1, 2, 2, 2 (``make_layer``); then ``avgpool`` (global
    average pooling, ``nn.AdaptiveAvgPool2d(1)``) and ``fc``, a linear layer
    from ``512 * block.expansion`` features to ``num_classes``.

    Initialisation: every conv ``kaiming_normal_(mode="fan_out",
    nonlinearity="relu")``, every BN weight 1 and bias 0, ``fc`` PyTorch's
    default. With ``zero_init_residual`` the last BN of each residual branch
    (``bn2`` of a BasicBlock, ``bn3`` of a Bottleneck) starts at weight 0, so
    every block starts as the identity (Goyal et al., 2017).

    Shapes: ``(N, 3, H, W) -> (N, num_classes)``; H and W are divided by 32
    before the pooling (224 -> 7).
    """

    def __init__(self, block, layers, num_classes: int = 1000, zero_init_residual: bool = False):
        super().__init__()
        if not (isinstance(block, type) and issubclass(block, nn.Module)
                and hasattr(block, "expansion")):
            raise TypeError(f"ResNet: block must be a block class with an 'expansion', "
                            f"such as BasicBlock or Bottleneck, got {block!r}")
        if len(layers) != 4 or not all(isinstance(n, int) and n >= 1 for n in layers):
            raise ValueError(f"ResNet: layers must be 4 positive block counts, got {layers!r}")
        ### BEGIN SOLUTION
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
            self.add_module(f"layer{index + 1}",
                            make_layer(block, inplanes, planes, layers[index], stride))
            inplanes = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, 3, "ResNet")
        ### BEGIN SOLUTION
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
        ### END SOLUTION


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18: BasicBlocks [2, 2, 2, 2], 11,689,512 parameters."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-34: BasicBlocks [3, 4, 6, 3], 21,797,672 parameters."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50: Bottlenecks [3, 4, 6, 3], 25,557,032 parameters."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model``.

    A parameter shared by two layers counts once; buffers (BN's running
    statistics, ``num_batches_tracked``) are not parameters and do not count.
    With ``trainable_only``, parameters with ``requires_grad=False`` are left out.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters: expected an nn.Module, got {type(model).__name__}")
    ### BEGIN SOLUTION
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
    ### END SOLUTION


def count_macs(model: nn.Module, input_size) -> int:
    """Multiply-accumulates of one forward pass on an input of ``input_size``.

    Counts convolutions (``out.numel() * in_channels / groups * kh * kw``)
    and linear layers (``out.numel() * in_features``), the layers that hold
    nearly all the work; BN, ReLU, pooling and the additions are left out, as
    in the GFLOPS torchvision reports for its models.
    """
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs.append(output.numel() * module.in_channels // module.groups * kh * kw)
        else:
            macs.append(output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_size))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return sum(macs)


class PadShortcut(nn.Module):
    """The paper's parameter-free shortcut "option A": subsample, then zero-pad channels.

    ``(N, C, H, W) -> (N, planes, H', W')`` with ``x[:, :, ::stride, ::stride]``
    and ``planes - C`` zero channels appended.
    """

    def __init__(self, planes: int, stride: int):
        super().__init__()
        self.planes, self.stride = planes, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.planes - x.shape[1]))


class PlainBlock(BasicBlock):
    """A BasicBlock without its shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))))``.

    Takes (and ignores) a ``downsample`` so it drops into the same stages.
    """

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class CifarResNet(nn.Module):
    """The paper's CIFAR-10 network (section 4.2): 6n + 2 weighted layers.

    A 3x3 conv to 16 channels + BN + ReLU, three stages of ``n`` two-layer
    blocks with 16, 32 and 64 channels (the second and third halve H and W),
    global average pooling and a linear classifier. Stage transitions use the
    parameter-free shortcut "option A", so with ``residual=False`` (blocks
    without shortcuts, the plain net) the network has exactly the same
    parameters: the twins differ only in the shortcuts.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``.
    """

    def __init__(self, n: int, residual: bool = True, in_channels: int = 3,
                 num_classes: int = 10, widths=(16, 32, 64)):
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"CifarResNet: n must be a positive int, got {n!r}")
        block = BasicBlock if residual else PlainBlock
        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, inplanes = [], widths[0]
        for index, planes in enumerate(widths):
            stride = 1 if index == 0 else 2
            shortcut = PadShortcut(planes, stride) if stride != 1 or inplanes != planes else None
            stages.append(nn.Sequential(block(inplanes, planes, stride, shortcut),
                                        *[block(planes, planes) for _ in range(n - 1)]))
            inplanes = planes
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))
