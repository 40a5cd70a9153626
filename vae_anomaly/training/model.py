"""The VAE (torch): MLP encoder q(z|x), Gaussian decoder p(x|z) with learned variance and a floor.

Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014: q(z|x) = N(μ(x), diag σ²(x)),
p(z) = N(0, I), p(x|z) = N(μ_x(z), diag σ_x²(z)). The decoder's variance is learned per row and
feature, with σ_x² >= ``min_variance`` (on the standardized scale) so that a feature the decoder
predicts exactly (constant or discrete columns) cannot drive the likelihood to infinity.

Inputs are standardized inside the module with the training rows' per-feature mean and standard
deviation (buffers ``loc`` and ``scale``; a zero-variance feature gets scale 1), so the exported
graph takes raw features.

Two encoder/decoder families share everything else: ``kind="mlp"`` (fully connected) and
``kind="conv"`` for images (rows are flattened images of ``image_shape`` (C, H, W): two stride-2
3×3 convolutions in the encoder, two stride-2 4×4 transposed convolutions in the decoder).

Conditional VAE (Sohn, Lee & Yan, "Learning Structured Output Representation using Deep
Conditional Generative Models", NeurIPS 2015): with a condition vector c of size m (a one-hot
category or a numeric context), q(z|x, c) and p(x|z, c) take c as an extra input, and the prior
p(z|c) = N(m(c), I) has a learned mean per condition (a linear map of c: one mean per category),
so what counts as normal can depend on a known context.

Heterogeneous likelihoods (HI-VAE: Nazábal, Olmos, Ghahramani & Valera, "Handling incomplete
heterogeneous data using VAEs", Pattern Recognition 107, 2020, §3.1, the categorical likelihood
p(x_c = k | z) = softmax_k(h_c(z))): with ``Architecture.categories`` = (K_1, ..., K_C) the input
row is ``n_numeric`` raw numeric columns followed, per categorical column c, by a block of K_c + 1
one-hot slots (slot k = category k, the last slot = a category never seen in training). The
decoder's mean head then gives ``n_numeric`` Gaussian means and Σ K_c logits; its variance covers
the numeric columns only. The one-hot slots are not standardized (loc 0, scale 1), and the
encoder's first-layer weights of each "unseen" slot start (and, never receiving a gradient in
training, stay) at 0, so an unseen category reads to the encoder as "no category".

Missing values (``Architecture.masked``; Donut: Xu et al., "Unsupervised Anomaly Detection via
Variational Auto-Encoder for Seasonal KPIs in Web Applications", WWW 2018, §3.2, the modified
ELBO; HI-VAE's masked likelihood, Nazábal et al. 2020, §3.2): an input entry may be NaN (a gap in
a metric series, a known anomaly). :meth:`VAE.observed` turns standardized rows into the rows the
encoder sees, with each missing entry set to 0 (the training mean), and the mask m (1 observed,
0 missing) that leaves the missing entries out of log p(x|z) (:mod:`~vae_anomaly.training.scores`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import InputValidationError


@dataclass(frozen=True)
class Architecture:
    """Layer sizes of a VAE.

    Attributes
    ----------
    n_features : input columns d.
    latent_dim : latent size k.
    hidden : widths of the encoder's hidden layers; the decoder mirrors them.
    min_variance : floor on the decoder variance σ_x², standardized scale.
    decoder_variance : "feature" = one learned σ_x,j² per feature, shared by all rows;
        "row" = σ_x² predicted from z for each row (MLP only).
    kind : "mlp" or "conv".
    image_shape : (C, H, W) of a row for ``kind="conv"`` (C·H·W = n_features), else None.
    condition_dim : size m of the condition vector c; 0 = unconditional.
    categories : (K_1, ..., K_C), the number of training categories of each categorical column, in
        block order; () = all columns numeric. The row holds ``n_numeric`` numeric columns, then a
        block of K_c + 1 one-hot slots per categorical column (the last = unseen category), so
        n_features = n_numeric + Σ (K_c + 1). MLP only.
    category_floor : ε, the floor of every category probability: p_k = ε + (1 − K ε) softmax_k,
        and an unseen category has probability ε (−log ε ≈ 9.2 nats for 1e-4, the most a
        categorical column can cost). Needs K_c ε < 1.
    masked : inputs may hold NaN (missing values), left out of log p(x|z) (Donut's modified ELBO,
        Xu et al. 2018, §3.2); the encoder sees a missing entry as 0, the training mean. All-numeric only.
    """

    n_features: int
    latent_dim: int
    hidden: tuple[int, ...]
    min_variance: float = 0.01
    decoder_variance: str = "feature"
    kind: str = "mlp"
    image_shape: tuple[int, int, int] | None = None
    condition_dim: int = 0
    categories: tuple[int, ...] = ()
    category_floor: float = 1e-4
    masked: bool = False

    @property
    def n_numeric(self) -> int:
        """Numeric (Gaussian) columns: n_features − Σ (K_c + 1)."""
        return self.n_features - sum(k + 1 for k in self.categories)

    @property
    def n_columns(self) -> int:
        """Original columns: numeric ones plus one per categorical column (the feature terms' width)."""
        return self.n_numeric + len(self.categories)

    @property
    def decoder_width(self) -> int:
        """The decoder mean head's outputs: n_numeric means + Σ K_c logits (n_features when all-numeric)."""
        return self.n_numeric + sum(self.categories)

    def unseen_slots(self) -> list[int]:
        """Column indices (in the input row) of each categorical block's "unseen category" slot."""
        out, pos = [], self.n_numeric
        for k in self.categories:
            pos += k + 1
            out.append(pos - 1)
        return out


def default_architecture(n_features: int, latent_dim: int | None = None, *, min_variance: float = 0.01,
                         decoder_variance: str = "feature", image_shape: tuple[int, int, int] | None = None,
                         condition_dim: int = 0, hidden: tuple[int, ...] | None = None,
                         categories: tuple[int, ...] = (), category_floor: float = 1e-4,
                         masked: bool = False) -> Architecture:
    """Default sizes as functions of n_features d.

    Three hidden layers of width 256 (the decoder mirrors them); latent size ceil(d/4) within
    [2, 16]; a per-feature decoder variance floored at 0.01. Chosen by measuring on the benchmark
    datasets (benchmarks/README.md, "How the defaults were chosen"): a per-feature variance beat a
    per-row one by 0.025 mean ROC-AUC over 15 datasets (0.887 vs 0.862; the per-row variance lets
    the decoder explain an anomaly away with a large variance); three layers of 256 beat the
    earlier two layers of width 2d (a power of two within [64, 256]) over 32 datasets × 3 seeds;
    a floor of 0.1 and a shorter schedule both scored lower.

    With ``image_shape`` (C, H, W) the architecture is convolutional ("conv"): the same latent
    size rule, one fully connected layer of width 2d (a power of two within [64, 256]) after the
    convolutions. ``hidden`` overrides the widths (e.g. (128, 128)). The settings are checked
    before, by :func:`vae_anomaly.training.config.check_config` and
    :func:`vae_anomaly.training.data.prepare`.

    With ``categories`` (K_1, ..., K_C) (see :class:`Architecture`) the latent size rule counts the
    original columns, n_numeric + C, not the one-hot slots.

    ``masked``: the inputs may hold missing values (NaN), left out of the likelihood
    (:class:`Architecture`); all-numeric columns only.

    Raises
    ------
    InputValidationError : categories with a convolutional architecture or with ``masked``, or
        categories that do not fit n_features or the floor (K_c >= 1, K_c ε < 1, n_numeric >= 0).
    """
    categories = tuple(int(c) for c in categories)
    if categories and masked:
        raise InputValidationError("missing: missing values (NaN) are supported for all-numeric columns only; "
                                   "got categorical columns too. Fit without missing=True, or encode no "
                                   "categorical columns.")
    if categories:
        if image_shape is not None:
            raise InputValidationError("categories: categorical columns need the MLP architecture; got images "
                                       "(--arch conv). Use --arch mlp, or encode no categorical columns.")
        if any(c < 1 for c in categories) or not 0.0 < category_floor < 1.0 / max(categories):
            raise InputValidationError(
                f"categories: got {categories} with category_floor {category_floor}; expected category "
                f"counts >= 1 and 0 < floor < 1/max(K) (e.g. 1e-4 for up to 9,999 categories).")
        if n_features < sum(c + 1 for c in categories):
            raise InputValidationError(
                f"categories: {categories} need {sum(c + 1 for c in categories)} one-hot columns (K + 1 per "
                f"column), but X has {n_features} features.")
    n_columns = n_features - sum(c + 1 for c in categories) + len(categories)
    if hidden is None:
        width = int(min(256, max(64, 2 ** math.ceil(math.log2(max(2 * n_features, 1))))))
        hidden = (256, 256, 256) if image_shape is None else (width, width)
    hidden = tuple(int(h) for h in hidden)
    k = latent_dim if latent_dim is not None else int(min(16, max(2, math.ceil(n_columns / 4))))
    return Architecture(n_features=n_features, latent_dim=k, hidden=hidden, min_variance=min_variance,
                        decoder_variance=decoder_variance, kind="mlp" if image_shape is None else "conv",
                        image_shape=None if image_shape is None else tuple(image_shape),
                        condition_dim=condition_dim, categories=categories,
                        category_floor=float(category_floor), masked=bool(masked))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers)


