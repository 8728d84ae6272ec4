"""An independent ResNet forward pass, computed with torch.nn.functional from a
state_dict laid out as torchvision's (``resnet_layout``).

The hidden tests load one random state_dict into a submission's module and
compare its output with ``reference_resnet`` on the same state; the test
suite checks ``solutions.resnet`` against it the same way. The ResNet item's
hidden tests build networks from ``ReferenceBasicBlock``, ``ReferenceBottleneck``
and ``reference_make_layer``, so they do not depend on a student's blocks; where only
the layout and the initial BN weights count, from ``LayoutBasicBlock`` and
``LayoutBottleneck``, whose convolution weights are never drawn.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def random_state(shapes, dtype=torch.float64):
    """A state_dict with the given layout: random weights, positive BN scales and variances."""
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(3)
        elif key.endswith(("running_var", "weight")) and len(shape) == 1:
            state[key] = torch.rand(shape, dtype=dtype) + 0.5
        else:
            state[key] = torch.randn(shape, dtype=dtype) / math.prod(shape[1:]) ** 0.5
    return state


def _bn(state, prefix, x, training):
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], training)


def reference_block(state, x, stride=1, training=True, prefix=""):
    """A block from its state: BasicBlock or Bottleneck, told apart by conv3.

    In training mode the state's running statistics are updated in place,
    as the module's buffers would be.
    """
    names = ["conv1", "conv2", "conv3"] if f"{prefix}conv3.weight" in state else ["conv1", "conv2"]
    strided = "conv1" if len(names) == 2 else "conv2"
    out = x
    for index, name in enumerate(names):
        weight = state[f"{prefix}{name}.weight"]
        out = F.conv2d(out, weight, stride=stride if name == strided else 1,
                       padding=weight.shape[-1] // 2)
        out = _bn(state, f"{prefix}bn{name[-1]}", out, training)
        if index < len(names) - 1:
            out = F.relu(out)
    shortcut = x
    if f"{prefix}downsample.0.weight" in state:
        shortcut = F.conv2d(x, state[f"{prefix}downsample.0.weight"], stride=stride)
        shortcut = _bn(state, f"{prefix}downsample.1", shortcut, training)
    return F.relu(out + shortcut)


def reference_layer(state, x, blocks, stride=1, training=True, prefix=""):
    for index in range(blocks):
        x = reference_block(state, x, stride if index == 0 else 1, training, f"{prefix}{index}.")
    return x


def reference_resnet(state, x, layers, training=True):
    x = F.relu(_bn(state, "bn1", F.conv2d(x, state["conv1.weight"], stride=2, padding=3),
                   training))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for index, blocks in enumerate(layers):
        x = reference_layer(state, x, blocks, 1 if index == 0 else 2, training,
                            f"layer{index + 1}.")
    return F.linear(x.mean((2, 3)), state["fc.weight"], state["fc.bias"])


def block_convs(expansion, inplanes, planes):
    """(index, in channels, out channels, kernel size) of each convolution of a block."""
    kernels = [3, 3] if expansion == 1 else [1, 3, 1]
    widths = [inplanes] + [planes] * (len(kernels) - 1) + [planes * expansion]
    return [(index, widths[index - 1], widths[index], k) for index, k in enumerate(kernels, 1)]


class ReferenceBasicBlock(nn.Module):
    """A block with torchvision's submodules whose forward is ``reference_block``."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        for index, c_in, c_out, k in block_convs(self.expansion, inplanes, planes):
            self.add_module(f"conv{index}", nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False))
            self.add_module(f"bn{index}", nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        return reference_block(self.state_dict(keep_vars=True), x, self.stride, self.training)


class ReferenceBottleneck(ReferenceBasicBlock):
    expansion = 4


class LayoutBasicBlock(nn.Module):
    """Stands in for BasicBlock where only the layout and the BN layers count: in place of
    each convolution a bare weight, left undrawn (no nn.Conv2d for ResNet to initialise)."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        for index, c_in, c_out, k in block_convs(self.expansion, inplanes, planes):
            self.add_module(f"conv{index}", nn.Module())
            getattr(self, f"conv{index}").weight = nn.Parameter(torch.empty(c_out, c_in, k, k))
            self.add_module(f"bn{index}", nn.BatchNorm2d(c_out))
        self.downsample = downsample


class LayoutBottleneck(LayoutBasicBlock):
    expansion = 4


def reference_make_layer(block, inplanes, planes, blocks, stride=1):
    width = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != width:
        downsample = nn.Sequential(nn.Conv2d(inplanes, width, 1, stride, bias=False),
                                   nn.BatchNorm2d(width))
    return nn.Sequential(block(inplanes, planes, stride, downsample),
                         *(block(width, planes) for _ in range(blocks - 1)))
