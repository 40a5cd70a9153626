"""Paired ablations of the defaults on every shared dataset × 3 seeds (README, "How the defaults were chosen").

For each (dataset, seed): the benchmark's split (``vae_anomaly.evaluation.benchmark.split``, 50,000-row
cap), one VAE trained with ``--config`` (JSON of TrainConfig fields over the defaults, plus
``"transform": "yeo-johnson"`` or ``"yeo-johnson-skewed"`` to screen a Yeo-Johnson power transform of
every column or of the skewed ones (``_transform``), fitted on the training rows and applied outside
the graph, ``"iwae_samples": K`` to screen the IWAE training objective with K samples
(``_iwae_loss``), and ``"ensemble": M`` for M VAEs (seeds s, s + 1000, ...) scored by the mean of
their scores; the prior never changes training, so it is built here), then the test rows'
negative ELBO under each score variant from the same encoder and decoder, so that the differences
between variants are the variants' alone:

* ``mean``: the default, the decoder at the posterior mean: −log p(x|μ(x)) + KL, N(0, I) prior;
* ``L16``, ``L4``, ``L1``: the Monte Carlo negative ELBO over the first L of the 16 fixed noise
  vectors, −(1/L) Σ_l log p(x|z_l) + KL (the default score before the posterior mean);
* ``mean+prior``: the posterior mean with the training rows' aggregate posterior as the latent
  prior when there are at most 4,096 training rows (N(0, I) above, as the option does);
* ``knnz5``, ``mean+knnz5``, ``recon+knnz5`` (and ``20`` for the 20th neighbour, ``@4096`` for a
  sample of 4,096 training rows): the latent kNN density of the training rows' posterior means, alone,
  in place of N(0, I) in the negative ELBO, or added to the reconstruction term
  (``_latent_knn_variants``).

Writes one JSON line per (dataset, seed): ROC-AUC and average precision of each variant, fit seconds,
epochs run. Workers: ``--jobs`` processes with one math thread each, as ``vae-anomaly benchmark --jobs``.

    python benchmarks/ablation.py run ../shared/datasets --config '{"target_steps": 2000}' -o a.jsonl
    python benchmarks/ablation.py compare a.jsonl:L16+prior benchmarks/results/benchmark.json:vae
    python benchmarks/ablation.py compare a.jsonl:mean a.jsonl:L16
    python benchmarks/ablation.py choose a.jsonl:mean a.jsonl:mean+prior@1024 a.jsonl:mean+prior --kind cost

``mean+prior@M`` reads the prior up to M training rows off the records (mean+prior where a record
has at most M training rows, mean above).

``compare A B`` pairs two variants on the (dataset, seed) pairs they share (a ``benchmark.json``
record set is read by its method name) and prints the mean ROC-AUC of each, the mean per-dataset
difference, the datasets that moved by more than 0.002, and the Wilcoxon signed-rank p-value over
the per-dataset differences (3-seed means), as the defaults rule asks (docs/design.md).
``floors A`` checks issue 29's floor: each dataset's 3-seed mean in A against its best 3-seed mean
in any committed version of ``results/benchmark.json`` (read from git).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

PRIOR_MAX_ROWS = 4096


def _variants(vae, eps, xs_train, x_te):
    """name -> the test rows' negative ELBO (n,), all from the same trained VAE."""
    import torch

    from vae_anomaly.training.graph import aggregate_posterior
    from vae_anomaly.training.scores import ScoreGraph, kl_terms, row_sum

    prior = aggregate_posterior(vae, xs_train) if xs_train.shape[0] <= PRIOR_MAX_ROWS else None
    graphs = {"mean": ScoreGraph(vae, eps).eval(), "mean+prior": ScoreGraph(vae, eps, prior).eval()}

    def monte_carlo(graph, x, n_samples):  # −(1/L) Σ_l log p(x|z_l) + closed-form KL
        xs, mask, cs, mu, logvar = graph.posterior(x)
        z = vae.reparameterize(mu.unsqueeze(1), logvar.unsqueeze(1), eps[:n_samples])
        return -row_sum(graph.log_likelihood(xs, mask, z, cs)[0]) / n_samples + row_sum(kl_terms(mu, logvar))

    def scores(fn):
        return torch.cat([fn(x_te[i : i + 256]) for i in range(0, len(x_te), 256)]).double().numpy()

    out = {name: scores(lambda x, g=g: g(x)[0]) for name, g in graphs.items()}
    out.update({f"L{n}": scores(lambda x, n=n: monte_carlo(graphs["mean"], x, n)) for n in (16, 4, 1)})
    out.update(_latent_knn_variants(vae, graphs["mean"], xs_train, x_te, scores))
    return out


