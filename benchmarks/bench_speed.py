"""Speed and memory, side by side with PyOD's VAE and with the hardware's GEMM rate, in one run.

Data: random float32 rows, 50,000 x 64 (the shape of issue 6's reference figures). Prints:
1. scoring rows/s: our ONNX Scorer, the same graph in eager torch, PyOD's VAE decision_function,
   and the CLI end to end (read .npy, score, write .csv);
2. achieved GFLOP/s of the Scorer against a numpy matmul chain with the model's own layer shapes
   and latent samples;
3. training seconds per epoch, ours vs PyOD's VAE with the same layer sizes;
4. peak RSS of `vae-anomaly score` on a file 10x the chunk budget and on a --big-gb file, beside
   np.load of the same file;
5. GPU training seconds per epoch when CUDA is present (batch 128 / 4096, float32 / bf16 autocast,
   torch.compile).

    python benchmarks/bench_speed.py [--rows 50000] [--big-gb 1.0] [--skip-pyod] [--hidden 128,128]

--hidden sets the layer widths of every model in the run (ours and PyOD's); default: our default
architecture (three layers of 256). Issue 6's reference figures were taken at 128,128, the
default of that time for 64 features.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from vae_anomaly import Scorer
from vae_anomaly.training.export import export_model
from vae_anomaly.training.train import TrainConfig, train

# VmHWM (peak resident set of this process image); ru_maxrss would carry the parent's peak over exec
_HWM = "print(int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) // 1024, file=sys.stderr)"
RSS_CHILD = ("import sys; from vae_anomaly.cli.main import main; sys.argv = ['vae-anomaly'] + sys.argv[1:]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n" + _HWM)
LOAD_CHILD = "import sys, numpy as np; a = np.load(sys.argv[1]); a.sum()\n" + _HWM


def rate(fn, n_rows: int, repeat: int = 3) -> float:
    """Best rows/s over a few runs (this shared 2-core machine's timings vary by up to 30%)."""
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_rows / best


def flops_per_row(d: int, k: int, hidden: tuple[int, ...], n_samples: int) -> float:
    """Multiply-adds x 2 of the encoder once and the decoder once per latent sample."""
    enc = [d, *hidden, 2 * k]
    dec = [k, *reversed(hidden), d]
    mults = lambda sizes: sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))  # noqa: E731
    return 2.0 * (mults(enc) + n_samples * mults(dec))


def numpy_chain(X: np.ndarray, d: int, k: int, hidden: tuple[int, ...], n_samples: int, chunk: int = 4096):
    """The same layer shapes as plain numpy matmuls (+ ReLU), the GEMM rate of this machine."""
    rng = np.random.default_rng(0)
    enc = [rng.standard_normal((a, b), dtype=np.float32) for a, b in zip([d, *hidden], [*hidden, 2 * k])]
    dec = [rng.standard_normal((a, b), dtype=np.float32) for a, b in zip([k, *reversed(hidden)], [*reversed(hidden), d])]

    def run():
        for s in range(0, len(X), chunk):
            h = X[s : s + chunk]
            for w in enc:
                h = np.maximum(h @ w, 0)
            z = np.repeat(h[:, :k], n_samples, axis=0)
            for w in dec:
                z = np.maximum(z @ w, 0)
    return run


