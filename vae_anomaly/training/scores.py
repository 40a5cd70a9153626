"""Score functions (torch): the training loss and the exact module exported to ONNX.

All scores are per row, in nats, on the raw (unstandardized) scale, higher = more anomalous.
The negative ELBO, the reconstruction probability and the per-feature terms decode the posterior
mean z̄ = μ(x) (one decoder pass); the IWAE estimate decodes L fixed noise vectors ε_l (drawn once
at export and baked into the graph as a constant, so a score is a pure function of its row),
z_l = μ(x) + σ(x) ⊙ ε_l:

* reconstruction probability, as a score (An & Cho 2015, "Variational Autoencoder based Anomaly
  Detection using Reconstruction Probability", Alg. 4, which averages L samples; here the one
  point z̄):  −log p(x|z̄)
* negative ELBO (Kingma & Welling 2014, eq. 3 with the closed-form KL of their Appendix B, the
  expectation E_q[log p(x|z)] taken at the posterior mean):
  −log p(x|z̄) + ½ Σ_k ((μ_k − m_k)² + σ_k² − log σ_k² − 1), where m = m(c) is the
  conditional prior's mean (0 for an unconditional model)
* IWAE estimate of −log p(x) (Burda, Grosse & Salakhutdinov 2016, eq. 8):
  −(logsumexp_l [log p(x|z_l) + log p(z_l) − log q(z_l|x)] − log L)
* with a latent mixture prior p(z) (:class:`LatentMixture`: the training rows' aggregate
  posterior, built after training), the KL has no closed form and the negative ELBO takes it at the
  posterior mean: −log p(x|z̄) + log q(z̄|x) − log p(z̄)
* per-feature terms −log N(x_j; μ_x,j(z̄), σ²_x,j(z̄)), which sum to the reconstruction score.

The raw-scale density is the standardized one times the Jacobian Π_j 1/scale_j, so each
per-feature term carries + log scale_j.

Categorical columns (HI-VAE: Nazábal, Olmos, Ghahramani & Valera, "Handling incomplete
heterogeneous data using VAEs", Pattern Recognition 107, 2020, §3.1, eq. for the categorical
likelihood p(x_c = k | z) = exp(h_ck(z)) / Σ_q exp(h_cq(z))), with a floor ε
(``Architecture.category_floor``) like the decoder variance's: p_k = ε + (1 − K ε) softmax_k(h_c(z))
for the K training categories and ε for the "unseen" slot (so no category costs more than −log ε
nats), and log p(x_c|z) = log Σ_slots onehot_slot · p_slot (:func:`categorical_log_prob`, the one
function behind the training loss and the scores). Then log p(x|z) = Σ_numeric log N(·) (with the
Jacobian on the numeric columns only; one-hot slots are not standardized) + Σ_c log p(x_c|z), and
every score above uses that total; the per-feature terms are one per original column: the numeric
ones, then −log p(x_c|z̄) per categorical column.

Missing values (``Architecture.masked``; Donut: Xu et al., "Unsupervised Anomaly Detection via
Variational Auto-Encoder for Seasonal KPIs in Web Applications", WWW 2018, §3.2, the modified ELBO;
HI-VAE, Nazábal et al. 2020, §3.2): with the mask m (1 observed, 0 missing: NaN in the input),
log p(x|z) = Σ_j m_j (log N(x_j; μ_x,j(z), σ²_x,j(z)) − log scale_j) over the observed entries only
(:func:`masked_gaussian_log_prob`, the one function behind the training loss and the scores), and
every score above uses that sum; the encoder sees a missing entry as 0 (the training mean), the KL
term is unchanged (Donut also scales log p(z) by the observed fraction; not done here), and a
missing entry's per-feature term is 0. A row with every entry missing scores its KL alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .model import VAE

LOG_2PI = math.log(2.0 * math.pi)


def row_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis, (..., m) -> (...), written as a MatMul with a vector of ones.

    onnxruntime's ReduceSum/ReduceMean give results that depend on a row's position in the batch
    (vectorized partial sums), its MatMul does not: this keeps every score a pure function of its row.
    """
    # int(): a constant in the traced graph (a MatMul by an initializer, which onnxruntime prepacks;
    # a ones tensor built from the runtime shape made the result depend on the batch)
    return (t @ torch.ones(int(t.shape[-1]), 1, dtype=t.dtype, device=t.device)).squeeze(-1)


