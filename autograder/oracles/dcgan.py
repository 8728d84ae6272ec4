"""The PyTorch examples' DCGAN (dcgan/main.py), rebuilt: its networks, its
``weights_init`` and its training loop body, on logits.

The hidden tests of the GAN exercise compare submissions with these; the test
suite checks ``solutions.gan`` against them.
"""
import torch
import torch.nn.functional as F
from torch import nn


class ExampleG(nn.Module):
    """pytorch/examples dcgan/main.py's Generator (without the multi-GPU wrapper)."""

    def __init__(self, nz, ngf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.main(z)


class ExampleD(nn.Module):
    """pytorch/examples dcgan/main.py's Discriminator: ends in a Sigmoid, returns (N,)."""

    def __init__(self, nc, ndf):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def example_weights_init(m):
    """The example's weights_init, verbatim in substance."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        m.weight.data.normal_(0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)


def example_step(G, D, opt_g, opt_d, real, z):
    """The example's loop body, on logits: backward on the real and the fake terms apart."""
    G.train()
    D.train()
    D.zero_grad()
    out = D(real)
    err_real = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    err_real.backward()
    fake = G(z)
    out = D(fake.detach())
    err_fake = F.binary_cross_entropy_with_logits(out, torch.zeros_like(out))
    err_fake.backward()
    opt_d.step()
    G.zero_grad()
    out = D(fake)
    err_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    err_g.backward()
    opt_g.step()
    return (err_real + err_fake).item(), err_g.item()