def peak_rss_mb(args: list[str], code: str = RSS_CHILD) -> int:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    return int(r.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--big-gb", type=float, default=1.0)
    ap.add_argument("--skip-pyod", action="store_true")
    ap.add_argument("--hidden", default=None, help="comma-separated layer widths, e.g. 128,128")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    n, d = args.rows, args.features
    X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    tmp = Path(tempfile.mkdtemp())
    hidden = None if args.hidden is None else tuple(int(w) for w in args.hidden.split(","))
    cfg = TrainConfig(epochs=3, seed=0, device="cpu", patience=100, hidden=hidden)
    result = train(X, config=cfg)
    export_model(result, tmp / "model.onnx")
    arch = result.graph.vae.arch  # the layers train chose: one source for every peer below
    ours_epoch = result.summary["seconds"] / result.summary["epochs_run"]
    scorer = Scorer(tmp / "model.onnx")
    L = result.graph.eps.shape[0]
    print(f"data {n} x {d} float32; model: hidden {arch.hidden}, latent {arch.latent_dim}, {L} latent samples; "
          f"torch threads {torch.get_num_threads()}")

    onnx_rps = rate(lambda: scorer.score_samples(X), n)
    with torch.no_grad():
        xt = torch.as_tensor(X)
        eager_rps = rate(lambda: [result.graph(xt[s : s + 4096]) for s in range(0, n, 4096)], n)
    np.save(tmp / "x.npy", X)
    cli = [sys.executable, "-m", "vae_anomaly.cli.main", "score", str(tmp / "x.npy"), "-m", str(tmp / "model.onnx"),
           "-o", str(tmp / "out.csv")]
    cli_rps = rate(lambda: subprocess.run(cli, check=True), n)
    fpr = flops_per_row(d, arch.latent_dim, arch.hidden, L)
    chain_rps = max(rate(numpy_chain(X, d, arch.latent_dim, arch.hidden, L, chunk=c), n) for c in (256, 1024, 4096))

    pyod_rps = pyod_epoch = None
    if not args.skip_pyod:
        from pyod.models.vae import VAE as PyodVAE

        peer = PyodVAE(encoder_neuron_list=list(arch.hidden), decoder_neuron_list=list(arch.hidden),
                       latent_dim=arch.latent_dim, epoch_num=1, verbose=0, random_state=0, device="cpu")
        t = time.perf_counter()
        peer.fit(X)
        pyod_epoch = time.perf_counter() - t
        pyod_rps = rate(lambda: peer.decision_function(X), n)

    print("\n| scoring | rows/s | GFLOP/s (model FLOPs) |\n|---|---:|---:|")
    print(f"| ours, ONNX Scorer ({L} samples) | {onnx_rps:,.0f} | {onnx_rps * fpr / 1e9:.1f} |")
    print(f"| ours, same graph in eager torch | {eager_rps:,.0f} | {eager_rps * fpr / 1e9:.1f} |")
    print(f"| ours, CLI end to end (read .npy, write .csv, process start) | {cli_rps:,.0f} | |")
    print(f"| numpy matmul chain, same layer shapes (best of chunks 256/1024/4096) | {chain_rps:,.0f} | "
          f"{chain_rps * fpr / 1e9:.1f} |")
    if pyod_rps:
        print(f"| PyOD VAE decision_function (1 sample) | {pyod_rps:,.0f} | |")
    print(f"\nScorer at {100 * onnx_rps / chain_rps:.0f}% of the numpy chain's GFLOP/s "
          f"({fpr / 1e6:.2f} MFLOP per row).")
    print("\n| training | s / epoch |\n|---|---:|")
    print(f"| ours (CPU, batch {cfg.batch_size}, incl. validation pass) | {ours_epoch:.2f} |")
    if pyod_epoch:
        print(f"| PyOD VAE (CPU, batch 32, same layers) | {pyod_epoch:.2f} |")
        print(f"\nTraining speed-up over PyOD: {pyod_epoch / ours_epoch:.1f}x.")
    if torch.cuda.is_available():
        for batch, precision, compiled in ((128, "fp32", False), (128, "bf16", False), (4096, "fp32", False),
                                           (4096, "bf16", False), (4096, "bf16", True)):
            gpu = train(X, config=TrainConfig(epochs=3, seed=0, device="cuda", patience=100, batch_size=batch,
                                              precision=precision, compile=compiled, hidden=hidden))
            print(f"| ours ({torch.cuda.get_device_name()}, batch {batch}, {precision}"
                  f"{', torch.compile' if compiled else ''}; incl. compile) | "
                  f"{gpu.summary['seconds'] / gpu.summary['epochs_run']:.2f} |")

    chunk = 65536
    small_rows = 10 * chunk
    np.save(tmp / "small.npy", np.random.default_rng(1).standard_normal((small_rows, d), dtype=np.float32))
    big_rows = int(args.big_gb * 1024**3 / (4 * d))
    with open(tmp / "big.npy", "wb") as f:  # written in pieces: this script stays small too
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (big_rows, d)})
        rng = np.random.default_rng(2)
        for s in range(0, big_rows, chunk):
            f.write(rng.standard_normal((min(chunk, big_rows - s), d), dtype=np.float32).tobytes())
    print("\n| peak RSS | file | MB | CLI rows/s |\n|---|---:|---:|---:|")
    for name, rows in (("small.npy", small_rows), ("big.npy", big_rows)):
        size = (tmp / name).stat().st_size / 2**20
        t = time.perf_counter()
        rss = peak_rss_mb(["score", str(tmp / name), "-m", str(tmp / "model.onnx"), "-o", str(tmp / "o.npy")])
        seconds = time.perf_counter() - t
        out = np.load(tmp / "o.npy", mmap_mode="r")
        assert out.shape == (rows,), out.shape
        print(f"| vae-anomaly score ({rows:,} rows, chunk {chunk:,}) | {size:,.0f} MB | {rss:,} | {rows / seconds:,.0f} |")
        print(f"| np.load of the same file (peer) | {size:,.0f} MB | {peak_rss_mb([str(tmp / name)], LOAD_CHILD):,} | |")


if __name__ == "__main__":
    main()
