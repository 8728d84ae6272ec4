"""Tests of the reference ResNet in solutions/resnet.py.

Oracles: the parameter counts and GFLOPS torchvision publishes for its models
(written here from its documentation), the state_dict layout written out key
by key (autograder/oracles/resnet_layout.py), an independent forward pass in
torch.nn.functional (autograder/oracles/resnet_forward.py), closed-form
parameter counts, and analytic cases (a zeroed residual branch).
"""
import pytest
import re
import torch
import torch.nn.functional as F
from torch import nn

from autograder.oracles import resnet_forward as functional
from autograder.oracles import resnet_layout as layout
from solutions import resnet
from tests.helpers import (Mistake, check_probe, edit, probe_cases, prose, sentences_with,
                           visible_text)

DT = torch.float64
# Published by torchvision (its models' documentation): parameters and GFLOPS at 224x224.
TORCHVISION = {"resnet18": (11_689_512, 1.81), "resnet34": (21_797_672, 3.66),
               "resnet50": (25_557_032, 4.09)}
ARCHITECTURES = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
                 "resnet50": ("bottleneck", [3, 4, 6, 3])}


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def closed_form_parameters(kind, layers, num_classes=1000):
    """Parameters of a torchvision ResNet by arithmetic: 3x3 and 1x1 conv weights,
    two per BN channel, projections where a stage changes the shape, the fc."""
    bn = 2
    total = 64 * 3 * 7 * 7 + bn * 64
    inplanes = 64
    for planes, blocks in zip([64, 128, 256, 512], layers):
        if kind == "basic":
            out = planes
            first = inplanes * planes * 9 + planes * planes * 9 + 2 * bn * planes
            other = 2 * planes * planes * 9 + 2 * bn * planes
        else:
            out = 4 * planes
            body = planes * planes * 9 + planes * out + bn * (2 * planes + out)
            first = inplanes * planes + body
            other = out * planes + body
        projection = inplanes * out + bn * out if inplanes != out or planes != 64 else 0
        total += first + projection + (blocks - 1) * other
        inplanes = out
    return total + inplanes * num_classes + num_classes


@pytest.mark.parametrize("name", TORCHVISION)
def test_parameter_counts_equal_torchvision(name):
    model = getattr(resnet, name)()
    count = TORCHVISION[name][0]
    assert resnet.count_parameters(model) == count
    assert closed_form_parameters(*ARCHITECTURES[name]) == count


@pytest.mark.parametrize("name", TORCHVISION)
def test_multiply_accumulates_equal_torchvision_gflops(name):
    macs = resnet.count_macs(getattr(resnet, name)(), (1, 3, 224, 224))
    assert round(macs / 1e9, 2) == TORCHVISION[name][1]


@pytest.mark.parametrize("name, keys", [("resnet18", 122), ("resnet34", 218), ("resnet50", 320)])
def test_state_dict_layout_is_torchvisions(name, keys):
    state = getattr(resnet, name)().state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    assert shapes == layout.resnet_shapes(*ARCHITECTURES[name])
    assert len(shapes) == keys  # counted by hand from torchvision's layout
    if name == "resnet50":
        assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
        assert shapes["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
        assert shapes["fc.weight"] == (1000, 2048)
    else:
        assert "layer1.0.downsample.0.weight" not in shapes
        assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)


def test_a_checkpoint_of_torchvisions_layout_loads_strictly():
    state = functional.random_state(layout.resnet_shapes("bottleneck", [3, 4, 6, 3]),
                                    dtype=torch.float32)
    model = resnet.resnet50()
    assert not model.load_state_dict(state, strict=True).missing_keys
    assert torch.equal(model.layer3[5].bn2.running_var, state["layer3.5.bn2.running_var"])


@pytest.mark.parametrize("kind, layers", [("basic", [2, 1, 1, 2]), ("bottleneck", [1, 2, 1, 1]),
                                          ("basic", [2, 2, 2, 2])])
