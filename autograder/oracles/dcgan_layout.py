"""The PyTorch examples' DCGAN state_dict layouts (dcgan/main.py), key -> shape.

Sequential indices count the parameter-free ReLU, LeakyReLU and Tanh modules.
"""
from .resnet_layout import bn_shapes


def generator_shapes(nz=100, ngf=64, nc=3):
    widths = [nz, 8 * ngf, 4 * ngf, 2 * ngf, ngf, nc]
    shapes = {}
    for index, (cin, cout) in enumerate(zip(widths, widths[1:])):
        shapes[f"main.{3 * index}.weight"] = (cin, cout, 4, 4)  # ConvTranspose2d: (in, out, k, k)
        if index < 4:
            shapes |= bn_shapes(f"main.{3 * index + 1}", cout)
    return shapes


def discriminator_shapes(nc=3, ndf=64):
    shapes = {"main.0.weight": (ndf, nc, 4, 4)}
    widths = [ndf, 2 * ndf, 4 * ndf, 8 * ndf]
    for index, (cin, cout) in enumerate(zip(widths, widths[1:])):
        shapes[f"main.{3 * index + 2}.weight"] = (cout, cin, 4, 4)
        shapes |= bn_shapes(f"main.{3 * index + 3}", cout)
    return shapes | {"main.11.weight": (1, 8 * ndf, 4, 4)}