def _latent_knn_variants(vae, graph, xs_train, x_te, scores) -> dict:
    """The latent kNN density in place of the N(0, I) prior (issue 29, item 3: a score that combines
    the ELBO with the latent density), from the same model; name -> the test rows' scores (n,).

    The k-nearest-neighbour density estimate of the training rows' posterior means μ(x_i) at a test
    row's μ(x) is p̂(μ) = K / (N V r_K(μ)^k) (Loftsgaarden & Quesenberry 1965, Ann. Math. Statist.
    36(3); k latent dimensions, V the unit ball's volume, r_K the distance to the K-th neighbour), so
    −log p̂(μ) = k log r_K(μ) + const. The negative ELBO at the posterior mean holds
    −log N(μ; 0, I) = ½|μ|² + const in its KL; ``mean+knnzK`` swaps that term for k log r_K(μ):
    −log p(x|μ) + ½ Σ (σ² − 1 − log σ²) + k log r_K(μ). ``recon+knnzK`` drops the rest of the KL,
    ``knnzK`` is k log r_K(μ) alone, and ``…@4096`` takes the neighbours among a seeded sample of at
    most 4,096 training rows (what one graph would hold).
    """
    import torch

    xs = vae.observed(xs_train)[0] if vae.arch.masked else xs_train
    mu_all = torch.cat([vae.encode(xs[i : i + 8192])[0] for i in range(0, len(xs), 8192)]).double()
    sample = torch.as_tensor(np.sort(np.random.default_rng(0).permutation(len(mu_all))[:4096]))
    k_dim = mu_all.shape[1]

    def parts(x):  # (n, 5): recon, neg ELBO − ½|μ|², and k log r_K for K = 5, 20 over all rows and the sample
        neg_elbo, recon = graph(x)[:2]
        mu = graph.posterior(x)[3].double()
        cols = [recon.double(), neg_elbo.double() - 0.5 * (mu * mu).sum(1)]
        for ref in (mu_all, mu_all[sample]):
            dist = torch.cdist(mu, ref)
            for kk in (5, 20):
                r = dist.kthvalue(min(kk, ref.shape[0]), dim=1).values
                cols.append(k_dim * torch.log(r.clamp_min(1e-12)))
        return torch.stack(cols, 1)

    p = scores(parts)
    out = {}
    for j, name in enumerate(("knnz5", "knnz20", "knnz5@4096", "knnz20@4096"), start=2):
        out[name] = p[:, j]
        out["mean+" + name] = p[:, 1] + p[:, j]
        out["recon+" + name] = p[:, 0] + p[:, j]
    return out