@pytest.mark.parametrize("training", [True, False])
def test_resnet_matches_functional_forward(kind, layers, training):
    block = resnet.BasicBlock if kind == "basic" else resnet.Bottleneck
    model = resnet.ResNet(block, layers, num_classes=7).double().train(training)
    state = functional.random_state(layout.resnet_shapes(kind, layers, 7))
    model.load_state_dict(state)
    x = torch.randn(2, 3, 64, 48, dtype=DT)
    torch.testing.assert_close(model(x), functional.reference_resnet(state, x, layers, training))
    for key, value in model.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(value, state[key])


def test_resnet_gradient_reaches_the_first_layer():
    layers = [1, 1, 1, 1]
    model = resnet.ResNet(resnet.Bottleneck, layers, num_classes=5).double()
    state = functional.random_state(layout.resnet_shapes("bottleneck", layers, 5))
    model.load_state_dict(state)
    x = torch.randn(3, 3, 40, 40, dtype=DT)
    model(x).square().sum().backward()
    weight = state["conv1.weight"].requires_grad_()
    functional.reference_resnet(state, x, layers).square().sum().backward()
    torch.testing.assert_close(model.conv1.weight.grad, weight.grad)
    assert model.conv1.weight.grad.abs().sum() > 0


BLOCK_CASES = [(1, 1, 1), (3, 5, 1), (4, 8, 2), (6, 6, 2), (5, 2, 3), (16, 4, 1), (8, 3, 2)]


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
@pytest.mark.parametrize("inplanes, planes, stride", BLOCK_CASES)
@pytest.mark.parametrize("training", [True, False])
def test_blocks_match_functional_forward(kind, inplanes, planes, stride, training):
    block_type = resnet.BasicBlock if kind == "basic" else resnet.Bottleneck
    out_channels = planes * block_type.expansion
    down = None
    if stride != 1 or inplanes != out_channels:
        down = nn.Sequential(resnet.conv1x1(inplanes, out_channels, stride),
                             nn.BatchNorm2d(out_channels))
    block = block_type(inplanes, planes, stride, down).double().train(training)
    shapes = layout.block_shapes(kind, inplanes, planes, stride)
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == shapes
    state = functional.random_state(shapes)
    block.load_state_dict(state)
    for size in [(7, 7), (6, 9), (1, 1)]:
        x = torch.randn(3, inplanes, *size, dtype=DT, requires_grad=True)
        out = block(x)
        assert out.shape == (3, out_channels, (size[0] - 1) // stride + 1,
                             (size[1] - 1) // stride + 1)
        expected = functional.reference_block(state, x, stride, training)
        torch.testing.assert_close(out, expected)
        grad = torch.randn_like(out)
        torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0],
                                   torch.autograd.grad(expected, x, grad)[0])


