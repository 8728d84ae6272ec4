"""Slow, independent references for the four norms: oracles, not course code.

Explicit Python loops over channels / samples / groups. Means and variances are
computed in plain Python (``math.fsum`` over the values of one slice, pulled out
with ``.tolist()``), never with torch's reductions, so these functions check the
reference in ``solutions.norms`` against something that is not torch's
normalisation code. Only indexing and elementwise arithmetic with Python floats
touch torch. Everything is float64 and meant for small tensors.
"""
import math

import torch


def _values(t):
    """All values of a tensor as a flat list of Python floats."""
    return [float(v) for v in t.reshape(-1).tolist()]


def mean_var(values):
    """(mean, biased variance, unbiased variance) with the textbook formulas."""
    n = len(values)
    mean = math.fsum(values) / n
    sq = math.fsum((v - mean) ** 2 for v in values)
    return mean, sq / n, (sq / (n - 1) if n > 1 else float("nan"))


def _affine(out_slice, c, weight, bias):
    if weight is not None:
        out_slice = out_slice * float(weight[c])
    if bias is not None:
        out_slice = out_slice + float(bias[c])
    return out_slice


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Returns (out, new_running_mean, new_running_var); inputs are not modified."""
    x = x.double()
    C = x.shape[1]
    out = torch.empty_like(x)
    new_rm = None if running_mean is None else [float(v) for v in running_mean.tolist()]
    new_rv = None if running_var is None else [float(v) for v in running_var.tolist()]
    for c in range(C):
        xc = x[:, c]
        if training:
            mean, var_b, var_u = mean_var(_values(xc))
            if new_rm is not None:
                new_rm[c] = (1 - momentum) * new_rm[c] + momentum * mean
                new_rv[c] = (1 - momentum) * new_rv[c] + momentum * var_u
        else:
            mean, var_b = float(running_mean[c]), float(running_var[c])
        out[:, c] = _affine((xc - mean) / math.sqrt(var_b + eps), c, weight, bias)
    as_t = (lambda v: None if v is None else torch.tensor(v, dtype=torch.float64))
    return out, as_t(new_rm), as_t(new_rv)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Returns (out, new_running_mean, new_running_var); inputs are not modified."""
    x = x.double()
    N, C = x.shape[:2]
    out = torch.empty_like(x)
    new_rm = None if running_mean is None else [float(v) for v in running_mean.tolist()]
    new_rv = None if running_var is None else [float(v) for v in running_var.tolist()]
    for c in range(C):
        means, vars_u = [], []
        for n in range(N):
            xnc = x[n, c]
            if use_input_stats:
                mean, var_b, var_u = mean_var(_values(xnc))
                means.append(mean)
                vars_u.append(var_u)
            else:
                mean, var_b = float(running_mean[c]), float(running_var[c])
            out[n, c] = _affine((xnc - mean) / math.sqrt(var_b + eps), c, weight, bias)
        if use_input_stats and new_rm is not None:
            new_rm[c] = (1 - momentum) * new_rm[c] + momentum * math.fsum(means) / N
            new_rv[c] = (1 - momentum) * new_rv[c] + momentum * math.fsum(vars_u) / N
    as_t = (lambda v: None if v is None else torch.tensor(v, dtype=torch.float64))
    return out, as_t(new_rm), as_t(new_rv)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = x.double()
    k = len(normalized_shape)
    lead = x.shape[:x.dim() - k]
    flat = x.reshape(-1, *normalized_shape)
    out = torch.empty_like(flat)
    for i in range(flat.shape[0]):
        mean, var_b, _ = mean_var(_values(flat[i]))
        o = (flat[i] - mean) / math.sqrt(var_b + eps)
        if weight is not None:
            o = o * weight.double()
        if bias is not None:
            o = o + bias.double()
        out[i] = o
    return out.reshape(*lead, *normalized_shape)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    x = x.double()
    N, C = x.shape[:2]
    per = C // num_groups
    out = torch.empty_like(x)
    for n in range(N):
        for g in range(num_groups):
            chans = range(g * per, (g + 1) * per)
            values = [v for c in chans for v in _values(x[n, c])]
            mean, var_b, _ = mean_var(values)
            for c in chans:
                out[n, c] = _affine((x[n, c] - mean) / math.sqrt(var_b + eps), c, weight, bias)
    return out


def batch_norm_loss(x, weight, bias, grad_out, eps):
    """sum(grad_out * batch_norm(x)) in training mode, as a Python float."""
    out, _, _ = batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    return math.fsum(_values(out * grad_out))


def batch_norm_numerical_grad(x, weight, bias, grad_out, eps, h=1e-6):
    """Central differences of ``batch_norm_loss`` w.r.t. x, weight and bias (no autograd)."""
    def grad_of(t, f):
        g = torch.zeros_like(t)
        flat_t, flat_g = t.view(-1), g.view(-1)
        for i in range(flat_t.numel()):
            old = float(flat_t[i])
            flat_t[i] = old + h
            plus = f()
            flat_t[i] = old - h
            minus = f()
            flat_t[i] = old
            flat_g[i] = (plus - minus) / (2 * h)
        return g

    x, weight, bias = x.clone(), weight.clone(), bias.clone()
    loss = lambda: batch_norm_loss(x, weight, bias, grad_out, eps)
    return grad_of(x, loss), grad_of(weight, loss), grad_of(bias, loss)
