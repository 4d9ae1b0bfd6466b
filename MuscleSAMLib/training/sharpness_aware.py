"""Sharpness-Aware Minimisation (Foret et al. 2021) around a base optimiser (AdamW).

Per batch (METHODS.md step 7): g = grad L(w); e = rho g / ||g||; gradient at w + e; restore w; base
optimiser step with that second gradient. Twice the cost per step. Usage::

    opt = SAMOptimizer(params, torch.optim.AdamW, rho=0.05, lr=1e-4)
    loss_fn().backward(); opt.first_step()      # w -> w + e
    loss_fn().backward(); opt.second_step()     # restore w, AdamW step
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch


class SAMOptimizer(torch.optim.Optimizer):
    """SAM wrapper: ``first_step`` perturbs, ``second_step`` restores and steps the base optimiser."""

    def __init__(self, params: Iterable, base: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
                 rho: float = 0.05, **kwargs) -> None:
        if rho <= 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base = base(self.param_groups, **kwargs)
        self.param_groups = self.base.param_groups
        for g in self.param_groups:
            g.setdefault("rho", rho)

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [p.grad.norm(2) for g in self.param_groups for p in g["params"] if p.grad is not None]
        return torch.norm(torch.stack(norms), 2) if norms else torch.tensor(0.0)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Move to w + rho g/||g|| (remembering w)."""
        scale_den = self._grad_norm() + 1e-12
        for g in self.param_groups:
            scale = g["rho"] / scale_den
            for p in g["params"]:
                if p.grad is None:
                    continue
                e = p.grad * scale.to(p)
                self.state[p]["e_w"] = e
                p.add_(e)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = True) -> None:
        """Restore w, then the base optimiser's step with the gradient taken at w + e."""
        for g in self.param_groups:
            for p in g["params"]:
                e = self.state[p].pop("e_w", None)
                if e is not None:
                    p.sub_(e)
        self.base.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None):  # type: ignore[override]
        """Full SAM step with a closure that zeroes nothing and returns loss after backward."""
        if closure is None:
            raise ValueError("SAMOptimizer.step needs a closure (or call first_step/second_step)")
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def state_dict(self):  # type: ignore[override]
        return self.base.state_dict()

    def load_state_dict(self, state) -> None:  # type: ignore[override]
        self.base.load_state_dict(state)


@contextlib.contextmanager
def frozen_batch_norm_statistics(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, batch norms in training mode still normalise by the batch but leave their running
    statistics alone (momentum 0): SAM's second, perturbed forward pass must not count twice in them."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = [m.momentum for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
        yield
    finally:
        for m, b in zip(norms, before):
            m.momentum = b