def test_stride_is_on_the_first_3x3_conv():
    basic = resnet.BasicBlock(4, 8, 2, nn.Sequential(resnet.conv1x1(4, 8, 2), nn.BatchNorm2d(8)))
    assert basic.conv1.stride == (2, 2) and basic.conv2.stride == (1, 1)
    bottleneck = resnet.Bottleneck(8, 4, 2, nn.Sequential(resnet.conv1x1(8, 16, 2),
                                                          nn.BatchNorm2d(16)))
    assert [bottleneck.conv1.stride, bottleneck.conv2.stride, bottleneck.conv3.stride] == \
        [(1, 1), (2, 2), (1, 1)]
    assert all(m.bias is None for m in bottleneck.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("block_type, last_bn", [(resnet.BasicBlock, "bn2"),
                                                 (resnet.Bottleneck, "bn3")])
def test_zeroed_residual_branch_leaves_relu_of_the_shortcut(block_type, last_bn):
    inplanes = 4 * block_type.expansion
    block = block_type(inplanes, 4)
    bn = getattr(block, last_bn)
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.copy_(torch.linspace(-1, 1, inplanes))
    x = torch.randn(2, inplanes, 5, 5)
    torch.testing.assert_close(block(x), F.relu(x + bn.bias.view(1, -1, 1, 1)))


def test_make_layer_projects_only_the_first_block_and_only_when_needed():
    layer = resnet.make_layer(resnet.Bottleneck, 64, 64, 3)
    assert isinstance(layer[0].downsample, nn.Sequential)
    assert layer[0].downsample[0].stride == (1, 1)  # 64 -> 256 channels, same resolution
    assert layer[1].downsample is None and layer[2].downsample is None
    assert resnet.make_layer(resnet.BasicBlock, 64, 64, 2)[0].downsample is None
    layer = resnet.make_layer(resnet.BasicBlock, 64, 128, 2, stride=2)
    assert layer[0].downsample[0].stride == (2, 2)
    assert layer(torch.randn(2, 64, 8, 8)).shape == (2, 128, 4, 4)


def test_imagenet_shapes():
    model = resnet.resnet18().eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        assert stem.shape == (1, 64, 56, 56)
        assert model.layer4(model.layer3(model.layer2(model.layer1(stem)))).shape == (1, 512, 7, 7)
        assert model(x).shape == (1, 1000)


def test_initialisation_is_torchvisions():
    model = resnet.resnet50()
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.weight.numel() > 10_000:
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            assert module.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1), name
        if isinstance(module, nn.BatchNorm2d):
            assert (module.weight == 1).all() and (module.bias == 0).all(), name
    assert model.fc.bias.abs().max() <= 1 / 2048 ** 0.5  # nn.Linear's default, untouched


@pytest.mark.parametrize("build, last_bn", [(resnet.resnet18, "bn2"), (resnet.resnet50, "bn3")])
def test_zero_init_residual_starts_every_block_as_the_identity(build, last_bn):
    model = build(zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, (resnet.BasicBlock, resnet.Bottleneck))]
    assert all((getattr(b, last_bn).weight == 0).all() for b in blocks)
    assert all((b.bn1.weight == 1).all() for b in blocks)
    x = torch.randn(2, 64 * blocks[0].expansion, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.layer1[1](x), F.relu(x))


def test_count_parameters_counts_shared_parameters_once_and_no_buffers():
    linear = nn.Linear(3, 4)
    tied = nn.Sequential(linear, nn.Linear(4, 4))
    tied[1].bias = linear.bias
    assert resnet.count_parameters(tied) == 12 + 4 + 16
    assert resnet.count_parameters(nn.BatchNorm2d(5)) == 10
    frozen = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    frozen[0].requires_grad_(False)
    assert resnet.count_parameters(frozen) == 13
    assert resnet.count_parameters(frozen, trainable_only=True) == 4


def test_count_macs_by_hand_and_leaves_the_mode_alone():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.BatchNorm2d(8),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4), nn.Flatten(),
                          nn.Linear(8 * 5 * 5, 10))
    expected = 10 * 10 * 8 * 3 * 9 + 5 * 5 * 8 * 2 * 9 + 200 * 10
    assert resnet.count_macs(model.train(), (1, 3, 10, 10)) == expected
    assert model.training and not model[1].num_batches_tracked  # no BN update, mode kept
    assert not any(module._forward_hooks for module in model.modules())


@pytest.mark.parametrize("n", [1, 3])
def test_cifar_twins_have_equal_parameters_and_6n_plus_2_layers(n):
    residual = resnet.CifarResNet(n, in_channels=1)
    plain = resnet.CifarResNet(n, residual=False, in_channels=1)
    for model in (residual, plain):
        weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(weighted) == 6 * n + 2
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert resnet.count_parameters(residual) == resnet.count_parameters(plain)
    assert residual.state_dict().keys() == plain.state_dict().keys()


def test_cifar_blocks_with_zeroed_branches_differ_only_by_the_shortcut():
    residual = resnet.CifarResNet(1, in_channels=1).eval()
    plain = resnet.CifarResNet(1, residual=False, in_channels=1).eval()
    plain.load_state_dict(residual.state_dict())
    x = torch.randn(2, 16, 8, 8)
    for model in (residual, plain):
        with torch.no_grad():
            model.stages[0][0].bn2.weight.zero_()
            model.stages[0][0].bn2.bias.zero_()
    with torch.no_grad():
        torch.testing.assert_close(residual.stages[0](x), F.relu(x))
        torch.testing.assert_close(plain.stages[0](x), torch.zeros_like(x))


