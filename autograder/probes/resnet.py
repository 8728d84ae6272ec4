"""Probes of the residual-network exercise."""
from pathlib import Path

from ..verify import Probe
from . import MODULE_HELPERS as HELPERS
from . import STAND_IN, float32

# ResNet is verified with the reference blocks and stage builder, as its hidden tests do, and
# where only the layout and the initial BN weights count, with the hidden tests' layout blocks.
_REFERENCE_PARTS = (STAND_IN + (Path(__file__).parent.parent / "oracles" / "resnet_forward.py").read_text()
                    + """
_parts = dict(BasicBlock=ReferenceBasicBlock, Bottleneck=ReferenceBottleneck,
              make_layer=reference_make_layer)
_layout_parts = dict(BasicBlock=LayoutBasicBlock, Bottleneck=LayoutBottleneck,
                     make_layer=reference_make_layer)
""")


BLOCK = HELPERS + """
width = planes * block.expansion
down = None
if stride != 1 or inplanes != width:
    down = nn.Sequential(conv1x1(inplanes, width, stride), nn.BatchNorm2d(width))
m = fill(block(inplanes, planes, stride, down).to(x.dtype), seed)
x.requires_grad_()
out = m(x)
grad = torch.autograd.grad(out, x, g)[0]
result = [block.expansion, layout(m), out, grad, m.eval()(x2), dict(m.state_dict())]
"""

# A stand-in block, as the template's ProbeBlock, whose output also runs the shortcut.
LAYER = HELPERS + """
class Block(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.args = [inplanes, planes, stride]
        self.downsample = downsample
        self.conv = nn.Conv2d(inplanes, planes * self.expansion, 1, stride, bias=False)

    def forward(self, x):
        return self.conv(x) + (x if self.downsample is None else self.downsample(x))


Block.expansion = expansion
layer = fill(make_layer(Block, inplanes, planes, blocks, stride).double(), seed)
result = [isinstance(layer, nn.Sequential), torch.tensor([block.args for block in layer]),
          layout(layer), layer(x)]
"""

# The initialisation is random: the probe returns what the tests check of it
# (conv std within 10% of kaiming's fan_out std; BN weights 1, but 0 for the last
# BN of each block with zero_init_residual, and biases 0).
RESNET = HELPERS + _REFERENCE_PARTS + """
bn_state = lambda m: {k: t.clone() for k, t in m.state_dict().items()
                      if t.dim() == 1 and not k.startswith("fc.")}
with stand_in(ResNet, **_layout_parts):
    plain = bn_state(ResNet(_layout_parts[block], layers, classes))
with stand_in(ResNet, **_parts):
    m = ResNet(_parts[block], layers, classes, zero_init_residual=True)
    stds = [abs(float(t.std()) * (t[:, 0].numel() / 2) ** 0.5 - 1) < 0.1
            for _, t in sorted(m.state_dict().items()) if t.dim() == 4]
    bn = [bn_state(m), plain]
    m = fill(m, seed).to(x.dtype)
    out = m(x)
    grad = torch.autograd.grad(out, m.conv1.weight, g)[0]
    result = [layout(m), stds, bn, out, grad, m.eval()(x2)]
"""


def _block(expansion, identity):
    def draw(rng):
        planes = int(rng.integers(1, 5))
        if identity:
            inplanes, stride = planes * expansion, 1
        else:
            inplanes, stride = int(rng.integers(1, 9)), int(rng.integers(1 if expansion == 1 else 2, 4))
            if stride == 1 and inplanes == planes * expansion:    # so that it needs a projection
                inplanes += 1
        n, h, w = (int(v) for v in rng.integers(2, 8, 3))
        width, h2, w2 = planes * expansion, (h - 1) // stride + 1, (w - 1) // stride + 1
        return dict(inplanes=inplanes, planes=planes, stride=stride, seed=int(rng.integers(2**31)),
                    x=rng.normal(size=(n, inplanes, h, w)), g=rng.normal(size=(n, width, h2, w2)),
                    x2=rng.normal(size=(int(rng.integers(1, 4)), inplanes, h, w)))
    return draw


