"""Probes of the GAN exercise."""
import numpy as np

from ..verify import Probe
from . import MODULE_HELPERS as HELPERS
from . import STAND_IN, float32


LOSS = """
import torch
logits = [a.requires_grad_(), b.requires_grad_()][:{count}]
loss = {name}(*logits)
result = [loss, torch.autograd.grad(loss, logits)]
"""

NETWORK = HELPERS + """
m = fill(net(*args).to(x.dtype), seed)
result = [layout(m), m(x), m.eval()(x2), dict(m.state_dict())]
"""

# The template's tiny networks and PyTorch's losses, so that train_step is checked
# apart from the student's Generator, Discriminator and losses. D's BN tells one pass
# of D over real and fakes together from the two separate passes the docstring asks for.
TRAIN_STEP = HELPERS + STAND_IN + """
import torch.nn.functional as F
G = fill(nn.Sequential(nn.ConvTranspose2d(nz, 6, 4, 1, 0, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                       nn.ConvTranspose2d(6, 1, 4, 2, 1, bias=False), nn.Tanh()).double(), seed)
D = fill(nn.Sequential(nn.Conv2d(1, 6, 4, 2, 1, bias=False), nn.BatchNorm2d(6), nn.LeakyReLU(0.2),
                       nn.Conv2d(6, 1, 4, 1, 0, bias=False), nn.Flatten(0)).double(), seed + 1)
G.eval(), D.eval()
if adam:
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.999)) for m in (G, D))
else:
    opt_g, opt_d = (torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for m in (G, D))
bce = F.binary_cross_entropy_with_logits
with stand_in(train_step,
              discriminator_loss=lambda r, f: bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f)),
              generator_loss=lambda f: bce(f, torch.ones_like(f))):
    losses = [train_step(G, D, opt_g, opt_d, r, zs) for r, zs in zip(real, z)]
returns = [isinstance(step, tuple) and len(step) == 2 and all(isinstance(v, float) for v in step)
           for step in losses]
result = [losses, returns, G.training, D.training,
          dict(G.state_dict()), dict(D.state_dict())]
"""


def _logits(rng, shape, dtype):
    """Logits with 0 and +-1e4 (where log(sigmoid) overflows) among them."""
    t = rng.normal(0, 10, shape).ravel()
    t[rng.choice(t.size, 4, replace=False)] = [0, 1e4, -1e4, rng.choice([30, -100])]
    return t.reshape(shape).astype(dtype)


def _losses(dtype, rank):
    def draw(rng):
        shape = tuple(int(v) for v in rng.integers(4, 8, rank))
        return dict(a=_logits(rng, shape, dtype), b=_logits(rng, shape, dtype))
    return draw


def _loss(name, count):
    """Logits of 1 and 2 dimensions in both dtypes, as the tests use, on every verification."""
    return [Probe(LOSS.format(name=name, count=count), _losses(dtype, rank))
            for dtype in (np.float64, np.float32) for rank in (1, 2)]


def _generator(rng):
    args = [int(v) for v in rng.integers(1, 5, 3)]
    n = int(rng.integers(2, 4))
    return dict(args=args, seed=int(rng.integers(2**31)), x=rng.normal(size=(n, args[0], 1, 1)),
                x2=rng.normal(size=(n, args[0], 1, 1)))


def _discriminator(rng):
    args = [int(v) for v in rng.integers(1, 4, 2)]
    n = int(rng.integers(2, 4))
    return dict(args=args, seed=int(rng.integers(2**31)),
                x=rng.uniform(-1, 1, (n, args[0], 64, 64)), x2=rng.uniform(-1, 1, (n, args[0], 64, 64)))


def _weights_init(rng):
    a, b, c, d = (int(v) for v in rng.integers(2, 9, 4))
    return dict(a=a, b=b, c=c, d=d, seed=int(rng.integers(2**31)))


def _train_step(rng):
    steps, n, nz = 3, int(rng.integers(2, 6)), int(rng.integers(2, 6))
    adam = bool(rng.integers(2))
    return dict(nz=nz, adam=adam, lr=float(rng.uniform(1e-3, 1e-2) if adam else rng.uniform(0.02, 0.1)),
                seed=int(rng.integers(2**30)), real=rng.uniform(-1, 1, (steps, n, 1, 8, 8)),
                z=rng.normal(size=(steps, n, nz, 1, 1)))


PROBES = {
    "discriminator_loss": _loss("discriminator_loss", 2),
    "generator_loss": _loss("generator_loss", 1),
    "generator_loss_saturating": _loss("generator_loss_saturating", 1),
    # float32 too, as the visible tests: the sums may run in another order
    "Generator": [Probe("net = Generator" + NETWORK, _generator),
                  Probe("net = Generator" + NETWORK, float32(_generator), rtol=1e-4, atol=1e-5)],
    "Discriminator": [Probe("net = Discriminator" + NETWORK, _discriminator),
                      Probe("net = Discriminator" + NETWORK, float32(_discriminator), rtol=1e-4,
                            atol=1e-4)],
    "weights_init": [Probe(HELPERS + """
model = nn.Sequential(nn.ConvTranspose2d(a, b, 4, 1, 0, bias=False), nn.BatchNorm2d(b), nn.ReLU(True),
                      nn.Sequential(nn.Conv2d(b, c, 3, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
                                    nn.BatchNorm2d(c, affine=False)),
                      nn.Flatten(), nn.Linear(c, d))
fill(model, seed)
torch.manual_seed(seed)
model.apply(weights_init)
result = dict(model.state_dict())
""", _weights_init)],
    "train_step": [Probe(TRAIN_STEP, _train_step)],
}