def test_pad_shortcut_subsamples_and_appends_zero_channels():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = resnet.PadShortcut(planes=5, stride=2)(x)
    assert out.shape == (2, 5, 2, 2)
    torch.testing.assert_close(out[:, :3], x[:, :, ::2, ::2])
    assert (out[:, 3:] == 0).all()


@pytest.mark.parametrize("make, error, message", [
    (lambda: resnet.BasicBlock(4, 8), ValueError, "pass a downsample"),
    (lambda: resnet.BasicBlock(4, 4, stride=2), ValueError, "pass a downsample"),
    (lambda: resnet.Bottleneck(16, 16), ValueError, r"from 16 to 64 channels"),
    (lambda: resnet.BasicBlock(4, 0), ValueError, "planes must be a positive int"),
    (lambda: resnet.BasicBlock(4, 4, stride=1.5), ValueError, "stride must be a positive int"),
    (lambda: resnet.BasicBlock(4, 4, 1, "conv"), TypeError, "downsample must be an nn.Module"),
    (lambda: resnet.make_layer(resnet.BasicBlock, 4, 4, 0), ValueError, "blocks must be"),
    (lambda: resnet.ResNet(resnet.BasicBlock, [2, 2, 2]), ValueError, "4 positive block counts"),
    (lambda: resnet.ResNet("basic", [2, 2, 2, 2]), TypeError, "block must be a block class"),
    (lambda: resnet.count_parameters([1, 2]), TypeError, "expected an nn.Module"),
    (lambda: resnet.CifarResNet(0), ValueError, "n must be a positive int"),
])
def test_bad_arguments_get_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("call, message", [
    (lambda: resnet.BasicBlock(4, 4)(torch.randn(2, 3, 5, 5)), "input has 3 channels, expected 4"),
    (lambda: resnet.Bottleneck(16, 4)(torch.randn(16, 5, 5)), r"shape \(N, 16, H, W\)"),
    (lambda: resnet.resnet18()(torch.randn(1, 1, 64, 64)), "input has 1 channels, expected 3"),
])
def test_bad_inputs_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- the grader's probes --------------------------------------------------------

class TorchvisionResNet(nn.Module):
    """torchvision.models.resnet.ResNet's layout and initialisation, transcribed (stages
    built by ``reference_make_layer``); its forward is ``reference_resnet``."""

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False):
        super().__init__()
        self.layers = layers
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            self.add_module(f"layer{index + 1}", functional.reference_make_layer(
                block, inplanes, planes, blocks, 1 if index == 0 else 2))
            inplanes = planes * block.expansion
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, block):
                    nn.init.constant_((m.bn3 if hasattr(m, "bn3") else m.bn2).weight, 0)

    def forward(self, x):
        return functional.reference_resnet(self.state_dict(keep_vars=True), x, self.layers,
                                           self.training)


def state_dict_parameter_count(model, trainable_only=False):
    """Parameters counted from the state_dict, each tensor once however often it is shared."""
    sizes = {t.data_ptr(): t.numel() for t in model.state_dict(keep_vars=True).values()
             if isinstance(t, nn.Parameter) and (t.requires_grad or not trainable_only)}
    return sum(sizes.values())


def counting(block):
    """``block`` whose BatchNorms count the batches they see in training, as their own
    forward would (``reference_block`` reads only their tensors)."""
    class Counting(block):
        def forward(self, x):
            if self.training:
                for m in self.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.num_batches_tracked.add_(1)
            return super().forward(x)
    return Counting