def _layer(kind):
    """kind: "any" stage, "widening" (stride 1, new width) or "identity" (no projection)."""
    def draw(rng):
        expansion, planes = int(rng.choice([1, 2, 4])), int(rng.integers(1, 5))
        stride = int(rng.integers(1, 4)) if kind == "any" else 1
        inplanes = int(rng.integers(1, 9))
        if kind == "identity":
            inplanes = planes * expansion
        elif kind == "widening" and inplanes == planes * expansion:
            inplanes += 1
        return dict(expansion=expansion, inplanes=inplanes, planes=planes, stride=stride,
                    blocks=int(rng.integers(1, 4)), seed=int(rng.integers(2**31)),
                    x=rng.normal(size=(2, inplanes, *rng.integers(3, 8, 2))))
    return draw


def _resnet(rng):
    """x (training mode, with the gradient) leaves layer4 one pixel, where a float64 backward pass
    is fast; x2 (eval mode) leaves it 2 x 1 or 2 x 2 pixels to average."""
    n, classes = int(rng.integers(2, 4)), int(rng.integers(2, 8))
    layers = [int(v) for v in rng.integers(1, 3, 3)] + [1]    # layer4 alone holds most weights
    return dict(layers=layers, classes=classes, seed=int(rng.integers(2**31)),
                x=rng.normal(size=(n, 3, *rng.integers(17, 33, 2))), g=rng.normal(size=(n, classes)),
                x2=rng.normal(size=(int(rng.integers(1, 4)), 3, int(rng.integers(33, 49)),
                                    int(rng.integers(17, 49)))))


def _count(rng):
    a, b, c, d, e, k = (int(v) for v in rng.integers(1, 8, 6))
    return dict(a=a, b=b, c=c, d=d, e=e, k=k, frozen=bool(rng.integers(2)))


PROBES = {
    "BasicBlock": [
        Probe("block = BasicBlock" + BLOCK, _block(1, identity=True)),
        Probe("block = BasicBlock" + BLOCK, _block(1, identity=False)),
        # float32 too, as the visible tests: the sums may run in another order
        Probe("block = BasicBlock" + BLOCK, float32(_block(1, identity=False)), rtol=1e-4, atol=1e-4),
    ],
    "Bottleneck": [
        Probe("block = Bottleneck" + BLOCK, _block(4, identity=True)),
        Probe("block = Bottleneck" + BLOCK, _block(4, identity=False)),
        Probe("block = Bottleneck" + BLOCK, float32(_block(4, identity=False)), rtol=1e-4, atol=1e-4),
    ],
    "make_layer": [Probe(LAYER, _layer(kind)) for kind in ("any", "widening", "identity")],
    "ResNet": [
        Probe("block = 'BasicBlock'" + RESNET, _resnet),
        # float32 too, as the visible tests: the sums may run in another order
        Probe("block = 'Bottleneck'" + RESNET, float32(_resnet), rtol=1e-4, atol=1e-4),
        Probe(HELPERS + _REFERENCE_PARTS + """
with stand_in(ResNet, **_layout_parts):
    m = [resnet18, resnet34, resnet50][depth]()
result = [layout(m), sum(p.numel() for p in m.parameters())]
""", lambda rng: dict(depth=int(rng.integers(3)))),
    ],
    "count_parameters": [Probe("""
from torch import nn
model = nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.Linear(a, b), nn.Embedding(e, d),
                      nn.Conv2d(c, d, k))
model[2].weight = model[0].weight
model[3].requires_grad_(not frozen)
model[4].bias.requires_grad_(False)
result = [int(count_parameters(m, trainable_only=t))
          for m in (model, model[1], model[4], nn.Sequential()) for t in (False, True)]
""", _count)],
}
