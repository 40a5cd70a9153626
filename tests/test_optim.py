"""The fit loop's FlatAdamW: the same updates as torch.optim.AdamW, checkpoints of either resume,
and a fit that never imports torch._dynamo (the reason it exists)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from vae_anomaly.training.model import VAE, default_architecture
from vae_anomaly.training.optim import FlatAdamW
from vae_anomaly.training.scores import training_loss

D = 6


def _vae(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(default_architecture(D, hidden=(32, 32)), np.zeros(D), np.ones(D))


def _train(vae, opt, x, steps, flat):
    torch.manual_seed(1)  # the same reparameterization noise for both optimizers
    for s in range(steps):
        loss = training_loss(vae, x[(s % 4) * 16 : (s % 4) * 16 + 16], 1.0)
        opt.zero_grad() if flat else opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_updates_equal_torch_adamw(weight_decay):
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(2))
    ours, ref = _vae(), _vae()
    _train(ours, FlatAdamW(ours.parameters(), lr=3e-3, weight_decay=weight_decay), x, 40, True)
    _train(ref, torch.optim.AdamW(ref.parameters(), lr=3e-3, weight_decay=weight_decay, foreach=False), x, 40, False)
    moved = False
    for (name, a), b, start in zip(ours.state_dict().items(), ref.state_dict().values(), _vae().state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        moved |= not torch.equal(a, start)
    assert moved


def test_resumes_from_a_torch_adamw_state():
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(3))
    ref = _vae()
    torch_opt = torch.optim.AdamW(ref.parameters(), lr=3e-3, weight_decay=0.0, foreach=False)
    _train(ref, torch_opt, x, 10, False)
    ours = _vae()
    ours.load_state_dict(ref.state_dict())
    opt = FlatAdamW(ours.parameters(), lr=3e-3)
    opt.load_state_dict(torch_opt.state_dict())
    assert opt.steps == 10
    _train(ref, torch_opt, x, 10, False)
    _train(ours, opt, x, 10, True)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="moments"):
        FlatAdamW(_vae().parameters(), lr=1e-3).load_state_dict(
            {"step": 1, "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)})


def test_a_fit_does_not_import_dynamo():
    code = ("import sys, numpy as np\n"
            "from vae_anomaly.training.train import TrainConfig, train\n"
            "train(np.random.default_rng(0).normal(size=(64, 4)), config=TrainConfig(epochs=2, hidden=(8,)))\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