COUNTERPARTS = dict(
    BasicBlock=counting(functional.ReferenceBasicBlock),
    Bottleneck=counting(functional.ReferenceBottleneck),
    make_layer=functional.reference_make_layer, ResNet=TorchvisionResNet,
    resnet18=lambda: TorchvisionResNet(functional.ReferenceBasicBlock, [2, 2, 2, 2]),
    resnet34=lambda: TorchvisionResNet(functional.ReferenceBasicBlock, [3, 4, 6, 3]),
    resnet50=lambda: TorchvisionResNet(functional.ReferenceBottleneck, [3, 4, 6, 3]),
    conv1x1=lambda inplanes, width, stride: nn.Conv2d(inplanes, width, 1, stride, bias=False),
    count_parameters=state_dict_parameter_count)


@pytest.mark.parametrize("probe, seed", probe_cases("resnet"))
def test_probe_agrees_with_the_functional_forward(probe, seed):
    check_probe(probe, seed, resnet, COUNTERPARTS)


# -- the chapter's page and its classic mistakes --------------------------------

@pytest.mark.xdist_group("book")  # reads the session's one build of the book
def test_page_reproduces_the_degradation_problem(html):
    page = (html / "book/resnet.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 3, "figures drawn by code are missing"
    text = visible_text(page)
    for count in ["11,689,512", "21,797,672", "25,557,032"]:
        assert count in text, f"the cost table lacks {count}"
    rows = {int(layers): (float(plain), float(residual)) for layers, plain, residual in re.findall(
        r"^\s*(\d+)\s+([\d.]+)\s+[\d.]+%\s+([\d.]+)\s+[\d.]+%$", text, re.M)}
    assert set(rows) == {20, 56}, "the experiment's table is missing"
    assert rows[56][0] > rows[20][0], "the prose claims the deep plain net trains worse"
    assert rows[56][1] < rows[56][0], "the prose claims the residual twin trains better"
    assert "residual: final loss falls with depth" in text, \
        "the prose claims the deeper residual nets reach the lower training loss (paper's Figure 6, middle)"
    for term in ["残差网络", "残差块", "退化问题", "瓶颈结构"]:
        assert term in page


def test_page_cites_each_panel_of_figure_6_for_what_it_shows():
    text = prose("resnet")
    middle, right = sentences_with(text, r"Figure 6, middle"), sentences_with(text, r"Figure 6, right")
    assert middle and all("lower" in s for s in middle), \
        "Figure 6, middle (ResNet-20 to 110) is where deeper residual nets reach the lower training error"
    assert right and all("1202" in s and "overfitting" in s and "lower" not in s for s in right), \
        "Figure 6, right compares ResNet-110 with ResNet-1202: similar training error, worse test error"


MISTAKES = [
    Mistake("relu_before_add",
            {"BasicBlock": edit("return self.relu(out + identity)", "return self.relu(out) + identity")},
            {"BasicBlock"}, "ReLU the sum: relu(F(x) + x), not relu(F(x)) + x."),
    Mistake("stride_on_1x1",
            {"Bottleneck": edit("conv1x1(inplanes, planes)", "conv1x1(inplanes, planes, stride)",
                                "conv3x3(planes, planes, stride)", "conv3x3(planes, planes)")},
            {"Bottleneck"}, "the stride belongs to conv2, the 3x3 convolution"),
    Mistake("no_relu_after_sum",
            {"Bottleneck": edit("return self.relu(out + identity)", "return out + identity")},
            {"Bottleneck"}, "the block ends with a ReLU after adding the shortcut"),
    Mistake("no_projection_when_widening",
            {"make_layer": edit("if stride != 1 or inplanes != width:", "if stride != 1:")},
            {"make_layer"}, "8 -> 16 channels needs a projection"),
    Mistake("counts_buffers",
            {"count_parameters": edit(
                "return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)",
                "return sum(t.numel() for t in model.state_dict().values())")},
            {"count_parameters"}, "you counted BN's buffers"),
    Mistake("imports_reference", {"BasicBlock": "from solutions.resnet import BasicBlock\n"},
            {"BasicBlock"}, "No module named 'solutions'"),
    Mistake("always_zero_init", {"ResNet": edit("        if zero_init_residual:\n", "        if True:\n")},
            {"ResNet"}),
]
