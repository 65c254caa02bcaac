"""The backward of a checkpoint: recompute a function under autograd and differentiate it."""
from __future__ import annotations

import torch


def recompute_grads(run, inputs, needs, cotangents):
    """Gradients of ``run(*inputs)`` (a sequence of outputs, None where absent) against
    ``cotangents`` (None where no gradient arrived), for the inputs ``needs`` marks; None for the
    others (None inputs included). ``run`` is called again with autograd on detached copies."""
    leaves = [None if x is None else x.detach().requires_grad_(need) for x, need in zip(inputs, needs)]
    with torch.enable_grad():
        outs = run(*leaves)
    pairs = [(o, d) for o, d in zip(outs, cotangents) if o is not None and d is not None]
    wanted = [x for x in leaves if x is not None and x.requires_grad]
    grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [d for _, d in pairs], allow_unused=True))
    return [next(grads) if x is not None and x.requires_grad else None for x in leaves]
