"""Tests of the reference GAN code in solutions/gan.py.

Oracles: the parameter counts of the PyTorch examples' DCGAN (G 3,576,704 and
D 2,765,568, from the issue) and a closed-form count; the example's state_dict
layout written out key by key and the example's networks rebuilt here (with
their final Sigmoid) so a checkpoint of theirs loads; the example's own
``weights_init`` (class-name matching); ``F.binary_cross_entropy_with_logits``
and the analytic gradient ``sigmoid(t) - target`` for the losses; and the
example's training loop written out here (two backward calls for D, BCE on
logits) for ``train_step``.
"""
import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.oracles import dcgan_layout as layout
from autograder.oracles.dcgan import ExampleD, ExampleG, example_step, example_weights_init
from solutions import gan
from tests.helpers import Mistake, OpRecorder, check_probe, edit, probe_cases, visible_text

DT = torch.float64
EXAMPLE_G_PARAMETERS = 3_576_704  # the issue: PyTorch examples' dcgan, nz=100, ngf=64, nc=3
EXAMPLE_D_PARAMETERS = 2_765_568  # nc=3, ndf=64


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def count(model):
    return sum(p.numel() for p in model.parameters())


def generator_parameters(nz, ngf, nc):
    """Five 4x4 transposed convs without bias, BN (weight + bias) on the first four."""
    widths = [nz, 8 * ngf, 4 * ngf, 2 * ngf, ngf, nc]
    convs = sum(a * b * 16 for a, b in zip(widths, widths[1:]))
    return convs + 2 * (8 + 4 + 2 + 1) * ngf


def discriminator_parameters(nc, ndf):
    """Five 4x4 convs without bias, BN on the middle three."""
    widths = [nc, ndf, 2 * ndf, 4 * ndf, 8 * ndf, 1]
    convs = sum(a * b * 16 for a, b in zip(widths, widths[1:]))
    return convs + 2 * (2 + 4 + 8) * ndf


def bn_shapes(prefix, channels):
    """BatchNorm2d's own state_dict keys and shapes (not the oracle's)."""
    return {f"{prefix}.{key}": tuple(value.shape)
            for key, value in nn.BatchNorm2d(channels).state_dict().items()}


# The example's state_dict at the defaults, key by key (Sequential indices count the
# parameter-free ReLU / LeakyReLU / Tanh modules; D's Sigmoid would be main.12).
EXAMPLE_G_STATE = {"main.0.weight": (100, 512, 4, 4), **bn_shapes("main.1", 512),
                   "main.3.weight": (512, 256, 4, 4), **bn_shapes("main.4", 256),
                   "main.6.weight": (256, 128, 4, 4), **bn_shapes("main.7", 128),
                   "main.9.weight": (128, 64, 4, 4), **bn_shapes("main.10", 64),
                   "main.12.weight": (64, 3, 4, 4)}
EXAMPLE_D_STATE = {"main.0.weight": (64, 3, 4, 4),
                   "main.2.weight": (128, 64, 4, 4), **bn_shapes("main.3", 128),
                   "main.5.weight": (256, 128, 4, 4), **bn_shapes("main.6", 256),
                   "main.8.weight": (512, 256, 4, 4), **bn_shapes("main.9", 512),
                   "main.11.weight": (1, 512, 4, 4)}


def test_the_exercises_layouts_are_the_examples():
    assert layout.generator_shapes() == EXAMPLE_G_STATE
    assert layout.discriminator_shapes() == EXAMPLE_D_STATE


