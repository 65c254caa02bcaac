"""Per-launch timing and launch-option overrides of the Triton kernels, for the debug scripts.

``install(config, log)`` wraps every ``*_kernel`` of ``chunk_triton`` (the forward's launches)
and of ``chunk_bwd_delta_triton`` (the delta rule's backward, which ``chunk_triton`` imports
when it runs): each launch records CUDA events in ``log`` under its kernel's name (and TOP flag)
and takes the options ``config`` gives it. A CONFIG is ``default`` or ``kernel:option=value,...``
joined by ``+`` (e.g. ``ut_factors_kernel:num_warps=8+chunk_output_kernel:num_stages=2``);
``kernel/TOP=0|1:...`` applies to the launches with that flag only. ``BV`` is taken only where
the grid follows from it (``VALUE_TILE_AXIS``): elsewhere it is refused, since an unresized grid
computes a wrong output, not a timing.
"""
import statistics

import torch

from hf_loglinear.kernels import chunk_bwd_delta_triton, chunk_triton

MODULES = (chunk_triton, chunk_bwd_delta_triton)
KERNELS = {n: (m, f) for m in MODULES for n, f in vars(m).items() if n.endswith("_kernel") and hasattr(f, "run")}
# the grid axis a BV override re-sizes (None: BV is an inner loop, the grid stays)
VALUE_TILE_AXIS = {"chunk_output_kernel": 2, "level_scan_bwd_delta_kernel": 2, "ut_factors_kernel": None,
                   "state_pairs_kernel": None}


class Timed:
    """A kernel whose launches take launch-option overrides and record CUDA events under
    (name, TOP flag)."""

    def __init__(self, kernel, log, over):
        self.kernel, self.log, self.over = kernel, log, over  # over: [(flag condition or None, options)]

    def __getitem__(self, grid):
        def launch(*a, **kwargs):
            flags = {"TOP": int(kwargs["TOP"])} if "TOP" in kwargs else {}
            key = self.kernel.__name__ + "".join(f" {f}={bool(x)}" for f, x in flags.items())
            over = {}
            for cond, opts in self.over:
                if cond is None or flags.get(cond[0]) == cond[1]:
                    over.update(opts)
            g = grid
            if VALUE_TILE_AXIS.get(self.kernel.__name__) is not None and "BV" in over:
                g = (*grid[:2], -(-kwargs["V"] // over["BV"]))
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.kernel[g](*a, **{**kwargs, **over})
            end.record()
            self.log.setdefault(key, []).append((start, end))
        return launch


def install(config, log):
    """Wrap every kernel of ``MODULES`` with the options of ``config`` (module docstring)."""
    over = {}
    for part in config.split("+") if config != "default" else []:
        target, opts = part.split(":")
        name, _, flag = target.partition("/")
        if name not in KERNELS:
            raise SystemExit(f"unknown kernel {name!r}: one of {sorted(KERNELS)}")
        options = {o.split("=")[0]: int(o.split("=")[1]) for o in opts.split(",")}
        if "BV" in options and name not in VALUE_TILE_AXIS:
            raise SystemExit(f"BV of {name} sizes its grid, which this script does not re-size: one of {sorted(VALUE_TILE_AXIS)}")
        cond = (flag.split("=")[0], int(flag.split("=")[1])) if flag else None
        over.setdefault(name, []).append((cond, options))
    for name, (module, kernel) in KERNELS.items():
        setattr(module, name, Timed(kernel, log, over.get(name, [])))


def per_launch(run, config, repeats=10):
    """(median time of ``run`` in ms, {launch key: median ms}) with ``config``'s options: one
    warm-up call (it compiles), then ``repeats`` recorded calls and triton's do_bench of the total."""
    import triton

    log = {}
    install(config, log)
    run()
    log.clear()
    for _ in range(repeats):
        run()
    torch.cuda.synchronize()
    total = triton.testing.do_bench(run, return_mode="median")
    return total, {key: statistics.median(s.elapsed_time(e) for s, e in evs) for key, evs in log.items()}


def cells_line(total, cells):
    return f"total {total:.2f} ms; " + "; ".join(f"{k} {t:.3f}" for k, t in cells.items())
