"""D-Flow (Ben-Hamu, Puny, Gat, Karrer, Singer & Lipman, "D-Flow: differentiating through flows for
controlled generation", ICML 2024).  The authors released no code; the reference is the D-Flow
baseline of annegnx/PnP-Flow @ ee5b159 (``pnpflow/methods/d_flow.py``, ``config/method_config/d_flow.yaml``,
``scripts/script_test.sh``)."""
from __future__ import annotations

import math
import threading

import torch
from tqdm.auto import tqdm

from ..notices import shown
from ..operators.base import operator_label
from .base import Result, Solver, autocast_context, prior_parts, randn_like_batch, residual_ratio, timer
from .linalg import pseudo_inverse
from .stopping import STOP_CODES, StoppingRule

INITS = ("adjoint", "pinv", "initial_guess")


class _Abort(Exception):
    """Raised in a worker when the coordinating thread failed."""


class LockstepClosures:
    """Runs one ``torch.optim.LBFGS`` per image, each in its own thread, and batches their closures.

    ``torch.optim.LBFGS.step(closure)`` runs a whole inner loop with a strong-Wolfe line search and
    calls ``closure`` whenever it needs a loss and gradient, so B images optimised as one
    parameter would share one line search and one curvature history (the reference sums the
    batch's losses into one LBFGS problem; at B = 1 that is per image).  To keep images
    independent *and* the network calls batched, every image runs its own unmodified LBFGS in a
    worker thread whose closure posts its point here and blocks; when every live worker is
    waiting, the main thread evaluates all of them in one batch and releases them.  Only the
    main thread calls the network; workers do LBFGS's vector arithmetic."""

    def __init__(self, n: int):
        self.cond = threading.Condition()
        self.requests: dict[int, tuple[str, torch.Tensor]] = {}
        self.results: dict[int, object] = {}
        self.alive = set(range(n))
        self.failed: BaseException | None = None

    def request(self, i: int, kind: str, z: torch.Tensor):
        """Worker ``i``: post ``(kind, z)`` and wait for the answer."""
        with self.cond:
            if self.failed is not None:
                raise _Abort()
            self.requests[i] = (kind, z)
            self.cond.notify_all()
            while i not in self.results:
                if self.failed is not None:
                    raise _Abort()
                self.cond.wait()
            return self.results.pop(i)

    def finished(self, i: int) -> None:
        with self.cond:
            self.alive.discard(i)
            self.cond.notify_all()

    def gather(self) -> dict[int, tuple[str, torch.Tensor]]:
        """Main thread: wait until every live worker has posted; ``{}`` when none is left."""
        with self.cond:
            while self.alive and len(self.requests) < len(self.alive):
                self.cond.wait()
            batch, self.requests = self.requests, {}
            return batch

    def answer(self, results: dict) -> None:
        with self.cond:
            self.results.update(results)
            self.cond.notify_all()

    def abort(self, err: BaseException) -> None:
        with self.cond:
            self.failed = err
            self.cond.notify_all()