def randomise_bn(model):
    """Non-trivial BN affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


# ---------------------------------------------------------------------------- layout

def test_parameter_counts_equal_the_examples():
    assert count(gan.Generator()) == EXAMPLE_G_PARAMETERS
    assert count(gan.Discriminator()) == EXAMPLE_D_PARAMETERS
    assert generator_parameters(100, 64, 3) == EXAMPLE_G_PARAMETERS
    assert discriminator_parameters(3, 64) == EXAMPLE_D_PARAMETERS


@pytest.mark.parametrize("nz, ngf, nc", [(7, 3, 1), (16, 8, 2), (100, 32, 3)])
def test_parameter_counts_closed_form(nz, ngf, nc):
    assert count(gan.Generator(nz, ngf, nc)) == generator_parameters(nz, ngf, nc)
    assert count(gan.Discriminator(nc, ngf)) == discriminator_parameters(nc, ngf)


def test_state_dict_layout_is_the_examples():
    g = {k: tuple(v.shape) for k, v in gan.Generator().state_dict().items()}
    d = {k: tuple(v.shape) for k, v in gan.Discriminator().state_dict().items()}
    assert g == EXAMPLE_G_STATE
    assert d == EXAMPLE_D_STATE
    assert len(g) == 5 + 4 * 5 and len(d) == 5 + 3 * 5


def test_layers_are_the_examples():
    g, d = gan.Generator(8, 4, 3).main, gan.Discriminator(3, 4).main
    assert len(g) == 14 and len(d) == 12  # D: the example's 13 modules without the Sigmoid
    for i, (stride, padding) in zip([0, 3, 6, 9, 12], [(1, 0), (2, 1), (2, 1), (2, 1), (2, 1)]):
        assert isinstance(g[i], nn.ConvTranspose2d) and g[i].bias is None
        assert (g[i].kernel_size, g[i].stride, g[i].padding) == ((4, 4), (stride,) * 2,
                                                                 (padding,) * 2)
    assert all(isinstance(g[i], nn.BatchNorm2d) for i in [1, 4, 7, 10])
    assert all(isinstance(g[i], nn.ReLU) and g[i].inplace for i in [2, 5, 8, 11])
    assert isinstance(g[13], nn.Tanh)
    for i, (stride, padding) in zip([0, 2, 5, 8, 11], [(2, 1), (2, 1), (2, 1), (2, 1), (1, 0)]):
        assert isinstance(d[i], nn.Conv2d) and d[i].bias is None
        assert (d[i].kernel_size, d[i].stride, d[i].padding) == ((4, 4), (stride,) * 2,
                                                                 (padding,) * 2)
    assert all(isinstance(d[i], nn.BatchNorm2d) for i in [3, 6, 9])
    assert all(isinstance(d[i], nn.LeakyReLU) and d[i].negative_slope == 0.2 for i in [1, 4, 7, 10])
    assert not any(isinstance(m, nn.Sigmoid) for m in d)


@pytest.mark.parametrize("training", [True, False])
def test_an_example_checkpoint_loads_and_d_returns_its_logit(training):
    nz, ngf, ndf, nc = 10, 4, 4, 3
    example_g = randomise_bn(ExampleG(nz, ngf, nc)).double().train(training)
    example_d = randomise_bn(ExampleD(nc, ndf)).double().train(training)
    g = gan.Generator(nz, ngf, nc).double().train(training)
    d = gan.Discriminator(nc, ndf).double().train(training)
    g.load_state_dict(example_g.state_dict())  # strict: raises on a missing or unexpected key
    d.load_state_dict(example_d.state_dict())
    z = torch.randn(3, nz, 1, 1, dtype=DT)
    fake = g(z)
    torch.testing.assert_close(fake, example_g(z))
    logits = d(fake)
    assert logits.shape == (3,)
    torch.testing.assert_close(torch.sigmoid(logits), example_d(fake))


def test_shapes_and_ranges():
    g, d = gan.Generator(), gan.Discriminator()
    z = torch.randn(2, 100, 1, 1)
    x = g(z)
    assert x.shape == (2, 3, 64, 64)
    assert x.abs().max() <= 1
    torch.testing.assert_close(g(z.view(2, 100)), x)  # (N, nz) is accepted too
    assert d(x).shape == (2,)
    assert d.eval()(x[:1]).shape == (1,)
    assert gan.Generator(nz=5, ngf=2, nc=1)(torch.randn(3, 5, 1, 1)).shape == (3, 1, 64, 64)
    logits = gan.Discriminator(nc=1, ndf=2)(torch.randn(3, 1, 64, 64) * 50)
    assert logits.shape == (3,) and (logits.min() < 0 or logits.max() > 1)  # not a probability


def test_weights_init_statistics():
    model = gan.Generator()
    model.apply(gan.weights_init)
    big = model.main[3].weight  # 2,097,152 values
    assert abs(big.mean().item()) < 1e-4
    assert big.std().item() == pytest.approx(0.02, rel=0.01)
    bn_weights = torch.cat([model.main[i].weight for i in [1, 4, 7, 10]])  # 960 values
    assert bn_weights.mean().item() == pytest.approx(1.0, abs=0.003)
    assert bn_weights.std().item() == pytest.approx(0.02, rel=0.1)
    assert all((model.main[i].bias == 0).all() for i in [1, 4, 7, 10])
    assert all((model.main[i].running_var == 1).all() for i in [1, 4, 7, 10])  # buffers alone
    d = gan.Discriminator().apply(gan.weights_init)
    assert d.main[8].weight.std().item() == pytest.approx(0.02, rel=0.01)


def test_weights_init_draws_as_the_examples_and_leaves_other_modules_alone():
    torch.manual_seed(3)
    ours = gan.Discriminator(3, 8)
    theirs = copy.deepcopy(ours)
    torch.manual_seed(4)
    ours.apply(gan.weights_init)
    torch.manual_seed(4)
    theirs.apply(example_weights_init)
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), key
    conv, linear = nn.Conv2d(2, 3, 3, bias=True), nn.Linear(4, 5)
    bias, weight = conv.bias.clone(), linear.weight.clone()
    gan.weights_init(conv)
    gan.weights_init(linear)
    assert torch.equal(conv.bias, bias) and torch.equal(linear.weight, weight)
    gan.weights_init(nn.BatchNorm2d(4, affine=False))  # no parameters: nothing to do


# ---------------------------------------------------------------------------- losses

def bce(x, target):
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target))


LOSSES = {  # the loss of fake logits (real logits fixed at 0 for the D loss) by BCE
    "discriminator": (lambda f: gan.discriminator_loss(torch.zeros_like(f), f),
                      lambda f: bce(torch.zeros_like(f), 1.0) + bce(f, 0.0), 0.0),
    "generator": (gan.generator_loss, lambda f: bce(f, 1.0), 1.0),
    "saturating": (gan.generator_loss_saturating, lambda f: -bce(f, 0.0), None),
}


def extreme_logits(dtype):
    x = torch.cat([torch.randn(50, dtype=dtype) * 5,
                   torch.tensor([0.0, 1e-8, -1e-8, 15.0, -15.0, 30.0, -30.0, 88.0, -88.0,
                                 100.0, -100.0, 1e4, -1e4, 3e38 if dtype == torch.float32
                                 else 1e300, -3e38 if dtype == torch.float32 else -1e300],
                                dtype=dtype)])
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", LOSSES)
def test_losses_equal_bce_with_logits_and_stay_finite(name, dtype):
    ours, theirs, target = LOSSES[name]
    x = extreme_logits(dtype).requires_grad_()
    loss = ours(x)
    assert loss.dim() == 0 and loss.dtype == dtype
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, theirs(x.detach()))
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()
    n = x.numel()
    expected = (torch.sigmoid(x.detach()) - target) / n if target is not None \
        else -torch.sigmoid(x.detach()) / n
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discriminator_loss_is_the_sum_of_the_two_means(dtype):
    real = torch.randn(7, dtype=dtype) * 3
    fake = torch.randn(7, dtype=dtype) * 3
    expected = bce(real, 1.0) + bce(fake, 0.0)
    torch.testing.assert_close(gan.discriminator_loss(real, fake), expected)
    torch.testing.assert_close(gan.discriminator_loss(real.view(7, 1, 1, 1), fake.view(7, 1, 1, 1)),
                               expected)
    # perfect D: loss 0; D that cannot tell (all logits 0): 2 log 2
    assert gan.discriminator_loss(torch.full((3,), 1e4), torch.full((3,), -1e4)) == 0
    zeros = torch.zeros(4, dtype=DT)
    torch.testing.assert_close(gan.discriminator_loss(zeros, zeros),
                               torch.tensor(2 * np.log(2), dtype=DT))


def test_losses_extreme_values_by_hand():
    x = torch.tensor([1e4, -1e4])
    assert gan.generator_loss(x[:1]) == 0 and gan.generator_loss(x[1:]) == 1e4
    assert gan.generator_loss_saturating(x[:1]) == -1e4
    assert gan.generator_loss_saturating(x[1:]) == 0
    t = torch.linspace(-6, 6, 13, dtype=DT)
    torch.testing.assert_close(gan.generator_loss_saturating(t),
                               torch.log(1 - torch.sigmoid(t)).mean())
    torch.testing.assert_close(gan.generator_loss(t), -torch.log(torch.sigmoid(t)).mean())


@pytest.mark.parametrize("logit", [-10.0, -30.0, -1e4])
def test_the_saturating_loss_gradient_vanishes_where_d_rejects_fakes(logit):
    x = torch.full((8,), logit, requires_grad=True)
    (saturating,) = torch.autograd.grad(gan.generator_loss_saturating(x), x)
    (non_saturating,) = torch.autograd.grad(gan.generator_loss(x), x)
    torch.testing.assert_close(non_saturating, torch.full((8,), -1 / 8), rtol=1e-4, atol=0)
    assert saturating.abs().max() < 1e-4 * non_saturating.abs().min()
    assert (saturating <= 0).all()  # still a push the right way, but a vanishing one
    # where D is fooled the situation reverses: the saturating loss has the larger gradient
    y = torch.full((8,), 2.0, requires_grad=True)
    (sat,) = torch.autograd.grad(gan.generator_loss_saturating(y), y)
    (nonsat,) = torch.autograd.grad(gan.generator_loss(y), y)
    assert sat.abs().min() > nonsat.abs().max()


def test_losses_do_not_call_bce():
    x = torch.randn(5, requires_grad=True)
    with OpRecorder() as recorder:
        losses = [gan.discriminator_loss(x, x), gan.generator_loss(x), gan.generator_loss_saturating(x)]
        torch.autograd.grad(sum(losses), x)
    assert recorder.ops, "nothing was recorded"
    assert not [op for op in recorder.ops if "binary_cross_entropy" in op], recorder.ops


# ---------------------------------------------------------------------------- train_step

def small_gan(nz=6):
    G = randomise_bn(gan.Generator(nz, 3, 2)).apply(gan.weights_init).double()
    D = randomise_bn(gan.Discriminator(2, 3)).apply(gan.weights_init).double()
    with torch.no_grad():  # larger weights: the logits are far from 0 and the losses differ
        for m in D.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(20)
    return G, D


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999)),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_train_step_equals_the_examples_step(optimizer):
    G, D = small_gan()
    real = torch.rand(4, 2, 64, 64, dtype=DT) * 2 - 1
    z = torch.randn(4, 6, 1, 1, dtype=DT)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    make = OPTIMIZERS[optimizer]
    opt_g, opt_d = make(G.parameters()), make(D.parameters())
    opt_g2, opt_d2 = make(G2.parameters()), make(D2.parameters())
    G.eval()
    D.eval()  # train_step puts both in train mode itself
    for step in range(2):
        losses = gan.train_step(G, D, opt_g, opt_d, real, z)
        expected = example_step(G2, D2, opt_g2, opt_d2, real, z)
        assert all(isinstance(v, float) for v in losses)
        assert losses == pytest.approx(expected, rel=1e-12)
        if step == 0:  # the D loss is D's before its update, on G's output before G's
            assert losses[0] == pytest.approx(
                gan.discriminator_loss(D0(real), D0(G0(z))).item(), rel=1e-12)
    assert G.training and D.training
    for model, twin in [(G, G2), (D, D2)]:
        for (key, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=key)
    # one G forward pass per step, three D forward passes (real, fake, fake for G)
    assert G.main[1].num_batches_tracked == 2 and D.main[3].num_batches_tracked == 6
    assert not torch.equal(G.main[0].weight, G0.main[0].weight)
    assert not torch.equal(D.main[0].weight, D0.main[0].weight)


class Recording(torch.optim.SGD):
    """SGD that runs ``on_step()`` just before each of its steps."""

    def __init__(self, params, on_step):
        super().__init__(params, lr=0.1)
        self.on_step = on_step

    def step(self, closure=None):
        self.on_step()
        return super().step(closure)


def test_train_step_order_detach_and_fresh_gradients():
    G, D = small_gan()
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    real = torch.rand(3, 2, 64, 64, dtype=DT) * 2 - 1
    z = torch.randn(3, 6, dtype=DT)  # (N, nz) is accepted too
    for p in list(G.parameters()) + list(D.parameters()):
        p.grad = torch.full_like(p, 7.0)  # stale gradients that must not be used
    seen = {}

    def at_d_step():
        seen["d_step_calls"] = seen.get("d_step_calls", 0) + 1
        seen["g_at_d_step"] = copy.deepcopy(G.state_dict())
        seen["g_grads_at_d_step"] = [None if p.grad is None else p.grad.clone()
                                     for p in G.parameters()]
        seen["d_grads"] = [p.grad.clone() for p in D.parameters()]

    def at_g_step():
        seen["g_step_calls"] = seen.get("g_step_calls", 0) + 1
        seen["d_at_g_step"] = copy.deepcopy(D.state_dict())
        seen["g_at_g_step"] = copy.deepcopy(G.state_dict())
        seen["g_grads"] = [p.grad.clone() for p in G.parameters()]

    opt_d, opt_g = Recording(D.parameters(), at_d_step), Recording(G.parameters(), at_g_step)
    loss_d, loss_g = gan.train_step(G, D, opt_g, opt_d, real, z)
    assert seen["d_step_calls"] == 1 and seen["g_step_calls"] == 1
    # D step: G untouched, D's gradient that of the D loss alone, none of it in G
    for key, value in G0.state_dict().items():
        if "num_batches_tracked" not in key and "running" not in key:
            assert torch.equal(seen["g_at_d_step"][key], value), key
    for grad in seen["g_grads_at_d_step"]:
        assert grad is None or (grad == 0).all() or (grad == 7).all(), \
            "the D loss's gradient reached G: detach the fake batch for D's update"
    D1 = copy.deepcopy(D0)
    fake0 = G0(z.view(3, 6, 1, 1))
    expected = torch.autograd.grad(gan.discriminator_loss(D1(real), D1(fake0.detach())),
                                   list(D1.parameters()))
    for got, want in zip(seen["d_grads"], expected):
        torch.testing.assert_close(got, want)
    # G step: the updated D, the same fake batch, G's gradient that of the G loss alone
    for key, value in seen["d_at_g_step"].items():
        assert torch.equal(D.state_dict()[key], value) or "running" in key \
            or "num_batches" in key, key
    G1 = copy.deepcopy(G0)
    G1.load_state_dict(seen["g_at_g_step"])
    D2 = copy.deepcopy(D0)
    D2.load_state_dict(seen["d_at_g_step"])
    loss = gan.generator_loss(D2(G1(z)))
    assert loss.item() == pytest.approx(loss_g, rel=1e-12)
    for got, want in zip(seen["g_grads"], torch.autograd.grad(loss, list(G1.parameters()))):
        torch.testing.assert_close(got, want)
    assert G.training and D.training


# ---------------------------------------------------------------------------- digits DCGAN

def test_digits_data():
    images, labels = gan.load_digits_images()
    assert images.shape == (1797, 1, 16, 16) and images.dtype == torch.float32
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))
    assert images.min() >= -1 and images.max() <= 1
    assert images.min() == -1 and images.max() > 0.9
    # bilinear, half-pixel centres: output pixel (2i, 2j) lies a quarter pixel up-left of
    # input pixel (i, j), so it weighs it 9/16, its upper and left neighbours 3/16, the corner 1/16
    from sklearn.datasets import load_digits
    x = torch.from_numpy(load_digits().images).float() / 8 - 1
    i, j = torch.meshgrid(torch.arange(1, 8), torch.arange(1, 8), indexing="ij")
    expected = (9 * x[:, i, j] + 3 * x[:, i - 1, j] + 3 * x[:, i, j - 1] + x[:, i - 1, j - 1]) / 16
    torch.testing.assert_close(images[:, 0, 2 * i, 2 * j], expected)


def test_digits_networks_follow_the_dcgan_rules():
    G, D = gan.DigitsGenerator(nz=8, ngf=4), gan.DigitsDiscriminator(ndf=4)
    x = G(torch.randn(5, 8, 1, 1))
    assert x.shape == (5, 1, 16, 16) and x.abs().max() <= 1
    assert D(x).shape == (5,)
    for model in (G, D):
        assert not any(isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d))
                       for m in model.modules())
    assert isinstance(G.main[-1], nn.Tanh) and not isinstance(G.main[-2], nn.BatchNorm2d)
    assert isinstance(D.main[0], nn.Conv2d) and isinstance(D.main[1], nn.LeakyReLU)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.stride == (2, 2) for m in convs[:-1]) and convs[-1].stride == (1, 1)
    assert not any(type(m) is nn.Conv2d for m in G.modules())  # only transposed convs in G
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 1


def test_train_digits_gan_smoke_and_reproducible():
    calls = []
    run = gan.train_digits_gan(epochs=1, seed=3, batch_size=16, nz=8, ngf=4, ndf=4,
                               num_samples=10, max_steps=3,
                               callback=lambda epoch, G, noise: calls.append(epoch))
    assert calls == [0]
    assert len(run["loss_d"]) == len(run["loss_g"]) == 3
    assert all(np.isfinite(run["loss_d"])) and all(np.isfinite(run["loss_g"]))
    assert run["samples"].shape == (10, 1, 16, 16) and run["fixed_noise"].shape == (10, 8, 1, 1)
    assert not run["G"].training and not run["D"].training
    again = gan.train_digits_gan(epochs=1, seed=3, batch_size=16, nz=8, ngf=4, ndf=4,
                                 num_samples=10, max_steps=3)
    assert again["loss_d"] == run["loss_d"] and torch.equal(again["samples"], run["samples"])


def test_sample_quality_tells_digits_from_noise():
    images, labels = gan.load_digits_images()
    real = gan.sample_quality(images[:300])
    assert real["confidence"] > 0.9 and real["score"] > 8
    assert real["counts"].sum() == 300 and (real["counts"] > 20).all()
    noise = gan.sample_quality(torch.rand(300, 1, 16, 16) * 2 - 1)
    assert noise["confidence"] < 0.7 and noise["confident"] < 0.2
    one_class = gan.sample_quality(images[labels == 4][:50])  # "mode collapse"
    assert one_class["score"] < 1.5 and one_class["counts"].argmax() == 4


def test_image_grid():
    images = torch.rand(5, 1, 3, 4) * 2 - 1
    grid = gan.image_grid(images, nrow=2, padding=1)
    assert grid.shape == (3 * 4 + 1, 2 * 5 + 1)
    torch.testing.assert_close(grid[1 + 4:1 + 4 + 3, 1 + 5:1 + 5 + 4], images[3, 0])
    assert (grid[9:12, 6:10] == -1).all()  # the missing sixth tile


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize("make, error, message", [
    (lambda: gan.Generator(nz=0), ValueError, "nz must be a positive int"),
    (lambda: gan.Generator(ngf=2.5), ValueError, "ngf must be a positive int"),
    (lambda: gan.Discriminator(nc=True), ValueError, "nc must be a positive int"),
    (lambda: gan.DigitsDiscriminator(ndf=-1), ValueError, "ndf must be a positive int"),
    (lambda: gan.weights_init("conv"), TypeError, "expected an nn.Module"),
    (lambda: gan.train_digits_gan(epochs=0), ValueError, "epochs must be a positive int"),
    (lambda: gan.train_digits_gan(callback=3), TypeError, "callback must be callable"),
])
def test_bad_arguments_get_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


G_SMALL, D_SMALL = gan.Generator(nz=4, ngf=2, nc=1), gan.Discriminator(nc=1, ndf=2)


@pytest.mark.parametrize("call, error, message", [
    (lambda: G_SMALL(torch.randn(2, 4, 2, 2)), ValueError, r"z must have shape \(N, 4, 1, 1\)"),
    (lambda: G_SMALL(torch.randn(2, 5)), ValueError,
     r"z must have shape \(N, 4, 1, 1\) or \(N, 4\)"),
    (lambda: G_SMALL(torch.randn(4)), ValueError, "z must have shape"),
    (lambda: G_SMALL(torch.ones(2, 4, 1, 1, dtype=torch.long)), TypeError, "floating-point"),
    (lambda: G_SMALL(np.zeros((2, 4, 1, 1))), TypeError, "must be a torch.Tensor"),
    (lambda: D_SMALL(torch.randn(2, 3, 64, 64)), ValueError, "input has 3 channels, expected 1"),
    (lambda: D_SMALL(torch.randn(2, 1, 32, 32)), ValueError, "must be 64x64 images, got 32x32"),
    (lambda: D_SMALL(torch.randn(1, 64, 64)), ValueError, r"shape \(N, 1, H, W\)"),
    (lambda: D_SMALL(torch.zeros(2, 1, 64, 64, dtype=torch.uint8)), TypeError, "floating-point"),
    (lambda: gan.DigitsDiscriminator()(torch.randn(2, 1, 8, 8)), ValueError, "16x16"),
    (lambda: gan.discriminator_loss(torch.randn(4), torch.randn(4, 1)), ValueError,
     "must have the same shape"),
    (lambda: gan.discriminator_loss(torch.randn(4), torch.randn(3)), ValueError,
     "must have the same shape"),
    (lambda: gan.discriminator_loss(torch.zeros(0), torch.zeros(0)), ValueError, "empty"),
    (lambda: gan.generator_loss(torch.ones(3, dtype=torch.long)), TypeError, "floating-point"),
    (lambda: gan.generator_loss_saturating([0.5]), TypeError, "must be a torch.Tensor"),
    (lambda: gan.sample_quality(torch.rand(2, 1, 8, 8)), ValueError, "16x16"),
])
def test_bad_inputs_get_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def _step_args(**changes):
    G, D = gan.Generator(nz=4, ngf=2, nc=1), gan.Discriminator(nc=1, ndf=2)
    args = dict(G=G, D=D, opt_g=torch.optim.SGD(G.parameters(), lr=0.1),
                opt_d=torch.optim.SGD(D.parameters(), lr=0.1),
                real=torch.randn(2, 1, 64, 64), z=torch.randn(2, 4, 1, 1))
    for key, value in changes.items():
        args[key] = value(args) if callable(value) else value
    return args


@pytest.mark.parametrize("changes, error, message", [
    (dict(z=torch.randn(3, 4, 1, 1)), ValueError, "3 noise vectors for 2 real images"),
    (dict(real=torch.randn(1, 64, 64)), ValueError, r"real must have shape \(N, C, H, W\)"),
    (dict(real=torch.zeros(2, 1, 64, 64, dtype=torch.int32)), TypeError, "floating-point"),
    (dict(opt_g=lambda a: torch.optim.SGD(list(a["G"].parameters()) + list(a["D"].parameters()),
                                          lr=0.1)),
     ValueError, "opt_g holds parameters that are not G's"),
    (dict(opt_d=lambda a: torch.optim.SGD(a["G"].parameters(), lr=0.1)), ValueError,
     "opt_d holds parameters that are not D's"),
    (dict(opt_g="adam"), TypeError, "opt_g must be a torch.optim.Optimizer"),
    (dict(G=None), TypeError, "G must be an nn.Module"),
])
def test_train_step_bad_arguments(changes, error, message):
    with pytest.raises(error, match=message):
        gan.train_step(**_step_args(**changes))


# ---------------------------------------------------------------------------- the grader's probes

def bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class LogitExampleD(ExampleD):
    """The example's discriminator without its final Sigmoid: the course's works on logits."""

    def forward(self, x):
        return self.main[:-1](x).view(-1)


def example_weights_init_affine(m):
    """The example's weights_init, for the layers that have weights (it assumes every
    BatchNorm is affine)."""
    if getattr(m, "weight", None) is not None:
        example_weights_init(m)


COUNTERPARTS = dict(
    discriminator_loss=lambda real, fake: bce(real, 1.0) + bce(fake, 0.0),
    generator_loss=lambda fake: bce(fake, 1.0),
    generator_loss_saturating=lambda fake: -bce(fake, 0.0),
    Generator=ExampleG, Discriminator=LogitExampleD, weights_init=example_weights_init_affine,
    train_step=example_step)


@pytest.mark.parametrize("probe, seed", probe_cases("gan"))
def test_probe_agrees_with_the_pytorch_example(probe, seed):
    check_probe(probe, seed, gan, COUNTERPARTS)


# -- the chapter's page and its classic mistakes --------------------------------

@pytest.mark.xdist_group("book")  # reads the session's one build of the book
def test_page_trained_its_dcgan(html):
    page = (html / "book/gan.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 5, "figures drawn by code are missing"
    text = visible_text(page)
    for count in ["3,576,704", "2,765,568"]:
        assert count in text, f"the DCGAN layer table lacks {count}"
    rows = {name: [float(v) for v in values] for name, *values in re.findall(
        r"^(real digits|DCGAN, epoch \d+|DCGAN|no BN in G|no BN in G or D|ReLU instead of LeakyReLU in D)"
        r"\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)$", text, re.M)}
    unseen = re.search(r"^real digits, not seen\s+([\d.]+)\s+([\d.]+)$", text, re.M)
    assert len(rows) == 6 and unseen, "the sample-quality tables are missing"
    final = next(values for name, values in rows.items() if name.startswith("DCGAN, epoch"))
    real, short, relu = rows["real digits"], rows["DCGAN"], rows["ReLU instead of LeakyReLU in D"]
    collapsed, one_digit = rows["no BN in G"], rows["no BN in G or D"]
    # columns: confidence, share >= 0.9, score, classes, diversity
    assert final[3] == 10 and 1 < final[2] < real[2], \
        "the prose claims the DCGAN draws all ten classes, with a score between 1 and the real digits'"
    assert final[0] < float(unseen[1]) and 0.3 <= final[1] <= 0.7, \
        "the prose claims a confidence below unseen real digits', and about half confident samples"
    assert collapsed[3] == 1 and collapsed[2] < 1.1 and collapsed[4] < 0.1, \
        "the prose claims G without BN collapses to one image"
    assert one_digit[3] == 1 and one_digit[2] < 1.1 and 10 * collapsed[4] < one_digit[4] < real[4] / 5, \
        "the prose claims G without BN anywhere draws one digit: one class, a score of 1, " \
        "varied a little but with under a fifth of the real digits' diversity"
    assert one_digit[0] > max(short[0], float(unseen[1])), \
        "the prose claims those samples are more confident than the DCGAN's and than unseen real digits"
    assert relu[3] == 10 and abs(relu[2] - short[2]) < 1 and abs(relu[0] - short[0]) < 0.05, \
        "the prose claims ReLU in D makes little difference"
    for term in ["生成对抗网络", "生成器", "判别器", "转置卷积", "模式崩溃"]:
        assert term in page


D_LOSS = "return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()"
G_LOSS = "return F.softplus(-fake_logits).mean()"
MISTAKES = [
    Mistake("average_not_sum",
            {"discriminator_loss": edit(D_LOSS, "return (F.softplus(-real_logits).mean()"
                                                " + F.softplus(fake_logits).mean()) / 2")},
            {"discriminator_loss"}, "the loss is the SUM of the two means"),
    Mistake("swapped_labels",
            {"discriminator_loss": edit(D_LOSS, "return F.softplus(real_logits).mean()"
                                                " + F.softplus(-fake_logits).mean()")},
            {"discriminator_loss"}, "you swapped them"),
    Mistake("saturating_generator_loss",
            {"generator_loss": edit(G_LOSS, "return -F.softplus(fake_logits).mean()")},
            {"generator_loss"}, "that is the saturating minimax loss"),
    Mistake("calls_bce",
            {"discriminator_loss": edit(
                "    ### BEGIN SOLUTION\n",
                "    ones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)\n"
                "    return (F.binary_cross_entropy_with_logits(real_logits, ones)\n"
                "            + F.binary_cross_entropy_with_logits(fake_logits, zeros))\n")},
            {"discriminator_loss"}, "calls torch.nn.functional.binary_cross_entropy_with_logits"),
    Mistake("log_of_sigmoid",
            {"generator_loss": edit(G_LOSS, "return -torch.log(torch.sigmoid(fake_logits)).mean()")},
            {"generator_loss"}, "use softplus"),
    Mistake("sigmoid_left_in",
            {"Discriminator": edit("nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),",
                                   "nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),")},
            {"Discriminator"}, "leave out the example's final Sigmoid"),
    Mistake("one_d_pass",
            {"train_step": edit("    loss_d = discriminator_loss(D(real), D(fake.detach()))\n",
                                "    both = D(torch.cat([real, fake.detach()]))\n"
                                "    loss_d = discriminator_loss(both[:len(real)], both[len(real):])\n")},
            {"train_step"}, "you ran D once on real and fakes together"),
    Mistake("generator_against_old_d",
            {"train_step": edit("    loss_d.backward()\n    opt_d.step()\n",
                                "    loss_d.backward()\n    loss_g = generator_loss(D(fake))\n    opt_d.step()\n",
                                "    loss_g = generator_loss(D(fake))\n    loss_g.backward()",
                                "    loss_g.backward()")},
            {"train_step"}),
    Mistake("detached_fakes_for_g",
            {"train_step": edit("loss_g = generator_loss(D(fake))", "loss_g = generator_loss(D(fake.detach()))")},
            {"train_step"}, "no gradient reached G: are the fakes detached"),
]