def _transform(X: np.ndarray, tr: np.ndarray, kind: str | None) -> np.ndarray:
    """A screen of an input transform, fitted on the training rows and applied outside the graph:
    ``yeo-johnson`` on every column, ``yeo-johnson-skewed`` on the columns whose training-row sample
    skewness exceeds 1 in magnitude (scikit-learn's PowerTransformer; Yeo & Johnson 2000)."""
    from scipy.stats import skew
    from sklearn.preprocessing import PowerTransformer

    if kind is None:
        return X
    if kind not in ("yeo-johnson", "yeo-johnson-skewed"):
        raise ValueError(f"transform: got {kind!r}; expected 'yeo-johnson' or 'yeo-johnson-skewed'")
    X = X.astype(np.float64, copy=True)
    x_tr = X[tr]
    cols = np.arange(X.shape[1])
    if kind == "yeo-johnson-skewed":
        cols = cols[np.abs(np.nan_to_num(skew(x_tr, axis=0))) > 1.0]
    if len(cols):
        pt = PowerTransformer(method="yeo-johnson").fit(x_tr[:, cols])
        X[:, cols] = np.nan_to_num(pt.transform(X[:, cols]), posinf=1e6, neginf=-1e6)
    return X


def _iwae_loss(vae, xs, beta, cs=None, free_bits=0.0, missing=True, *, n_samples: int):
    """A screen of the importance-weighted training objective (Burda, Grosse & Salakhutdinov, ICLR
    2016, eq. 8) in place of the ELBO: −log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x),
    averaged over the batch; numeric unconditional tables only (what the shared datasets are)."""
    import torch

    from vae_anomaly.training.scores import gaussian_log_prob

    if cs is not None or vae.arch.categories or beta != 1.0 or free_bits:
        raise ValueError("the IWAE screen covers numeric unconditional tables at beta 1 only")
    mu, logvar = vae.encode(xs)
    eps = torch.randn(n_samples, *mu.shape, dtype=mu.dtype)
    z = vae.reparameterize(mu, logvar, eps)  # (K, n, k)
    x_mu, x_logvar = vae.decode(z)
    log_px = gaussian_log_prob(xs, x_mu, x_logvar).float().sum(-1)
    zero = torch.zeros((), dtype=z.dtype)
    log_pz = gaussian_log_prob(z, zero, zero).sum(-1)
    log_qz = gaussian_log_prob(z, mu, logvar).sum(-1)
    log_w = log_px + log_pz - log_qz
    return -(torch.logsumexp(log_w, 0) - np.log(n_samples)).mean()


def _task(name: str, path: str, seed: int, config: dict, max_rows: int) -> dict:
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    from vae_anomaly.evaluation.benchmark import split
    from vae_anomaly.evaluation.datasets import load_labelled
    from vae_anomaly.training.data import split_rows
    from vae_anomaly.training.train import TrainConfig, train

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    X, y = load_labelled(path)
    tr, te = split(y, seed, max_rows)
    settings = {k: v for k, v in config.items() if k not in ("transform", "iwae_samples", "ensemble")}
    X = _transform(X, tr, config.get("transform"))
    if config.get("iwae_samples"):
        from vae_anomaly.training import loop

        loop.training_loss = functools.partial(_iwae_loss, n_samples=int(config["iwae_samples"]))
    x_te = torch.as_tensor(X[te], dtype=torch.float32)
    fit_seconds, epochs, members = 0.0, [], []
    for j in range(int(config.get("ensemble", 1))):  # an ensemble's member j has seed + 1000 j
        cfg = TrainConfig(seed=seed + 1000 * j, **{**settings, "prior_max_rows": 0})
        t = time.perf_counter()
        result = train(X[tr], config=cfg)
        fit_seconds += time.perf_counter() - t
        epochs.append(result.summary.get("epochs_run"))
        vae, eps = result.graph.vae, result.graph.eps
        rows, _ = split_rows(len(tr), cfg.val_fraction, cfg.seed)
        xs = vae.standardize(torch.as_tensor(X[tr][rows], dtype=torch.float32))
        with torch.no_grad():
            members.append(_variants(vae, eps, xs, x_te))
    rec = {"dataset": name, "seed": seed, "config": config, "n_train": int(len(rows)),
           "fit_seconds": fit_seconds, "epochs": epochs[0] if len(epochs) == 1 else epochs}
    for v in members[0]:  # an ensemble's score: its members' mean
        s = np.mean([m[v] for m in members], axis=0)
        rec[v] = {"roc_auc": float(roc_auc_score(y[te], s)), "average_precision": float(average_precision_score(y[te], s))}
    return rec