def row_log(t: torch.Tensor) -> torch.Tensor:
    """Natural log of a (n,) vector, computed on a (n, 16) broadcast and read from column 0.

    onnxruntime's vectorized Log rounds the last bit differently for the elements in a tensor's
    tail (when its size is not a multiple of the SIMD width), so a row's log would depend on the
    batch size; a width of 16 keeps every element on the vectorized path.
    """
    return torch.log(t.unsqueeze(-1) * torch.ones(16, dtype=t.dtype, device=t.device))[..., 0]


def row_logsumexp(t: torch.Tensor) -> torch.Tensor:
    """log Σ exp over the last axis, (n, m) -> (n,), stabilized by the (exact) maximum.

    A row whose maximum is not finite is shifted by 0 instead, so a row of all −inf terms gives
    −inf and a +inf term gives +inf, never −inf − (−inf) = NaN.
    """
    m = torch.amax(t, dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return row_log(row_sum(torch.exp(t - m))) + m.squeeze(-1)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(logvar)) = −½ (log 2π + log σ² + (x − μ)² / σ²)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def masked_gaussian_log_prob(xs: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor,
                             logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise m_j log N(x_j; mean_j, exp(logvar_j)): the Gaussian log-density of the observed
    entries, 0 for the missing ones (Donut's modified ELBO, Xu et al. 2018, §3.2).

    xs : standardized rows with missing entries already set to a finite value (:meth:`VAE.observed`),
    so every product is finite; mask : 1.0 observed, 0.0 missing; all broadcast together.
    """
    return gaussian_log_prob(xs, mean, logvar) * mask


def _block_matrix(sizes, dtype, device, skip_last: bool = False) -> torch.Tensor:
    """(Σ sizes, C) 0/1 matrix: column c sums block c of a row (a MatMul, batch invariant); with
    ``skip_last`` each block's last slot gets 0."""
    m = torch.zeros(sum(sizes), len(sizes), dtype=dtype, device=device)
    pos = 0
    for c, k in enumerate(sizes):
        m[pos : pos + k - (1 if skip_last else 0), c] = 1.0
        pos += k
    return m


def softmax_parts(logits: torch.Tensor, categories: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A hand-written block softmax: logits (..., Σ K_c) -> (e (..., Σ K_c), den (..., C)) with
    e = exp(h − max_c h) per block and den_c = Σ_{k in block c} e_k, so softmax_ck = e_k / den_c.

    No Softmax/ReduceSum node: the maximum (exact in any order) per block, one Exp over the whole
    tensor, the block sums as one MatMul, so each row's result is independent of the batch.
    """
    shifted, pos = [], 0
    for k in categories:
        block = logits[..., pos : pos + k]
        shifted.append(block - torch.amax(block, dim=-1, keepdim=True).detach())
        pos += k
    e = torch.exp(torch.cat(shifted, dim=-1))                                  # (..., Σ K)
    return e, e @ _block_matrix(categories, e.dtype, e.device)                  # (..., C)


def categorical_log_prob(onehot: torch.Tensor, logits: torch.Tensor, categories: tuple[int, ...],
                         floor: float) -> torch.Tensor:
    """log p(x_c | z) per categorical column, in nats (HI-VAE, Nazábal et al. 2020, §3.1, with a floor).

    p_k = ε + (1 − K_c ε) softmax_k(h_c(z)) for the K_c training categories, ε for the unseen slot;
    log p(x_c|z) = log Σ_slots onehot_slot · p_slot = log(ε Σ_slots onehot_slot + (1 − K_c ε)
    Σ_{k<K_c} onehot_k e_k / den_c), which for a one-hot block is log p of its category
    (−log ε ≈ 9.21 nats for an unseen one, the most a column can cost).

    Parameters
    ----------
    onehot : (..., Σ (K_c + 1)) float, the categorical slots of the rows (raw = standardized).
    logits : (..., Σ K_c) float, the decoder's logits h(z); broadcasts against ``onehot``.
    categories : (K_1, ..., K_C).
    floor : ε, with K_c ε < 1.

    Returns
    -------
    (..., C) float log-probabilities (<= 0). The log is taken on a 16-wide broadcast, as in
    :func:`row_log`, so that onnxruntime's vectorized Log gives every row the same bits in any batch.
    """
    sizes = tuple(k + 1 for k in categories)
    seen = [i for i, pos in enumerate(_slot_block_positions(sizes)) if not pos]
    e, den = softmax_parts(logits, categories)                                 # (..., Σ K), (..., C)
    num = (onehot[..., seen] * e) @ _block_matrix(categories, e.dtype, e.device)  # (..., C)
    total = onehot @ _block_matrix(sizes, onehot.dtype, onehot.device)         # (..., C), 1 for one-hot
    keep = torch.tensor([1.0 - k * floor for k in categories], dtype=e.dtype, device=e.device)
    p = floor * total + keep * (num / den)                                     # (..., C)
    return torch.log(p.unsqueeze(-1) * torch.ones(16, dtype=p.dtype, device=p.device))[..., 0]


def category_probabilities(logits: torch.Tensor, categories: tuple[int, ...], floor: float) -> torch.Tensor:
    """logits (..., Σ K_c) -> (..., Σ (K_c + 1)): per block the K_c floored probabilities
    p_k = ε + (1 − K_c ε) softmax_k, then 0 in the unseen slot (the generation graph's output)."""
    e, den = softmax_parts(logits, categories)
    out, pos = [], 0
    for c, k in enumerate(categories):
        probs = floor + (1.0 - k * floor) * (e[..., pos : pos + k] / den[..., c : c + 1])
        out += [probs, torch.zeros_like(probs[..., :1])]
        pos += k
    return torch.cat(out, dim=-1)


def _slot_block_positions(sizes: tuple[int, ...]) -> list[bool]:
    """For each slot of the concatenated blocks: True if it is its block's last (unseen) slot."""
    return [j == k - 1 for k in sizes for j in range(k)]


def kl_terms(mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per latent dimension, KL(N(μ, σ²) ‖ N(m, 1)) = ½ ((μ − m)² + σ² − log σ² − 1) (Kingma &
    Welling 2014, App. B, with the prior mean m of a conditional prior); shape of ``mu``."""
    return 0.5 * ((mu - prior_mu) ** 2 + torch.exp(logvar) - logvar - 1.0)


def training_loss(vae: VAE, xs: torch.Tensor, beta: float, cs: torch.Tensor | None = None,
                  free_bits: float = 0.0, missing: bool = True) -> torch.Tensor:
    """Mean over the batch of −log p(x|z, c) + β KL(q(z|x, c) ‖ p(z|c)) (one reparameterized sample;
    β = 1 is the ELBO; β-VAE: Higgins et al., ICLR 2017).

    With ``free_bits`` λ > 0 each latent dimension's batch-mean KL counts as max(λ, KL_k) (Kingma et
    al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016, eq. 15):
    below λ nats a dimension pays no KL, which keeps dimensions from collapsing to the prior.

    With ``vae.arch.masked`` the rows may hold NaN (missing), left out of log p(x|z)
    (:func:`masked_gaussian_log_prob`, as in the scores); the encoder sees them as 0. ``missing=False``
    says the rows hold no NaN: the mask would be all ones, so the plain likelihood gives the same
    loss, about a fifth faster (the fit loop checks its training rows once).

    xs : standardized rows, (n, d); cs : standardized conditions (n, m) or None. Returns a scalar.
    """
    mask = None
    if vae.arch.masked and missing:
        xs, mask = vae.observed(xs)
    mu, logvar = vae.encode(xs, cs)
    eps = torch.randn_like(mu)
    x_mu, x_logvar = vae.decode(vae.reparameterize(mu, logvar, eps), cs)
    if vae.arch.categories:
        recon = -_mixed_log_likelihood(vae, xs, x_mu, x_logvar)
    elif mask is not None:
        recon = -_float32_row_sum(masked_gaussian_log_prob(xs, mask, x_mu, x_logvar))
    else:
        recon = -_float32_row_sum(gaussian_log_prob(xs, x_mu, x_logvar))
    kl = kl_terms(mu, logvar, vae.prior_mean(cs)).float()
    if free_bits > 0:
        return recon.mean() + beta * torch.clamp(kl.mean(0), min=free_bits).sum()
    return (recon + beta * _float32_row_sum(kl)).mean()


def _mixed_log_likelihood(vae: VAE, xs: torch.Tensor, x_mu: torch.Tensor, x_logvar: torch.Tensor) -> torch.Tensor:
    """log p(x|z) on the standardized scale of rows with categorical columns, (n, d) -> (n,), in
    float32 even inside a bf16 autocast region: the numeric Gaussian terms plus
    :func:`categorical_log_prob` of each categorical column."""
    p, arch = vae.arch.n_numeric, vae.arch
    total = _float32_row_sum(gaussian_log_prob(xs[:, :p], x_mu[:, :p], x_logvar)) if p else 0.0
    with torch.autocast(xs.device.type, enabled=False):
        cat = categorical_log_prob(xs[:, p:].float(), x_mu[:, p:].float(), arch.categories, arch.category_floor)
    return total + _float32_row_sum(cat)


def _float32_row_sum(t: torch.Tensor) -> torch.Tensor:
    """:func:`row_sum` in float32 even inside a bf16 autocast region, where the MatMul would
    otherwise run in bf16 (8 bits of mantissa for a sum over all features); the same arithmetic
    as :func:`row_sum` when autocast is off."""
    with torch.autocast(t.device.type, enabled=False):
        return row_sum(t.float())


class LatentMixture(nn.Module):
    """A mixture of M diagonal Gaussians with equal weights over the latent space, p(z).

    log p(z) = logsumexp_m [log N(z; m_m, diag v_m)] − log M, each component's quadratic form
    expanded, Σ_j (z_j − m_mj)² / v_mj = z² · (1/v_m) − 2 z · (m_m / v_m) + Σ_j m_mj² / v_mj, so that
    the M components are two MatMuls of z (and z²) by (k, M) matrices. The expansion cancels terms
    of size (z² + m²)/v, up to ~10⁷ at the encoder's smallest variance (log σ² = −12), so it is
    computed in float64 (z is cast up, the result back to float32): float32 would be off by nats
    there, float64 stays below 10⁻⁶ nats over the encoder's whole variance range (tests/test_model.py).

    Parameters
    ----------
    means : (M, k) component means m_m.
    variances : (M, k) component variances v_m > 0.
    """

    def __init__(self, means, variances):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        inv_var = 1.0 / torch.as_tensor(variances, dtype=torch.float64)
        n_comp, k = means.shape
        self.register_buffer("scaled_means", (means * inv_var).T.contiguous())   # (k, M), float64
        self.register_buffer("inv_var", inv_var.T.contiguous())                  # (k, M), float64
        log_norm = -0.5 * (k * LOG_2PI - torch.log(inv_var).sum(1) + (means * means * inv_var).sum(1))
        self.register_buffer("log_norm", log_norm - math.log(n_comp))            # (M,), float64

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., k) float32 -> log p(z) (...), float32, in nats (computed in float64)."""
        zd = z.to(torch.float64)
        return row_logsumexp(self.log_norm + zd @ self.scaled_means - 0.5 * ((zd * zd) @ self.inv_var)).to(z.dtype)


class ScoreGraph(nn.Module):
    """Raw rows (n, d) [and raw conditions (n, m)] -> (neg_elbo (n,), recon_prob (n,), iwae (n,),
    feature_terms (n, d), latent_mean (n, k)), float32, in nats, higher = more anomalous.

    The negative ELBO, the reconstruction probability and the per-feature terms decode one latent
    point, the posterior mean z = μ(x); only the IWAE estimate decodes the L fixed samples. The
    scores cost one decoder pass, where averaging 16 samples cost 16, and the negative ELBO at the
    mean ranks anomalies as well (benchmarks/README.md, "How the defaults were chosen"); onnxruntime
    runs only the nodes an asked-for output needs, so the samples cost nothing unless the IWAE is
    asked for.

    With categorical columns (``vae.arch.categories``) the rows are the encoded table (numeric
    columns, then the one-hot blocks) and feature_terms is (n, n_numeric + C), one term per
    original column (numeric ones first), still summing to recon_prob.

    With ``vae.arch.masked`` the rows may hold NaN (missing values): the graph masks them itself
    (IsNaN, Where), leaves them out of log p(x|z), and gives them a per-feature term of 0; no NaN
    reaches an output (a row with every entry missing scores its KL alone).

    Parameters
    ----------
    vae : a trained VAE.
    eps : (L, k) fixed standard-normal noise of the IWAE estimate; the same for every row.
    prior : the latent prior of the scores: None = the VAE's own, N(m(c), I) (closed-form KL), or
        a :class:`LatentMixture` (unconditional models only; the KL estimated at the posterior mean,
        and on the L samples for the IWAE).

    Raises
    ------
    ValueError : a mixture prior for a conditional VAE.
    """

    def __init__(self, vae: VAE, eps: torch.Tensor, prior: LatentMixture | None = None):
        super().__init__()
        if prior is not None and vae.arch.condition_dim:
            raise ValueError("prior: a latent mixture replaces only the unconditional prior N(0, I).")
        self.vae = vae
        self.prior = prior
        self.register_buffer("eps", eps.to(torch.float32))
        self.register_buffer("log_l", torch.tensor(math.log(eps.shape[0]), dtype=torch.float32))

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None):
        """Written for onnxruntime's speed: each decoder layer is one 2-D Gemm over the rows (and,
        for the IWAE, over the n·L samples), and with a per-feature variance the Gaussian's quadratic
        form is a MatMul by 1/σ² (one pass over the (n, S, d) tensor)."""
        xs, mask, cs, mu, logvar = self.posterior(x, condition)
        log_px, feature_terms = self.log_likelihood(xs, mask, mu.unsqueeze(1), cs, terms=True)  # (n, 1), (n, F)
        recon_prob = -log_px[:, 0]                                              # (n,)
        neg_elbo = recon_prob + self._kl_at_mean(mu, logvar, cs)
        z = self.vae.reparameterize(mu.unsqueeze(1), logvar.unsqueeze(1), self.eps)  # (n, L, k)
        log_pz_samples, _ = self.log_likelihood(xs, mask, z, cs)                       # (n, L)
        log_qz = -0.5 * (self.eps.shape[1] * LOG_2PI + row_sum(logvar).unsqueeze(-1) + row_sum(self.eps**2))
        iwae = -(row_logsumexp(log_pz_samples + self._log_pz(z, cs) - log_qz) - self.log_l)
        return neg_elbo, recon_prob, iwae, feature_terms, mu

    def neg_elbo(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The negative ELBO alone, (n,), the same values as ``forward(...)[0]`` (early stopping)."""
        xs, mask, cs, mu, logvar = self.posterior(x, condition)
        return -self.log_likelihood(xs, mask, mu.unsqueeze(1), cs)[0][:, 0] + self._kl_at_mean(mu, logvar, cs)

    def posterior(self, x, condition=None):
        """Raw rows x (n, d) [and raw conditions (n, m)] -> the parts of q(z|x): (standardized rows
        (n, d), the mask (n, d) of observed entries or None, standardized conditions (n, m) or None,
        μ (n, k), log σ² (n, k)), float32."""
        vae = self.vae
        xs, cs = vae.standardize(x), vae.condition(condition)    # (n, d), (n, m) or None
        mask = None
        if vae.arch.masked:                                       # NaN -> 0, mask (n, d): 1 observed
            xs, mask = vae.observed(xs)
        mu, logvar = vae.encode(xs, cs)                           # (n, k), (n, k)
        return xs, mask, cs, mu, logvar

    def _kl_at_mean(self, mu, logvar, cs):
        """KL(q(z|x) ‖ p(z)), (n,): closed form for N(m(c), I) (Kingma & Welling 2014, App. B); for a
        mixture prior, log q(z|x) − log p(z) at z = μ(x) (no closed form)."""
        if self.prior is None:
            return row_sum(kl_terms(mu, logvar, self.vae.prior_mean(cs)))
        log_q_mean = -0.5 * (mu.shape[-1] * LOG_2PI + row_sum(logvar))
        return log_q_mean - self.prior(mu)

    def _log_pz(self, z, cs):
        """log p(z_l) (n, L) of the samples under the scores' prior."""
        if self.prior is not None:
            return self.prior(z)
        prior_mu = self.vae.prior_mean(cs)
        z_c = z if cs is None else z - prior_mu.unsqueeze(1)
        return -0.5 * (z.shape[-1] * LOG_2PI + row_sum(z_c**2))

    def log_likelihood(self, xs, mask, z, cs, terms: bool = False):
        """log p(x|z_s) on the raw scale, (n, S), for latent points z (n, S, k); with ``terms`` also
        the per-feature terms −(1/S) Σ_s log p(x_j|z_s), (n, F) (None otherwise).

        Numeric columns: Gaussian terms with the Jacobian − log scale_j; a masked model leaves the
        missing entries out (:func:`masked_gaussian_log_prob`, term 0); categorical columns:
        :func:`categorical_log_prob`, one term per column after the numeric ones."""
        vae = self.vae
        arch, (n, n_points, k) = vae.arch, z.shape
        cs_s = None if cs is None else cs.unsqueeze(1).expand(-1, n_points, -1).reshape(n * n_points, -1)
        # the decoder on 2-D (n·S, k) rows: each layer one Gemm, whose result for a row does not
        # depend on the batch (onnxruntime's 3-D MatMul does not promise that)
        x_mu, x_logvar = vae.decode(z.reshape(n * n_points, k), cs_s)
        x_mu = x_mu.reshape(n, n_points, -1)                      # (n, S, d')
        if x_logvar.dim() > 1:                                    # per-row variance: (n, S, p)
            x_logvar = x_logvar.reshape(n, n_points, -1)
        p = arch.n_numeric
        log_px, parts = 0.0, []
        if p:
            mu_num = x_mu[..., :p] if arch.categories else x_mu   # (n, S, p)
            x_num = (xs[:, :p] if arch.categories else xs).unsqueeze(1)  # (n, 1, p)
            log_scale = torch.log(vae.scale[:p] if arch.categories else vae.scale)  # raw-scale Jacobian, (p,)
            if mask is not None:                                  # (masked models are all-numeric)
                log_lik = masked_gaussian_log_prob(x_num, mask.unsqueeze(1), mu_num, x_logvar)  # (n, S, p)
                jacobian = mask * log_scale                       # (n, p)
                log_px = row_sum(log_lik) - row_sum(jacobian).unsqueeze(-1)
                if terms:
                    parts.append(-row_sum(log_lik.transpose(1, 2)) / n_points + jacobian)
            else:
                sq = (x_num - mu_num) ** 2                        # (n, S, p)
                if x_logvar.dim() == 1:                           # per-feature variance
                    mahalanobis = (sq @ torch.exp(-x_logvar).unsqueeze(-1)).squeeze(-1)  # (n, S)
                else:                                             # per-row variance
                    mahalanobis = row_sum(sq * torch.exp(-x_logvar))
                log_px = -0.5 * (p * LOG_2PI + row_sum(x_logvar) + mahalanobis) - row_sum(log_scale)
                if terms:
                    nll = 0.5 * (LOG_2PI + x_logvar + sq * torch.exp(-x_logvar))  # (n, S, p)
                    parts.append(row_sum(nll.transpose(1, 2)) / n_points + log_scale)
        if arch.categories:
            cat_lp = categorical_log_prob(xs[:, p:].unsqueeze(1), x_mu[..., p:], arch.categories,
                                          arch.category_floor)    # (n, S, C)
            log_px = log_px + row_sum(cat_lp)
            if terms:
                parts.append(-row_sum(cat_lp.transpose(1, 2)) / n_points)
        return log_px, (torch.cat(parts, dim=-1) if terms else None)


class SampleGraph(nn.Module):
    """Generation: standard-normal noise (n, k) [and raw conditions (n, m)] -> raw-scale decoder
    means μ_x(z) (n, d) at z = m(c) + noise, i.e. z drawn from the (conditional) prior; float32.

    With categorical columns the output keeps the input row's layout, (n, n_features): the numeric
    columns' decoder means on the raw scale, then per categorical block the K_c floored category
    probabilities p_k = ε + (1 − K_c ε) softmax_k (summing to 1) and 0 in the unseen slot.
    """

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, noise: torch.Tensor, condition: torch.Tensor | None = None):
        vae = self.vae
        cs = vae.condition(condition)
        z = noise + vae.prior_mean(cs)
        arch = vae.arch
        if not arch.categories:
            return vae.decode(z, cs)[0] * vae.scale + vae.loc
        p = arch.n_numeric
        x_mu = vae.decode(z, cs)[0]                                  # (n, p + Σ K)
        probs = category_probabilities(x_mu[..., p:], arch.categories, arch.category_floor)  # (n, Σ (K + 1))
        if not p:
            return probs
        return torch.cat([x_mu[..., :p] * vae.scale[:p] + vae.loc[:p], probs], dim=-1)
