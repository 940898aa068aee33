"""The optimisation loop shared by DMPlug and FMPlug: Adam on the seed (and, for blind
deblurring, on kernel logits), per-image stopping without the ground truth."""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from ..operators import BlindBlur
from .base import Result, Solver, autocast_context, randn_like_batch, residual_ratio, timer
from .stopping import RULES as STOP_RULES, StoppingRule


def kernel_logits_init(batch: int, size: int, device) -> torch.Tensor:
    """Logits of a centred Gaussian bump (std size/8) — the blind solvers' starting kernel."""
    r = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    logit = -(r[:, None] ** 2 + r[None] ** 2) / (2 * (size / 8) ** 2)
    return logit.expand(batch, size, size).clone()


class PlugSolver(Solver):
    """Minimise ``ℓ(y, A(G(params)))`` = per-image mean squared error by Adam, where ``G`` is a
    few-step deterministic sampler of the prior (subclasses define ``init_params``,
    ``generate``, ``project``).  Stops each image by :class:`~.stopping.StoppingRule`
    (``stop``, ``window``, ``patience``, ``tau``, ``combine``: ES-WMV, the discrepancy principle
    ‖y − A(x)‖ ≤ τ σ √m with ``tau=None`` the χ²_m 95 % quantile, either first or ES-WMV armed
    by the discrepancy) or the ``iterations`` budget; a non-finite loss stops the image and
    returns its last finite iterate.  Blind deblurring: the kernel is ``softmax`` of
    ``kernel_size²`` logits, drawn N(0, 1) (``kernel_init="randn"``, DMPlug ``bid.py`` line 54) or a centred bump (``"bump"``,
    ipsolve's option), optimised jointly at ``kernel_lr`` (0.1, ``bid.py``'s ``lrk``)."""

    blind_capable = True
    network_calls = 1
    accepts_penalty = True  # z-coupling: minimises (‖y − A(x)‖² + penalty(x)) / m

    def __init__(self, iterations: int = 5000, lr: float = 1e-2, stop=STOP_RULES, window: int = 100,
                 patience: int = 1000, tau: float | None = None, combine: str = "first", kernel_lr: float = 0.1,
                 kernel_size: int | None = None, kernel_init: str = "randn", checkpointing: bool = False, **kw):
        super().__init__(**kw)
        self._stopping = StoppingRule(stop, window, patience, tau, combine)
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.iterations, self.lr = iterations, lr
        self.stop, self.window, self.patience, self.tau, self.combine = self._stopping.rules, window, patience, tau, combine
        if kernel_init not in ("randn", "bump"):
            raise ValueError(f"kernel_init must be 'randn' (DMPlug's N(0, 1) logits) or 'bump', got {kernel_init!r}")
        self.kernel_lr, self.kernel_size, self.kernel_init, self.checkpointing = kernel_lr, kernel_size, kernel_init, checkpointing

    # -- subclass hooks ---------------------------------------------------------------
    def init_params(self, y, operator, prior, gens) -> list[dict]:
        raise NotImplementedError

    def generate(self, prior) -> torch.Tensor:
        raise NotImplementedError

    def project(self) -> None:
        pass

    def network(self, fn, *args):
        """One network call, with optional gradient checkpointing and bf16 autocast."""
        with autocast_context(self.autocast, args[0].device):
            if self.checkpointing and torch.is_grad_enabled():
                return checkpoint(fn, *args, use_reentrant=False).float()
            return fn(*args).float()

    # -- the loop ---------------------------------------------------------------------
    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        b = y.shape[0]
        groups = self.init_params(y, operator, prior, gens)
        blind = isinstance(operator, BlindBlur)
        logits = None
        if blind:
            size = self.kernel_size or operator.kernel_size
            logits = (randn_like_batch((b, size, size), gens, y.device) if self.kernel_init == "randn"
                      else kernel_logits_init(b, size, y.device)).requires_grad_()
            groups.append({"params": [logits], "lr": self.kernel_lr})
        params = [p for g in groups for p in g["params"]]
        opt = torch.optim.Adam(groups)
        active = torch.ones(b, dtype=torch.bool)
        reason, iters, seconds = ["budget"] * b, [self.iterations] * b, [0.0] * b
        out_x, out_k = None, None
        last_x = None
        traces = [[] for _ in range(b)]
        monitor = self._stopping.monitor(b, y[0].numel())
        bar = tqdm(range(self.iterations), desc=self.name, disable=not self.progress, leave=False)
        for it in bar:
            kernel = torch.softmax(logits.flatten(1), 1).view_as(logits) if blind else None
            x = self.generate(prior)
            ax = operator(x, kernel=kernel) if blind else operator(x)
            per_image = (y - ax).pow(2).flatten(1).mean(1)
            objective = per_image if self._penalty is None else per_image + self._penalty(x) / y[0].numel()
            finite = (torch.isfinite(per_image) & torch.isfinite(x).flatten(1).all(1)).cpu()
            xd = x.detach()
            if out_x is None:
                out_x, last_x = xd.clone(), xd.clone()
                out_k = kernel.detach().clone() if blind else None
            last_x[finite] = xd[finite]
            res = residual_ratio(y, ax.detach(), sigma).cpu()
            now = timer() - start

            def finish(mask, why, value):
                for i in torch.nonzero(mask).flatten().tolist():
                    out_x[i] = value[i]
                    if blind:
                        out_k[i] = kernel[i].detach()
                    reason[i], iters[i], seconds[i] = why, it + 1, now
                    active[i] = False

            finish(active & ~finite, "nan", last_x)
            stop, why, value = monitor.update(torch.where(finite.view(-1, 1, 1, 1).to(xd.device), xd, last_x), res, it)
            for rule in ("discrepancy", "es-wmv"):
                finish(active & stop & torch.tensor([w == rule for w in why]), rule, value)
            if self.record_trace:
                for i in range(b):
                    traces[i].append(float(per_image[i].detach()))
            if callback is not None:
                callback(it, {"x": xd, "loss": per_image.detach(), "residual": res, "active": active.clone()})
            if not active.any():
                break
            if it == self.iterations - 1:
                finish(active.clone(), "budget", xd)
                break
            loss = objective[active.to(per_image.device) & finite.to(per_image.device)].sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            frozen = ~active
            saved = [p.detach()[frozen.to(p.device)].clone() for p in params] if frozen.any() else None
            opt.step()
            with torch.no_grad():
                if saved is not None:  # a stopped image stops changing
                    for p, s in zip(params, saved):
                        p[frozen.to(p.device)] = s
                self.project()
            bar.set_postfix(active=int(active.sum()), loss=f"{float(per_image.detach().mean()):.2e}")
        bar.close()
        total = timer() - start
        with torch.no_grad():
            ax = operator(out_x, kernel=out_k) if blind else operator(out_x)
            res = residual_ratio(y, ax, sigma).cpu()
        info = [{"nfe": iters[i] * self.network_calls, "iterations": iters[i], "stop_reason": reason[i],
                 "residual": float(res[i]), "seconds": seconds[i] or total,
                 **({"loss_trace": traces[i]} if self.record_trace else {})} for i in range(b)]
        return Result(x=out_x.clamp(-1, 1), info=info, kernel=out_k)