def _threads_1() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def run(args) -> None:
    from vae_anomaly.evaluation.benchmark import find_datasets

    config = json.loads(args.config)
    wanted = None if args.datasets is None else set(args.datasets.split(","))
    tasks = [(n, str(p), s, config, args.max_rows) for n, p in find_datasets(args.data)
             if wanted is None or n in wanted for s in range(args.seeds)]
    done = set()
    try:
        with open(args.out) as f:  # resume: skip the pairs already written
            done = {(r["dataset"], r["seed"]) for r in map(json.loads, f)}
    except FileNotFoundError:
        pass
    tasks = [t for t in tasks if (t[0], t[2]) not in done]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_threads_1) as pool, \
            open(args.out, "a") as out:
        futures = [pool.submit(_task, *t) for t in tasks]
        for i, fut in enumerate(as_completed(futures), 1):
            rec = fut.result()
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(f"[{i}/{len(tasks)}] {rec['dataset']} seed {rec['seed']}: fit {rec['fit_seconds']:.1f} s, "
                  + " ".join(f"{k} {v['roc_auc']:.4f}" for k, v in rec.items() if isinstance(v, dict) and "roc_auc" in v),
                  file=sys.stderr, flush=True)


def _load(spec: str) -> dict:
    """'FILE:VARIANT[,FILE:VARIANT...]' -> {(dataset, seed): (roc_auc, fit_seconds)}; with several
    sources, a (dataset, seed) pair is taken from the first that has it."""
    out: dict = {}
    for part in reversed(spec.split(",")):
        path, _, variant = part.rpartition(":")
        if path.endswith(".json"):
            out.update(_method_records(json.load(open(path))["results"], variant))
        else:
            with open(path) as f:
                out.update({(r["dataset"], r["seed"]): (r[_variant(variant, r)]["roc_auc"], r["fit_seconds"])
                            for r in map(json.loads, f)})
    return out


def _method_records(recs: list[dict], method: str) -> dict:
    """A published table's records of ``method`` -> {(dataset, seed): (roc_auc, fit_seconds)}."""
    return {(r["dataset"], r["seed"]): (r["roc_auc"], r.get("fit_seconds", np.nan))
            for r in recs if r["method"] == method}


def _variant(variant: str, rec: dict) -> str:
    """A record's variant; 'mean+prior@M' is the aggregate-posterior prior up to M training rows
    (M <= PRIOR_MAX_ROWS): the record's mean+prior when it has at most M training rows, else mean."""
    if variant.startswith("mean+prior@"):
        return "mean+prior" if rec["n_train"] <= min(int(variant.split("@")[1]), PRIOR_MAX_ROWS) else "mean"
    return variant


#: the fixed seed of the protocol's two halves (README, "The protocol for defaults")
HALVES_SEED = 29


