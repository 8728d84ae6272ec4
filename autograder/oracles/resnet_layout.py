"""torchvision's ResNet state_dict layout, written out key by key: key -> shape.

Inlined into the ResNet exercise's setup cell: the tests compare a module's
state_dict with it, so a torchvision checkpoint would load into the module.
"""

STAGES = [(64, 1), (128, 2), (256, 2), (512, 2)]  # (planes, stride) of layer1..layer4


def bn_shapes(prefix, channels):
    """key -> shape of a BatchNorm2d layer's state_dict under ``prefix``."""
    return {f"{prefix}.{name}": (channels,)
            for name in ("weight", "bias", "running_mean", "running_var")} | {
            f"{prefix}.num_batches_tracked": ()}


def block_shapes(kind, inplanes, planes, stride=1, prefix=""):
    """key -> shape of one block's state_dict; kind is "basic" or "bottleneck"."""
    if kind == "basic":
        out = planes
        convs = [("conv1", planes, inplanes, 3), ("conv2", planes, planes, 3)]
    else:
        out = planes * 4
        convs = [("conv1", planes, inplanes, 1), ("conv2", planes, planes, 3),
                 ("conv3", out, planes, 1)]
    shapes = {}
    for name, cout, cin, k in convs:
        shapes[f"{prefix}{name}.weight"] = (cout, cin, k, k)
        shapes |= bn_shapes(f"{prefix}bn{name[-1]}", cout)
    if stride != 1 or inplanes != out:
        shapes[f"{prefix}downsample.0.weight"] = (out, inplanes, 1, 1)
        shapes |= bn_shapes(f"{prefix}downsample.1", out)
    return shapes


def layer_shapes(kind, inplanes, planes, blocks, stride=1, prefix=""):
    out = planes * (4 if kind == "bottleneck" else 1)
    shapes = block_shapes(kind, inplanes, planes, stride, f"{prefix}0.")
    for index in range(1, blocks):
        shapes |= block_shapes(kind, out, planes, 1, f"{prefix}{index}.")
    return shapes


def resnet_shapes(kind, layers, num_classes=1000):
    shapes = {"conv1.weight": (64, 3, 7, 7)} | bn_shapes("bn1", 64)
    inplanes = 64
    for index, ((planes, stride), blocks) in enumerate(zip(STAGES, layers)):
        shapes |= layer_shapes(kind, inplanes, planes, blocks, stride, f"layer{index + 1}.")
        inplanes = planes * (4 if kind == "bottleneck" else 1)
    return shapes | {"fc.weight": (num_classes, inplanes), "fc.bias": (num_classes,)}