class _ConvEncoder(nn.Module):
    """(n, C, H, W) -> (n, 64·⌈H/4⌉·⌈W/4⌉): two 3×3 stride-2 convolutions with SiLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.SiLU(),
                                 nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ConvDecoder(nn.Module):
    """(n, m_in) -> (n, C·H·W): a linear layer to 64 maps of ⌈H/4⌉×⌈W/4⌉, two 4×4 stride-2
    transposed convolutions, cropped to H×W."""

    def __init__(self, n_in: int, image_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = image_shape
        self.image_shape, self.grid = image_shape, (math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2))
        self.fc = nn.Sequential(nn.Linear(n_in, 64 * self.grid[0] * self.grid[1]), nn.SiLU())
        self.net = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.SiLU(),
                                 nn.ConvTranspose2d(32, c, 4, stride=2, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w = self.image_shape
        out = self.net(self.fc(z).reshape(-1, 64, *self.grid))[:, :, :h, :w]
        return out.reshape(-1, c * h * w)


class VAE(nn.Module):
    """Gaussian VAE over standardized features, optionally conditional.

    Parameters
    ----------
    arch : layer sizes.
    loc, scale : float arrays of shape (n_features,), the training rows' mean and standard
        deviation (scale > 0).
    condition_loc, condition_scale : float arrays of shape (condition_dim,) standardizing a
        numeric condition inside the module (None: 0 and 1, as for a one-hot category).
    """

    #: clamp of the encoder's log σ² for numerical safety
    LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0

    def __init__(self, arch: Architecture, loc: np.ndarray, scale: np.ndarray,
                 condition_loc: np.ndarray | None = None, condition_scale: np.ndarray | None = None):
        super().__init__()
        self.arch = arch
        d, k, h, m = arch.n_features, arch.latent_dim, list(arch.hidden), arch.condition_dim
        self.register_buffer("loc", torch.as_tensor(np.asarray(loc, dtype=np.float32)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))
        self.register_buffer("c_loc", torch.as_tensor(np.zeros(m, np.float32) if condition_loc is None
                                                      else np.asarray(condition_loc, dtype=np.float32)))
        self.register_buffer("c_scale", torch.as_tensor(np.ones(m, np.float32) if condition_scale is None
                                                        else np.asarray(condition_scale, dtype=np.float32)))
        # modules are created in a fixed order: a seed gives the same initial weights across versions
        if arch.kind == "conv":
            c_in, hh, ww = arch.image_shape
            self.conv_encoder = _ConvEncoder(c_in)
            n_conv = 64 * math.ceil(math.ceil(hh / 2) / 2) * math.ceil(math.ceil(ww / 2) / 2)
            self.encoder = _mlp([n_conv + m, h[-1]])
        else:
            self.encoder = _mlp([d + m, *h])
            if arch.categories:  # an unseen category reads as "no category" (no RNG drawn)
                with torch.no_grad():
                    self.encoder[0].weight[:, arch.unseen_slots()] = 0.0
        self.enc_mu = nn.Linear(h[-1], k)
        self.enc_logvar = nn.Linear(h[-1], k)
        if arch.kind == "conv":
            self.decoder = _ConvDecoder(k + m, arch.image_shape)
        else:
            self.decoder = _mlp([k + m, *reversed(h)])
            self.dec_mu = nn.Linear(h[0], arch.decoder_width)      # numeric means, then the logits
            if arch.decoder_variance == "row":
                with warnings.catch_warnings():  # all-categorical: an empty head (no RNG drawn)
                    warnings.filterwarnings("ignore", "Initializing zero-element tensors")
                    self.dec_var = nn.Linear(h[0], arch.n_numeric)
        if arch.decoder_variance == "feature":
            self.dec_var_param = nn.Parameter(torch.zeros(arch.n_numeric))
        if m:
            self.prior_mu = nn.Linear(m, k)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) raw -> (..., d) standardized."""
        return (x - self.loc) / self.scale

    @staticmethod
    def observed(xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardized rows (..., d) that may hold NaN -> (the rows the encoder sees, with each
        missing entry set to 0, the training mean (Donut, Xu et al. 2018, §3.2); the mask m, 1.0
        observed, 0.0 missing), both (..., d), same dtype. IsNaN and Where in ONNX: exact, elementwise."""
        missing = torch.isnan(xs)
        return torch.where(missing, torch.zeros_like(xs), xs), (~missing).to(xs.dtype)

    def condition(self, c: torch.Tensor | None) -> torch.Tensor | None:
        """(n, m) raw condition -> (n, m) standardized (None for an unconditional model)."""
        return None if c is None or not self.arch.condition_dim else (c - self.c_loc) / self.c_scale

    def prior_mean(self, cs: torch.Tensor | None) -> torch.Tensor | float:
        """Mean m(c) of p(z|c), (n, k); 0 for an unconditional model. ``cs`` standardized."""
        return self.prior_mu(cs) if cs is not None else 0.0

    def encode(self, xs: torch.Tensor, cs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardized x (n, d) [and condition (n, m)] -> μ (n, k), log σ² (n, k) of q(z|x, c)."""
        if self.arch.kind == "conv":
            feats = self.conv_encoder(xs.reshape(-1, *self.arch.image_shape))
            h = self.encoder(feats if cs is None else torch.cat([feats, cs], -1))
        else:
            h = self.encoder(xs if cs is None else torch.cat([xs, cs], -1))
        logvar = torch.clamp(self.enc_logvar(h), self.LOGVAR_MIN, self.LOGVAR_MAX)
        return self.enc_mu(h), logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = μ + σ ⊙ ε (Kingma & Welling 2014, eq. 10); broadcasting over leading sample axes."""
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor, cs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., k) [and condition (..., m)] -> μ_x (..., d), log σ_x² >= log(min_variance): (..., d)
        for a per-row variance, (d,) for a per-feature one (the same for every row; it broadcasts).

        With categorical columns μ_x is (..., n_numeric + Σ K_c): the numeric means (standardized
        scale), then each column's K_c logits; log σ_x² covers the n_numeric numeric columns only.

        The floor is smooth: log σ² = log m + f(r − log m) with f(r) = (r + sqrt(r² + 1)) / 2 > 0,
        f(r) -> r for large r; r = 0 gives σ² ≈ 1. It uses no Log or Softplus, whose onnxruntime
        kernels round the last bit differently depending on where an element sits in the tensor.
        """
        zc = z if cs is None else torch.cat([z, cs], -1)
        if self.arch.kind == "conv":
            x_mu = self.decoder(zc.reshape(-1, zc.shape[-1])).reshape(*zc.shape[:-1], self.arch.n_features)
            raw = self.dec_var_param
        else:
            h = self.decoder(zc)
            x_mu = self.dec_mu(h)
            raw = self.dec_var(h) if self.arch.decoder_variance == "row" else self.dec_var_param
        log_floor = math.log(self.arch.min_variance)
        r = raw - log_floor
        return x_mu, log_floor + 0.5 * (r + torch.sqrt(r * r + 1.0))
