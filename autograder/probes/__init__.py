"""Out-of-process verification probes, one module per assignment (see ``autograder/verify.py``).

Each module's ``PROBES`` maps every graded item to probes whose inputs are drawn
fresh for each submission; shapes are drawn too, so no output can be stored.
"""
import ast
from pathlib import Path

import numpy as np


def _function_source(path: Path, name: str) -> str:
    """The source of function ``name`` in ``path``, decorators included, read without importing it."""
    text = path.read_text()
    node = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == name)
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return "\n".join(text.splitlines()[first - 1:node.end_lineno]) + "\n"


def float32(draw):
    """``draw`` with its arrays in float32, for probes of the tests' float32 cases."""
    def draw32(rng):
        return {k: v.astype(np.float32) if isinstance(v, np.ndarray) else v
                for k, v in draw(rng).items()}
    return draw32


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

# ``stand_in(owner, **replacements)``: while the block runs, the names that the answer
# ``owner`` (a function, or a module class by its forward) reads from its notebook are
# bound to the course's versions, so that an item is verified apart from the student's
# other answers, as the notebook's tests do with ``stand_ins``.
STAND_IN = "import contextlib\n\n\n" + _function_source(Path(__file__).parent.parent / "checks.py", "bound") + """

def stand_in(owner, **replacements):
    return bound(getattr(owner, "forward", owner).__globals__, replacements)
"""
