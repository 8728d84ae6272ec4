"""Out-of-process verification probes, one module per assignment (see ``autograder/verify.py``).

Each module's ``PROBES`` maps every graded item to probes whose inputs are drawn
fresh for each submission; shapes are drawn too, so no output can be stored.
"""

# Snippet code for probes that build modules. ``fill(model, seed)`` sets every
# floating state_dict entry from ``seed`` in sorted-key order, so equal layouts
# get equal weights whatever order a submission built its modules in (variance
# 1 / fan_in; BN weights and running variances positive). ``layout(model)`` is
# the state dict's "key[shape];..." as a tensor of bytes (results cannot be strings).
MODULE_HELPERS = """
import torch
from torch import nn


def fill(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, t in sorted(model.state_dict().items()):
        if name.endswith(("running_var", "weight")) and t.dim() == 1:
            t.uniform_(0.5, 1.5, generator=g)
        elif t.is_floating_point():
            bound = (3 / t[0].numel()) ** 0.5
            t.uniform_(-bound, bound, generator=g)
    return model


def layout(model):
    keys = ";".join(f"{k}{list(t.shape)}" for k, t in sorted(model.state_dict().items()))
    return torch.tensor(list(keys.encode()))
"""
