"""The optimisation loop shared by DMPlug and FMPlug: Adam on the seed (and, for blind
deblurring, on kernel logits), per-image stopping without the ground truth."""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from ..notices import shown
from ..operators import BlindBlur
from ..tensors import host_reads_are_free
from .base import Result, Solver, autocast_context, randn_like_batch, residual_ratio, timer
from ..operators.restrict import gather, restrict, split_entries
from .criteria import holdout_error
from ..tensors import per_image
from .stopping import RULES as STOP_RULES, STOP_CODES, StoppingRule


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
    returns its last finite iterate.  ``stop`` may include ``validation``: a seeded fraction
    ``holdout`` of the measurement's entries is held out, the rest fitted, and each image stops
    when its held-out error stops improving (:class:`~.stopping.StoppingRule`).  Blind deblurring: the kernel is ``softmax`` of
    ``kernel_size²`` logits, drawn N(0, 1) (``kernel_init="randn"``, DMPlug ``bid.py`` line 54) or a centred bump (``"bump"``,
    ipsolve's option), optimised jointly at ``kernel_lr`` (0.1, ``bid.py``'s ``lrk``)."""

    blind_capable = True
    network_calls = 1
    accepts_penalty = True  # z-coupling: minimises (‖y − A(x)‖² + penalty(x)) / m

    def __init__(self, iterations: int = 5000, lr: float = 1e-2, stop=STOP_RULES, window: int = 100,
                 patience: int = 1000, tau: float | None = None, combine: str = "first", kernel_lr: float = 0.1,
                 kernel_size: int | None = None, kernel_init: str = "randn", checkpointing: bool = False,
                 sync_every: int | None = None, holdout: float = 0.2, **kw):
        super().__init__(**kw)
        self._stopping = StoppingRule(stop, window, patience, tau, combine)
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.iterations, self.lr = iterations, lr
        self.stop, self.window, self.patience, self.tau, self.combine = self._stopping.rules, window, patience, tau, combine
        if kernel_init not in ("randn", "bump"):
            raise ValueError(f"kernel_init must be 'randn' (DMPlug's N(0, 1) logits) or 'bump', got {shown(kernel_init)}")
        self.kernel_lr, self.kernel_size, self.kernel_init, self.checkpointing = kernel_lr, kernel_size, kernel_init, checkpointing
        if sync_every is not None and sync_every < 1:
            raise ValueError(f"sync_every must be >= 1 (or null: 1 on a CPU, 25 on an accelerator), got {sync_every}")
        self.sync_every = sync_every
        if not 0.0 < float(holdout) <= 0.5:
            raise ValueError(f"holdout must be a fraction in (0, 0.5] (the measurement entries the validation "
                             f"stopping rule holds out), got {shown(holdout)}")
        self.holdout = holdout

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
        """The loop keeps its per-image bookkeeping (stop decisions, returned iterates, reason
        codes) on the device and waits for it only every ``sync_every`` iterations, to leave the
        loop once every image has stopped: a stopped image is frozen, so the extra iterations
        change nothing that is returned."""
        start = timer()
        b, dev = y.shape[0], y.device
        full_operator, full_y, validation = operator, y, None
        if "validation" in self._stopping.rules:  # fit part of y, predict the rest (self-validation)
            kept, held = split_entries(y[0].numel(), self.holdout, torch.Generator().manual_seed(0),
                                       operator.observed_entries(y.shape))
            held = held.to(dev)  # once, not at every iteration's validation
            operator, y, y_held = restrict(operator, kept, tuple(y.shape[1:])), gather(y, kept), gather(y, held)
            validation = lambda x, k: holdout_error(  # noqa: E731
                y_held, gather(full_operator(x, kernel=k) if k is not None else full_operator(x), held), sigma)
        groups = self.init_params(y, operator, prior, gens)
        blind = isinstance(operator, BlindBlur)
        logits = None
        if blind:
            size = self.kernel_size or operator.kernel_size
            logits = (randn_like_batch((b, size, size), gens, dev) if self.kernel_init == "randn"
                      else kernel_logits_init(b, size, dev)).requires_grad_()
            groups.append({"params": [logits], "lr": self.kernel_lr})
        params = [p for g in groups for p in g["params"]]
        opt = torch.optim.Adam(groups)
        sync_every = self.sync_every or (1 if host_reads_are_free(dev) else 25)
        active = torch.ones(b, dtype=torch.bool, device=dev)
        code = torch.zeros(b, dtype=torch.long, device=dev)  # STOP_CODES index: budget until stopped
        iters = torch.full((b,), self.iterations, dtype=torch.long, device=dev)
        out_x = out_k = last_x = None
        traces = []
        monitor = self._stopping.monitor(b, y[0].numel())
        bar = tqdm(range(self.iterations), desc=self.name, disable=not self.show_progress, leave=False)
        run_iters = 0

        def finish(mask, why, value, it):
            """Images in ``mask`` stop after iteration ``it`` with reason codes ``why``, returning ``value``."""
            nonlocal out_x, out_k, code, iters, active
            out_x = torch.where(per_image(mask, value), value, out_x)
            if blind:
                out_k = torch.where(per_image(mask, out_k), kernel.detach(), out_k)
            code = torch.where(mask, why, code)
            iters = torch.where(mask, torch.full_like(iters, it + 1), iters)
            active = active & ~mask

        for it in bar:
            run_iters = it + 1
            kernel = torch.softmax(logits.flatten(1), 1).view_as(logits) if blind else None
            x = self.generate(prior)
            ax = operator(x, kernel=kernel) if blind else operator(x)
            image_mse = (y - ax).pow(2).flatten(1).mean(1)
            objective = image_mse if self._penalty is None else image_mse + self._penalty(x) / y[0].numel()
            finite = torch.isfinite(image_mse) & torch.isfinite(x).flatten(1).all(1)
            xd = x.detach()
            if out_x is None:
                out_x, last_x = xd.clone(), xd.clone()
                out_k = kernel.detach().clone() if blind else None
            last_x = torch.where(per_image(finite, xd), xd, last_x)
            res = residual_ratio(y, ax.detach(), sigma)

            finish(active & ~finite, torch.full_like(code, STOP_CODES.index("nan")), last_x, it)
            val = None
            if validation is not None:
                with torch.no_grad():
                    val = validation(xd, kernel.detach() if blind else None)
            stop, why, value = monitor.update(torch.where(per_image(finite, xd), xd, last_x), res, it, val)
            finish(active & stop, why, value, it)
            if self.record_trace:
                traces.append(image_mse.detach())
            if callback is not None:
                callback(it, {"x": xd, "loss": image_mse.detach(), "residual": res, "active": active.clone(),
                              **({"validation": val} if val is not None else {})})
            if it == self.iterations - 1:
                finish(active, torch.full_like(code, STOP_CODES.index("budget")), xd, it)
                break
            all_active = False  # known on the host only right after a synchronisation
            if (it + 1) % sync_every == 0:
                n_active = int(active.sum())  # the one host synchronisation, every sync_every iterations
                if n_active == 0:
                    break
                all_active = n_active == b
                if self.show_progress:
                    bar.set_postfix(active=n_active, loss=f"{float(image_mse.detach().mean()):.2e}")
            loss = torch.where(active & finite, objective, torch.zeros_like(objective)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            saved = None if all_active else [p.detach().clone() for p in params]
            opt.step()
            with torch.no_grad():
                if saved is not None:  # a stopped image stops changing
                    for p, s in zip(params, saved):
                        p.copy_(torch.where(per_image(active, p), p, s))  # every parameter is per image
                self.project()
        bar.close()
        total = timer() - start
        with torch.no_grad():  # the residual on the whole measurement, also when part was held out
            ax = full_operator(out_x, kernel=out_k) if blind else full_operator(out_x)
            res = residual_ratio(full_y, ax, sigma).cpu()
        iters, code = iters.cpu().tolist(), code.cpu().tolist()
        trace = torch.stack(traces, 1).cpu() if traces else None
        # per-image seconds: the batch's wall time prorated by the iterations each image ran
        info = [{"nfe": iters[i] * self.network_calls, "iterations": iters[i], "stop_reason": STOP_CODES[code[i]],
                 "residual": float(res[i]), "seconds": total * iters[i] / max(run_iters, 1),
                 **({"loss_trace": trace[i, :iters[i]].tolist()} if trace is not None else {})} for i in range(b)]
        return Result(x=out_x.clamp(-1, 1), info=info, kernel=out_k)