def halves(datasets: list[str]) -> tuple[list[str], list[str]]:
    """The protocol's two halves of the datasets: the sorted names permuted by HALVES_SEED, the
    first half (rounded down) and the rest."""
    names = sorted(datasets)
    order = np.random.default_rng(HALVES_SEED).permutation(len(names))
    first = sorted(names[i] for i in order[: len(names) // 2])
    return first, sorted(set(names) - set(first))


def per_dataset(a: dict, b: dict) -> dict:
    """{dataset: 3-seed mean of A − B} over the (dataset, seed) pairs A and B share."""
    keys = sorted(set(a) & set(b))
    return {d: float(np.mean([a[k][0] - b[k][0] for k in keys if k[0] == d])) for d in sorted({k[0] for k in keys})}


def verdict(diffs: list[dict], kind: str, names: list[str] | None = None) -> list[str]:
    """The protocol's decision for candidates ``diffs`` (each {dataset: A − B}, A a candidate, B the
    default) as report lines.

    kind "saving" (each candidate is cheaper than the default): a candidate passes when no dataset
    loses more than 0.01 and the mean does not drop, on all datasets; the best passing one is adopted.
    kind "cost" (each candidate costs more): on each half, the candidate with the highest mean gain
    is chosen (the default, when no candidate gains there) and must win on the other half, the
    confirming one (one-sided Wilcoxon signed-rank over that half's per-dataset differences,
    p < 0.05); it is adopted when both directions choose it and confirm it.
    The halves are those of ``names`` (all the default's datasets; None = the candidates'), restricted
    to the datasets the candidates share with it, so that a screen on some of the datasets keeps the
    protocol's halves.
    """
    from scipy.stats import wilcoxon

    h1, h2 = (sorted(d for d in h if d in diffs[0]) for h in halves(names or list(diffs[0])))
    lines = [f"halves (seed {HALVES_SEED}): H1 = {', '.join(h1)}", f"                 H2 = {', '.join(h2)}"]
    if kind == "saving":
        passing = []
        for i, diff in enumerate(diffs):
            worst = min(diff, key=diff.get)
            mean = np.mean(list(diff.values()))
            ok = diff[worst] >= -0.01 and mean >= 0
            lines.append(f"candidate {i + 1}: mean {mean:+.4f} (H1 {np.mean([diff[d] for d in h1]):+.4f}, "
                         f"H2 {np.mean([diff[d] for d in h2]):+.4f}), worst {worst} {diff[worst]:+.4f}: "
                         + ("passes" if ok else "fails") + " the saving rule")
            if ok:
                passing.append((mean, i))
        lines.append(f"verdict: adopt candidate {max(passing)[1] + 1}" if passing else "verdict: keep the default")
        return lines
    chosen = []
    for pick, confirm, label in ((h1, h2, "H1 -> H2"), (h2, h1, "H2 -> H1")):
        means = [np.mean([diff[d] for d in pick]) for diff in diffs]
        best = int(np.argmax(means))
        if means[best] <= 0:
            lines.append(f"{label}: the default is best on the choosing half (best candidate {best + 1}: {means[best]:+.4f})")
            chosen.append(None)
            continue
        gains = np.array([diffs[best][d] for d in confirm])
        p = wilcoxon(gains, alternative="greater").pvalue if np.any(gains != 0) else 1.0
        lines.append(f"{label}: chose candidate {best + 1} ({means[best]:+.4f} on the choosing half); on the confirming "
                     f"half {gains.mean():+.4f}, {int(np.sum(gains > 0))} of {len(gains)} up, one-sided Wilcoxon "
                     f"p = {p:.3f}: " + ("confirmed" if p < 0.05 else "not confirmed"))
        chosen.append(best if p < 0.05 else None)
    ok = chosen[0] is not None and chosen[0] == chosen[1]
    lines.append(f"verdict: adopt candidate {chosen[0] + 1}" if ok else "verdict: keep the default")
    return lines


def compare(args) -> None:
    from scipy.stats import wilcoxon

    a, b = _load(args.a), _load(args.b)
    keys = sorted(set(a) & set(b))
    diff = per_dataset(a, b)
    datasets = list(diff)
    da = np.array([diff[d] for d in datasets])
    ma = np.mean([a[k][0] for k in keys])
    mb = np.mean([b[k][0] for k in keys])
    fa, fb = np.nanmean([a[k][1] for k in keys]), np.nanmean([b[k][1] for k in keys])
    p = wilcoxon(da).pvalue if np.any(da != 0) else 1.0
    up = sorted((d for d in datasets if diff[d] > 0.002), key=lambda d: -diff[d])
    down = sorted((d for d in datasets if diff[d] < -0.002), key=lambda d: diff[d])
    print(f"{len(keys)} (dataset, seed) pairs over {len(datasets)} datasets")
    print(f"A {args.a}: mean ROC-AUC {ma:.4f}, mean fit {fa:.1f} s")
    print(f"B {args.b}: mean ROC-AUC {mb:.4f}, mean fit {fb:.1f} s")
    print(f"A - B: {ma - mb:+.4f} per pair, {da.mean():+.4f} per dataset; Wilcoxon p = {p:.3f}; "
          f"{len(up)} datasets up, {len(down)} down by more than 0.002")
    print("  up:   " + ", ".join(f"{d} {diff[d]:+.4f}" for d in up))
    print("  down: " + ", ".join(f"{d} {diff[d]:+.4f}" for d in down))
    if args.kind:
        print("\n".join(verdict([diff], args.kind, sorted({k[0] for k in b}))))


def choose(args) -> None:
    """The protocol over several candidates against one default (README, "The protocol for defaults")."""
    base = _load(args.default)
    diffs = [per_dataset(_load(spec), base) for spec in args.candidates]
    shared = set.intersection(*(set(d) for d in diffs))
    diffs = [{k: v for k, v in d.items() if k in shared} for d in diffs]
    for i, spec in enumerate(args.candidates):
        print(f"candidate {i + 1}: {spec}")
    print(f"default: {args.default}; {len(shared)} datasets")
    print("\n".join(verdict(diffs, args.kind, sorted({k[0] for k in base}))))


def published_best(path: str = "results/benchmark.json", method: str = "vae") -> dict:
    """{dataset: (best 3-seed mean ROC-AUC of ``method``, commit)} over every committed version of
    the published table ``path`` (its git history: ``git log`` and ``git show``, run in this folder)."""
    import subprocess

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout

    best: dict = {}
    for commit in git("log", "--format=%h", "--", path).split():
        seeds: dict = {}
        for (d, _), (roc_auc, _) in _method_records(json.loads(git("show", f"{commit}:./{path}"))["results"],
                                                     method).items():
            seeds.setdefault(d, []).append(roc_auc)
        for d, v in seeds.items():
            if len(v) == 3 and np.mean(v) > best.get(d, (-1.0, ""))[0]:
                best[d] = (float(np.mean(v)), commit)
    return best


def floors(args) -> None:
    """Issue 29's floor: no dataset more than ``--margin`` below its best published 3-seed mean."""
    a, best = _load(args.a), published_best()
    failing = 0
    for d in sorted(best):
        v = [a[k][0] for k in a if k[0] == d]
        if len(v) != 3:
            print(f"{d:22s} best {best[d][0]:.4f} ({best[d][1]}): {len(v)} seeds in A, not judged")
            continue
        mean = float(np.mean(v))
        short = mean < best[d][0] - args.margin
        failing += short
        print(f"{d:22s} best {best[d][0]:.4f} ({best[d][1]}), A {mean:.4f} {mean - best[d][0]:+.4f}"
              + ("  below the floor" if short else ""))
    print(f"{failing} datasets more than {args.margin} below their best published 3-seed mean")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("data", nargs="+")
    r.add_argument("--config", default="{}", help="JSON of TrainConfig fields")
    r.add_argument("--datasets", default=None)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--max-rows", type=int, default=50_000)
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("-o", "--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--kind", choices=("saving", "cost"), default=None,
                   help="also apply the protocol's rule: A saves cost over B, or A costs more than B")
    h = sub.add_parser("choose", help="the protocol: candidates against the default on two halves of the datasets")
    h.add_argument("default", help="FILE:VARIANT[,FILE:VARIANT...] of the default")
    h.add_argument("candidates", nargs="+", help="FILE:VARIANT[,...] of each candidate")
    h.add_argument("--kind", choices=("saving", "cost"), required=True,
                   help="saving: the candidates are cheaper than the default; cost: they cost more")
    f = sub.add_parser("floors", help="each dataset against its best published 3-seed mean (git history of "
                                      "results/benchmark.json)")
    f.add_argument("a", help="FILE:VARIANT[,...]")
    f.add_argument("--margin", type=float, default=0.01)
    args = ap.parse_args()
    {"run": run, "compare": compare, "choose": choose, "floors": floors}[args.cmd](args)


if __name__ == "__main__":
    main()
