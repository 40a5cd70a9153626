"""The fit loop's optimizer: AdamW over one flat buffer of the model's parameters.

Why not ``torch.optim.AdamW``: building any ``torch.optim`` optimizer imports ``torch._dynamo`` (its
``add_param_group`` is wrapped by ``torch._disable_dynamo``), 1.6 s on the 2-core machine of
benchmarks/README.md, about a sixth of a default fit of a few thousand rows, paid on every
``vae-anomaly fit``. The update is the same as ``torch.optim.AdamW(foreach=False)``'s (a test holds
the two together), computed by a handful of vectorised operations over the whole buffer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class FlatAdamW:
    """Adam with decoupled weight decay over one contiguous buffer of all parameters.

    The update (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
    Algorithm 2, with Adam's moments and bias corrections of Kingma & Ba, ICLR 2015, Algorithm 1),
    at step t with gradient g, learning rate γ, decay λ:

        θ ← θ (1 − γ λ);  m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;
        θ ← θ − γ / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

    On construction each parameter's data and gradient become views of two flat buffers (same
    dtype and device for all), so that autograd accumulates into the flat gradient and a step is a
    few operations over the whole model. Build it after the model is on its device; moving the
    model afterwards detaches it from the optimizer.

    Parameters
    ----------
    params : the parameters to optimize (all of one dtype and device).
    lr, betas, eps, weight_decay : γ, (β₁, β₂), ε, λ as above (torch.optim.AdamW's meanings).

    Raises
    ------
    ValueError : no parameters, or parameters of more than one dtype or device.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("FlatAdamW: no parameters to optimize")
        if len({(p.dtype, p.device) for p in self.params}) > 1:
            raise ValueError("FlatAdamW: the parameters must share one dtype and device")
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        first = self.params[0]
        n = sum(p.numel() for p in self.params)
        self.flat = torch.empty(n, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        with torch.no_grad():
            for p in self.params:
                k = p.numel()
                self.flat[offset : offset + k].copy_(p.reshape(-1))
                p.data = self.flat[offset : offset + k].view_as(p)
                p.grad = self.grad[offset : offset + k].view_as(p)
                offset += k
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self._denom = torch.empty_like(self.flat)
        self.steps = 0

    def zero_grad(self) -> None:
        """Zero the flat gradient in place (the parameters' .grad stay views of it)."""
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW update of every parameter from its accumulated gradient."""
        self.steps += 1
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            self.flat.mul_(1 - self.lr * self.weight_decay)
        self.exp_avg.lerp_(self.grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(self.grad, self.grad, value=1 - beta2)
        bias1, bias2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
        denom = torch.sqrt(self.exp_avg_sq, out=self._denom).div_(math.sqrt(bias2)).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-self.lr / bias1)

    def state_dict(self) -> dict:
        """{"step": int, "exp_avg": flat tensor, "exp_avg_sq": flat tensor} (copies)."""
        return {"step": self.steps, "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the moments and step count from :meth:`state_dict`, or from a
        ``torch.optim.AdamW`` state dict over the same parameters in the same order (checkpoints
        written before this optimizer).

        Raises
        ------
        ValueError : moments of another size than the parameters.
        """
        if "state" in state:  # torch.optim's layout: per-parameter moments, keyed by position
            per = [state["state"][i] for i in range(len(self.params))]
            state = {"step": int(per[0]["step"]), "exp_avg": torch.cat([s["exp_avg"].reshape(-1) for s in per]),
                     "exp_avg_sq": torch.cat([s["exp_avg_sq"].reshape(-1) for s in per])}
        if state["exp_avg"].numel() != self.flat.numel() or state["exp_avg_sq"].numel() != self.flat.numel():
            raise ValueError(f"FlatAdamW: the state holds {state['exp_avg'].numel()} moments for "
                             f"{self.flat.numel()} parameters")
        self.steps = int(state["step"])
        self.exp_avg.copy_(state["exp_avg"].reshape(-1))
        self.exp_avg_sq.copy_(state["exp_avg_sq"].reshape(-1))
