"""The training side's arithmetic on accelerators: float32 loss sums under bf16 autocast, no TF32 in
validation and the latent prior, the CUDA random state in checkpoints, and torch.compile compiling
once. The CUDA tests skip cleanly without CUDA; the rest run on the CPU."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vae_anomaly.training.loop import full_float32  # noqa: E402
from vae_anomaly.training.scores import _float32_row_sum, row_sum  # noqa: E402

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@pytest.mark.parametrize("device", DEVICES)
def test_loss_row_sums_stay_float32_under_bf16_autocast(device):
    t = torch.randn(8, 3000, generator=torch.Generator().manual_seed(0)).to(device) * 100 + 1000
    exact = t.double().sum(-1)
    with torch.autocast(device, dtype=torch.bfloat16):
        plain, ours = row_sum(t), _float32_row_sum(t)
    assert plain.dtype == torch.bfloat16  # what autocast does to the MatMul: the reason for the helper
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.double().cpu(), exact.cpu(), rtol=1e-6)
    assert (plain.double() - exact).abs().max() > 1e-6 * exact.abs().max()  # bf16 loses what float32 keeps


def test_full_float32_turns_tf32_off_and_restores_the_settings():
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [b.fp32_precision for b in backends]
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        with full_float32():
            assert [b.fp32_precision for b in backends] == ["ieee", "ieee"]
        assert [b.fp32_precision for b in backends] == ["tf32", before[1]]
    finally:
        torch.backends.cuda.matmul.fp32_precision = before[0]


@needs_cuda
def test_validation_convolutions_on_cuda_are_ieee_float32():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(16, 8, 28, 28, generator=g), torch.randn(32, 8, 3, 3, generator=g)
    exact = torch.nn.functional.conv2d(x.double(), w.double())
    with full_float32():
        got = torch.nn.functional.conv2d(x.cuda(), w.cuda()).cpu()
    np.testing.assert_allclose(got.double(), exact, rtol=1e-4, atol=1e-4)


@needs_cuda
def test_a_resumed_cuda_run_equals_an_uninterrupted_one(cardio, tmp_path):
    """The training noise ε is drawn on the GPU: without its random state in the checkpoint the
    resumed run draws other noise and ends elsewhere."""
    from vae_anomaly.training.train import TrainConfig, train

    X = cardio[0][:600]
    cfg = dict(seed=5, device="cuda", precision="fp32")
    train(X, config=TrainConfig(epochs=3, **cfg), checkpoint=tmp_path / "ck.pt", checkpoint_every=3)
    resumed = train(X, config=TrainConfig(epochs=6, **cfg), resume=tmp_path / "ck.pt")
    straight = train(X, config=TrainConfig(epochs=6, **cfg))
    for (k, a), b in zip(resumed.graph.state_dict().items(), straight.graph.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.slow
def test_torch_compile_compiles_in_the_first_epoch_only_and_its_model_exports_and_ranks(cardio, tmp_path):
    """A training set that is not a multiple of the batch size ends each epoch with a partial batch;
    the compiled step must not be recompiled for it in every epoch. The compiled model exports to
    the float32 graph and detects (4 epochs on cardio's normal rows: about 0.9 ROC-AUC)."""
    from sklearn.metrics import roc_auc_score
    from torch._dynamo.utils import counters

    from vae_anomaly import Scorer
    from vae_anomaly.training.export import export_model
    from vae_anomaly.training.train import TrainConfig, train

    X, X_test, y_test = cardio
    graphs = []
    result = train(X, config=TrainConfig(epochs=4, seed=0, compile=True, device="cpu", batch_size=64, hidden=(16,)),
                   progress=lambda epoch, *_: graphs.append(counters["stats"]["unique_graphs"]))
    assert result.summary["n_train"] % 64, "the test needs a partial last batch"
    assert len(graphs) == 4 and graphs[0] >= 1
    assert graphs[1:] == [graphs[0]] * 3, f"graphs compiled by the end of each epoch: {graphs}"
    export_model(result, tmp_path / "m.onnx")
    assert roc_auc_score(y_test, Scorer(tmp_path / "m.onnx").score_samples(X_test)) > 0.8