class DFlow(Solver):
    """Optimise the source noise ``z`` of the flow's ODE so that ``A(T(z))`` fits ``y``:

        min_z  Σ (A(T(z)) − y)² + λ·(½‖z‖² − (d − 1) log(‖z‖ + 1e-5))

    (d_flow.py L110-119: the summed squared residual and the negative log-density of ‖z‖ under
    N(0, I), a χ_d law, ``clamp(‖z‖², ±1e6)``), by ``torch.optim.LBFGS`` (``lbfgs_iter`` = its
    ``max_iter`` 20, history 100, strong-Wolfe line search) called ``max_iter`` times (L94-121).
    ``T``: ``steps − 1`` midpoint steps from t = ``start_time`` to 1 (``forward_flow_matching``,
    L41-49: 2 network calls a step).  Start (L85-91): ``x = H_adj(y)`` (``init="adjoint"``; ipsolve's
    options ``"pinv"``, ``"initial_guess"``), inverted by the backward ODE from t = 1 to 0
    (``inverse_flow_matching``, L51-60: dopri5, atol = rtol = 1e-5, one image at a time here since
    adaptive steps would couple a batch), then ``z = √α z_inv + √(1 − α) ε`` (α = 0.1, "blend
    initialization as in the d-flow paper").  Time: the reference's t = 0 noise, t = 1 data —
    ipsolve's convention.

    Defaults: ``config/method_config/d_flow.yaml`` (6 Euler-grid points, λ = 0.01, α = 0.1,
    ``max_iter`` 20, LBFGS 20); ``scripts/script_test.sh`` uses λ = 0.001 and ``max_iter`` per task
    (denoising 3, deblurring 7, SR 10, box inpainting 9, random inpainting 20).  Each image has its
    own LBFGS (:class:`LockstepClosures`), so a batch equals single runs (up to float32 rounding, which LBFGS amplifies: 0.03 dB
    measured).  Stopping: the budget
    (``stop=[]``, the reference), or :class:`~.stopping.StoppingRule` checked after each of the
    ``max_iter`` LBFGS calls (``stop``, ``window``, ``patience``, ``tau``, ``combine``) — one
    extra forward of ``T`` per check.  ``inversion="euler"``/``"midpoint"``: fixed-step inversion
    with ``inversion_steps`` (ipsolve's option, cheaper).  Latent flow priors: ``z`` and the ODE are
    latent, the data term is ``A(decode(T(z)))`` and the start is ``encode(x)``.

    How D-Flow differs from FMPlug (:class:`~.fmplug.FMPlug`, which builds on it): D-Flow integrates
    the whole ODE from t = 0 (5 midpoint steps, 10 network calls per evaluation), starts from the
    inverted ODE of ``H_adj(y)`` blended with noise, regularises ‖z‖ by the χ log-density and uses
    LBFGS; FMPlug starts the ODE at a learnable time t0 from ``t0·ŷ + (1 − t0)·z`` (3 Euler steps),
    projects z onto a thin shell around √d instead of the χ penalty, and uses Adam."""

    name = "dflow"
    accepts = ("flow", "latent-flow")
    search_space = {"lam": (1e-4, 1e-1)}  # reference: 0.01 (config) / 0.001 (script_test.sh)

    def uses_initial_guess(self) -> bool:
        return self.init == "initial_guess"

    def __init__(self, steps: int = 6, lam: float = 0.01, alpha: float = 0.1, max_iter: int = 20, lbfgs_iter: int = 20,
                 history_size: int = 100, start_time: float = 0.0, init: str = "adjoint", inversion: str = "dopri5",
                 inversion_steps: int = 20, inversion_tol: float = 1e-5, stop=(), window: int = 5, patience: int = 3,
                 tau: float | None = None, combine: str = "first", **kw):
        super().__init__(**kw)
        if steps < 2:
            raise ValueError(f"steps must be >= 2 (steps − 1 midpoint steps), got {steps}")
        if max_iter < 1 or lbfgs_iter < 1:
            raise ValueError(f"max_iter and lbfgs_iter must be >= 1, got {max_iter}, {lbfgs_iter}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha (the weight of the inverted start) must be in [0, 1], got {alpha}")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {shown(init)}")
        if inversion not in ("dopri5", "euler", "midpoint"):
            raise ValueError(f"inversion must be 'dopri5' (the reference), 'euler' or 'midpoint', got {shown(inversion)}")
        if not 0 <= start_time < 1:
            raise ValueError(f"start_time must be in [0, 1), got {start_time}")
        if self.warm_start is not None:
            raise ValueError("dflow has no warm start; its start is init (inverted ODE) blended with noise by alpha")
        self._stopping = StoppingRule(stop, window, patience, tau, combine)
        self.steps, self.lam, self.alpha, self.max_iter, self.lbfgs_iter = steps, lam, alpha, max_iter, lbfgs_iter
        self.history_size, self.start_time, self.init = history_size, start_time, init
        self.inversion, self.inversion_steps, self.inversion_tol = inversion, inversion_steps, inversion_tol
        self.stop, self.window, self.patience, self.tau, self.combine = self._stopping.rules, window, patience, tau, combine

    # -- the generator T and its inverse ---------------------------------------------------
    def velocity(self, inner, x, t):
        with autocast_context(self.autocast, x.device):
            return inner.velocity(x, t).to(x.dtype)

    def forward_flow(self, inner, z: torch.Tensor) -> torch.Tensor:
        """``forward_flow_matching``: ``steps − 1`` midpoint steps of size δ = (1 − start)/(steps − 1)."""
        delta = (1 - self.start_time) / (self.steps - 1)
        for i in range(self.steps - 1):
            t = delta * i + self.start_time
            z = z + delta * self.velocity(inner, z + delta / 2 * self.velocity(inner, z, t), t + delta / 2)
        return z

    @torch.no_grad()
    def invert(self, inner, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The backward ODE from t = 1 to 0 (torchdiffeq, as the reference); NFE per image."""
        from torchdiffeq import odeint

        count = [0]

        def field(t, v):
            count[0] += 1
            return self.velocity(inner, v, t.reshape(1).expand(v.shape[0]))

        grid = torch.tensor([1.0, 0.0], dtype=x.dtype, device=x.device)
        if self.inversion != "dopri5":  # fixed steps: the batch can go together
            out = odeint(field, x, grid, method=self.inversion, options={"step_size": 1.0 / self.inversion_steps})[-1]
            per = count[0]
            return out, [per] * x.shape[0]
        outs, nfe = [], []
        for i in range(x.shape[0]):
            count[0] = 0
            outs.append(odeint(field, x[i:i + 1], grid, atol=self.inversion_tol, rtol=self.inversion_tol,
                               method="dopri5")[-1])
            nfe.append(count[0])
        return torch.cat(outs), nfe

    def start_image(self, y, operator, image_shape) -> torch.Tensor:
        with torch.no_grad():
            if self.init == "adjoint":
                if not getattr(operator, "is_linear", False):
                    raise ValueError(f"init='adjoint' needs a linear operator; {operator_label(operator)} is not "
                                     f"(solver.init=initial_guess on the command line, init='initial_guess' in Python)")
                return operator.adjoint(y)
            if self.init == "pinv":
                return pseudo_inverse(operator, y, image_shape)
            return self.start_image(operator, y)

    # -- the loop -------------------------------------------------------------------------------
    def callback_budget(self) -> int:
        """Callbacks per run at most (the progress log's budget): one per closure evaluation — torch's LBFGS
        evaluates at most ``lbfgs_iter·5/4`` times per call (its ``max_eval`` default), and its strong-Wolfe
        search once more — and one per stopping-rule check, over ``max_iter`` calls."""
        return self.max_iter * (self.lbfgs_iter * 5 // 4 + 2)

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        latent, inner, decode = prior_parts(prior)
        b = y.shape[0]
        x_init = self.start_image(y, operator, (b, *prior.shape))
        with torch.no_grad():
            x_init = prior.encode(x_init) if latent else x_init
        z_inv, nfe_inv = self.invert(inner, x_init.to(y.dtype))
        noise = randn_like_batch(z_inv.shape, gens, y.device).to(z_inv.dtype)
        z0 = math.sqrt(self.alpha) * z_inv + math.sqrt(1 - self.alpha) * noise
        d = z0[0].numel()
        calls = 2 * (self.steps - 1)
        m = y[0].numel()

        def losses(z):  # per image: Σ residual² + λ·χ term; and the image T(z)
            image = decode(self.forward_flow(inner, z))
            norm = z.flatten(1).norm(dim=1)
            reg = 0.5 * (norm ** 2).clamp(-1e6, 1e6) - (d - 1) * torch.log(norm + 1e-5)
            return (operator(image) - y).pow(2).flatten(1).sum(1) + self.lam * reg, image

        coord = LockstepClosures(b)
        current = [z0[i:i + 1].detach().clone() for i in range(b)]  # each image's latest point
        evals = [0] * b
        iters, reasons = [0] * b, ["budget"] * b
        errors: list[BaseException] = []
        outputs: dict[int, torch.Tensor] = {}
        use_stop = bool(self._stopping.rules)

        def worker(i):
            try:
                z = current[i].clone().requires_grad_()
                opt = torch.optim.LBFGS([z], max_iter=self.lbfgs_iter, history_size=self.history_size,
                                        line_search_fn="strong_wolfe")
                monitor = self._stopping.monitor(1, m) if use_stop else None

                def closure():
                    opt.zero_grad()
                    loss, grad = coord.request(i, "grad", z.detach().clone())
                    z.grad = grad
                    return loss

                for it in range(self.max_iter):
                    opt.step(closure)
                    iters[i] = it + 1
                    if monitor is not None:
                        image, res = coord.request(i, "eval", z.detach().clone())
                        stop, why, value = monitor.update(image, res.view(1), it)
                        if bool(stop[0]):
                            reasons[i], outputs[i] = STOP_CODES[int(why[0])], value
                            return
                outputs.setdefault(i, None)
                current[i] = z.detach().clone()
            except _Abort:
                pass
            except BaseException as err:  # noqa: BLE001 - re-raised by the main thread
                errors.append(err)
            finally:
                coord.finished(i)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(b)]
        bar = tqdm(desc=self.name, disable=not self.show_progress, leave=False)
        for th in threads:
            th.start()
        step = 0  # the batched network evaluations so far: the callback's step index (0, 1, …, as other solvers')
        try:
            while True:
                batch = coord.gather()
                if not batch:
                    break
                for i, (_, z) in batch.items():
                    current[i] = z
                zs = torch.cat(current).requires_grad_()
                grad_ids = [i for i, (kind, _) in batch.items() if kind == "grad"]
                with torch.set_grad_enabled(bool(grad_ids)):
                    loss, image = losses(zs)
                answers = {}
                if grad_ids:
                    (g,) = torch.autograd.grad(loss[grad_ids].sum(), zs)
                    answers.update({i: (loss[i].detach(), g[i:i + 1].detach()) for i in grad_ids})
                eval_ids = [i for i, (kind, _) in batch.items() if kind == "eval"]
                if eval_ids:
                    with torch.no_grad():
                        res = residual_ratio(y, operator(image.detach()), sigma).cpu()
                    answers.update({i: (image[i:i + 1].detach().clamp(-1, 1), res[i]) for i in eval_ids})
                for i in batch:
                    evals[i] += 1
                bar.update(1)
                if callback is not None:
                    callback(step, {"x": image.detach(), "loss": loss.detach()})
                step += 1
                coord.answer(answers)
        except BaseException as err:
            coord.abort(err)
            for th in threads:
                th.join()
            raise
        finally:
            bar.close()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        with torch.no_grad():
            final_ids = [i for i in range(b) if outputs.get(i) is None]
            final = torch.empty((b, *prior.shape), dtype=y.dtype, device=y.device)
            if final_ids:
                image = decode(self.forward_flow(inner, torch.cat(current))).clamp(-1, 1)
                final[final_ids] = image[final_ids]
                for i in final_ids:
                    evals[i] += 1
            for i in range(b):
                if outputs.get(i) is not None:
                    final[i] = outputs[i][0]
            res = residual_ratio(y, operator(final), sigma).cpu()
        seconds = timer() - start
        info = [{"nfe": nfe_inv[i] + evals[i] * calls, "iterations": iters[i], "stop_reason": reasons[i],
                 "residual": float(res[i]), "seconds": seconds, "closure_evaluations": evals[i],
                 "inversion_nfe": nfe_inv[i]} for i in range(b)]
        return Result(x=final, info=info)
