"""Baseline dictionaries: closed-form "architectures" fitted on the same training embeddings.

Each is a :class:`~medsae.sae.base.SparseAutoencoder` trained by ``fit`` (no optimiser), so
``train`` writes the same artifacts as for an SAE (``cfg.json``, ``sae.safetensors``,
``metrics.json``) and every later stage takes it unchanged. They answer "is this a property
of SAEs or of any D directions?" and are compared at the SAE's L0: the grid gives them the
same dictionary size and the same ``k`` (the k ladder's last value) as the SAEs beside them.

Fitting: the first ``fit_samples`` preprocessed training rows the stream gives (a random
sample of the train split, in the stream's shuffled order; rows repeat when the split is
smaller; repeated rows are dropped) are kept, the scikit-learn model is fitted on them once, and the result is written
into the module's tensors (``W_dec`` rows unit-norm). A baseline that cannot be fitted on
the input (e.g. more components than rows) keeps ``skip_reason`` and the train stage lists it
under ``skipped`` in ``grid.json`` and its manifest instead of writing the run.

Codes (all non-negative, at most ``k`` non-zeros per row; docs/evaluate.md gives each
definition):

* ``pca``: latent ``2i`` is principal direction ``u_i``, latent ``2i + 1`` is ``-u_i``
  (a sign split), ``b_dec`` the sample mean; ``z = TopK_k(relu((x' - mean) W^T))``: the ``k``
  largest projections in absolute value, each on the latent of its sign;
* ``ica``: FastICA on the sample, sign-split as ``pca``; decoder rows the unit mixing
  columns, encoder rows the unmixing rows times the mixing column's norm, ordered by that
  norm; the same TopK;
* ``kmeans``: MiniBatchKMeans on the centred sample; ``W_enc = W_dec`` the unit centroid
  directions, ``b_dec`` the mean; code = the top-``k`` positive similarities (``k = 1``: hard
  assignment);
* ``dictionary``: MiniBatchDictionaryLearning on the centred sample with ``D / 2`` atoms;
  codes by orthogonal matching pursuit with ``k`` non-zeros (:meth:`DictionaryBaseline.encode`),
  sign-split as ``pca`` (so at most ``k`` non-zeros);
* ``random``: ``D`` random unit-norm directions (the seeded SAE initialisation), ``b_dec``
  the geometric median of the SAE initialisation, the SAE's TopK encoder: a lower bound.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from medsae.sae.base import SparseAutoencoder, TrainOutput, batch_fvu
from medsae.sae.config import SAEConfig
from medsae.sae.registry import register

BASELINES = ("pca", "ica", "kmeans", "dictionary", "random")
"""The baseline architectures' names (the registry knows them like the SAEs)."""


class BaselineConfig(SAEConfig):
    """Fields of every baseline dictionary: ``k`` and the fitting sample."""

    k: int = Field(gt=0, description="Non-zeros per row of the codes (the SAE's L0 to match).")
    fit_samples: int = Field(
        default=4096,
        gt=0,
        description="Training rows the baseline is fitted on (the first ones the shuffled "
        "stream gives, repeats dropped; fewer when training ends sooner).",
    )
    max_iter: int = Field(
        default=100,
        gt=0,
        description="Iterations of the scikit-learn fit (ica, kmeans, dictionary).",
    )

    @model_validator(mode="after")
    def _check(self) -> BaselineConfig:
        self.single_level()
        if self.k > self.n_latents:
            raise ValueError(f"k={self.k} is larger than the dictionary ({self.n_latents} latents)")
        return self


class PCAConfig(BaselineConfig):
    """Principal directions, sign-split."""

    arch: Literal["pca"] = Field(default="pca", description="Architecture name.")


class ICAConfig(BaselineConfig):
    """FastICA directions, sign-split."""

    arch: Literal["ica"] = Field(default="ica", description="Architecture name.")


class KMeansConfig(BaselineConfig):
    """k-means centroid directions."""

    arch: Literal["kmeans"] = Field(default="kmeans", description="Architecture name.")


class DictionaryConfig(BaselineConfig):
    """Sparse dictionary learning with OMP codes."""

    arch: Literal["dictionary"] = Field(default="dictionary", description="Architecture name.")
    alpha: float = Field(default=0.1, gt=0, description="L1 penalty of the dictionary fit.")


class RandomConfig(BaselineConfig):
    """Random unit directions with the TopK encoder."""

    arch: Literal["random"] = Field(default="random", description="Architecture name.")


class Baseline(SparseAutoencoder):
    """Shared by the baselines: collect a sample in :meth:`fit_step`, fit it once, TopK codes."""

    cfg: BaselineConfig
    k_rule = "last"
    inference = "topk"
    trained_by = "fit"
    needs_sample: ClassVar[bool] = True
    bounded_by_dim: ClassVar[bool] = True
    """Whether the components are bounded by the dimension too (pca, ica), not just the rows."""
    fit_rows: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, cfg: SAEConfig, fast: bool = True, seed: int = 0) -> None:
        super().__init__(cfg, fast, seed)
        self.seed = int(seed)
        # the sample so far (a checkpoint written before the fit holds it: exact resume)
        self.register_buffer("fit_rows", torch.zeros(0, cfg.d_in))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.int64))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        rows = state_dict.get(prefix + "fit_rows")
        if rows is not None:  # the sample's size varies: take the saved one's
            self.fit_rows = torch.zeros_like(rows, device=self.fit_rows.device)
        super()._load_from_state_dict(state_dict, prefix, *args)  # type: ignore[arg-type]

    @classmethod
    def name_part(cls, cfg: SAEConfig) -> str:
        return f"K{getattr(cfg, 'k', '')}"

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        vals, idx = pre_bD.topk(self.cfg.k, dim=1, sorted=False)
        return torch.zeros_like(pre_bD).scatter_(1, idx, vals.clamp_min(0))

    # ------------------------------------------------------------- fitting
    @torch.no_grad()
    def fit_step(self, x_bd: torch.Tensor) -> TrainOutput:
        if not int(self.fitted) and self.skip_reason is None:
            if self.needs_sample:
                room = self.cfg.fit_samples - self.fit_rows.shape[0]
                self.fit_rows = torch.cat([self.fit_rows, x_bd[:room].float()])
            if not self.needs_sample or self.fit_rows.shape[0] >= self.cfg.fit_samples:
                self._fit_now()
        codes = self.encode_preprocessed(x_bd)
        total_var = (x_bd - x_bd.mean(0)).pow(2).sum().clamp_min(1e-12)
        fvu = batch_fvu(x_bd, codes @ self.W_dec + self.b_dec, total_var)
        active = codes > 0
        return TrainOutput(
            loss=fvu,
            fvu=fvu,
            l0=active.sum() / x_bd.shape[0],
            aux_loss=0.0,
            fired_cols=active.any(0),
            min_kept=None,
        )

    def end_training(self) -> None:
        if not int(self.fitted) and self.skip_reason is None:
            self._fit_now()

    @torch.no_grad()
    def _fit_now(self) -> None:
        x = self.fit_rows.detach().cpu().double().numpy()
        x = x[np.sort(np.unique(x, axis=0, return_index=True)[1])]  # repeats add nothing
        self.fit_rows = torch.zeros(0, self.cfg.d_in, device=self.W_dec.device)
        reason = self.cannot_fit(x) if self.needs_sample else None
        if reason is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. FastICA's "did not converge"
                    w_dec, w_enc, b_dec = self.solve(x)
            except (ValueError, np.linalg.LinAlgError) as e:
                reason = f"{self.name} fit failed on {len(x):,} rows: {e}"
        if reason is not None:
            self.skip_reason = reason
            return
        self._set(w_dec, w_enc, b_dec)
        self.fitted.fill_(1)

    def cannot_fit(self, x: np.ndarray) -> str | None:
        """Why ``x`` (the fitting sample) cannot take this baseline, or None."""
        need = self.n_components
        limit = min(x.shape) if self.bounded_by_dim else x.shape[0]
        if need > limit:
            what = "fitting rows and dimensions" if self.bounded_by_dim else "fitting rows"
            return (
                f"{self.name}: {need:,} components need at least {need:,} {what}; the sample "
                f"has {x.shape[0]:,} distinct rows of dimension {x.shape[1]:,}"
            )
        return None

    @property
    def n_components(self) -> int:
        """The fitted components: ``ceil(D / 2)`` for the sign-split baselines."""
        return math.ceil(self.cfg.n_latents / 2)

    def solve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(W_dec, W_enc, b_dec)`` fitted on the sample (``b_dec`` None: keep it)."""
        raise NotImplementedError

    def _set(self, w_dec: np.ndarray, w_enc: np.ndarray, b_dec: np.ndarray | None) -> None:
        dev = self.W_dec.device
        self.W_dec.copy_(torch.as_tensor(w_dec, dtype=torch.float32, device=dev))
        self.W_enc.copy_(torch.as_tensor(w_enc, dtype=torch.float32, device=dev))
        self.b_enc.zero_()
        if b_dec is not None:
            self.b_dec.copy_(torch.as_tensor(b_dec, dtype=torch.float32, device=dev))

    def sign_split(self, dec_cd: np.ndarray, enc_cd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``c`` directions -> ``D`` latents: ``2i`` is ``+i``, ``2i + 1`` is ``-i``; decoder
        rows unit-norm (the encoder row scaled to keep ``z W_dec`` the same)."""
        norms = np.linalg.norm(dec_cd, axis=1, keepdims=True).clip(1e-12)
        dec, enc = dec_cd / norms, enc_cd * norms
        D = self.cfg.n_latents
        signs = np.where(np.arange(D) % 2 == 0, 1.0, -1.0)[:, None]
        pick = np.arange(D) // 2
        return dec[pick] * signs, enc[pick] * signs

    def encode_preprocessed(self, x_bd: torch.Tensor) -> torch.Tensor:
        """Codes of an already preprocessed batch."""
        return self.infer(self.pre_activation(x_bd))


@register
class PCABaseline(Baseline):
    """The top principal directions of the sample, sign-split (module docstring)."""

    name = "pca"
    config_class = PCAConfig

    def solve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=self.n_components, random_state=self.seed).fit(x)
        w, v = self.sign_split(pca.components_, pca.components_)
        return w, v, pca.mean_


@register
class ICABaseline(Baseline):
    """FastICA directions of the sample, sign-split, ordered by mixing norm."""

    name = "ica"
    config_class = ICAConfig

    def solve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        from sklearn.decomposition import FastICA

        ica = FastICA(
            n_components=self.n_components,
            whiten="unit-variance",
            max_iter=self.cfg.max_iter,
            random_state=self.seed,
        ).fit(x)
        mixing = ica.mixing_.T  # (c, d): x - mean = s @ mixing
        order = np.argsort(-np.linalg.norm(mixing, axis=1), kind="stable")
        w, v = self.sign_split(mixing[order], ica.components_[order])
        return w, v, ica.mean_


@register
class KMeansBaseline(Baseline):
    """MiniBatchKMeans centroid directions of the centred sample."""

    name = "kmeans"
    config_class = KMeansConfig
    bounded_by_dim = False

    @property
    def n_components(self) -> int:
        return self.cfg.n_latents

    def solve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        from sklearn.cluster import MiniBatchKMeans

        mean = x.mean(0)
        km = MiniBatchKMeans(
            n_clusters=self.cfg.n_latents,
            max_iter=self.cfg.max_iter,
            batch_size=1024,
            n_init=1,
            random_state=self.seed,
        ).fit(x - mean)
        c = km.cluster_centers_
        c = c / np.linalg.norm(c, axis=1, keepdims=True).clip(1e-12)
        return c, c, mean


@register
class DictionaryBaseline(Baseline):
    """MiniBatchDictionaryLearning atoms, OMP codes with ``k`` non-zeros, sign-split.

    Its codes are not a linear encoder's: :meth:`encode` solves OMP; ``W_enc`` (the atoms)
    gives the correlation form used where a linear encoder is needed (attribution maps);
    an export to another library is refused (not the plain TopK form).
    """

    name = "dictionary"
    config_class = DictionaryConfig
    bounded_by_dim = False
    cfg: DictionaryConfig

    def solve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        from sklearn.decomposition import MiniBatchDictionaryLearning

        mean = x.mean(0)
        dl = MiniBatchDictionaryLearning(
            n_components=self.n_components,
            alpha=self.cfg.alpha,
            batch_size=256,
            max_iter=self.cfg.max_iter,
            fit_algorithm="cd",
            random_state=self.seed,
        ).fit(x - mean)
        w, v = self.sign_split(dl.components_, dl.components_)
        return w, v, mean

    def encode_preprocessed(self, x_bd: torch.Tensor) -> torch.Tensor:
        if not int(self.fitted):
            return super().encode_preprocessed(x_bd)
        from sklearn.decomposition import sparse_encode

        atoms = self.W_dec[0::2].detach().double().cpu().numpy()  # (c, d), unit rows
        x = (x_bd - self.b_dec).detach().double().cpu().numpy()
        k = min(self.cfg.k, atoms.shape[0], x.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = sparse_encode(x, atoms, algorithm="omp", n_nonzero_coefs=k)
        D = self.cfg.n_latents
        out = np.zeros((len(x), D))
        out[:, 0::2] = np.clip(s, 0, None)[:, : len(range(0, D, 2))]
        out[:, 1::2] = np.clip(-s, 0, None)[:, : len(range(1, D, 2))]
        return torch.as_tensor(out, dtype=torch.float32, device=x_bd.device)

    @torch.no_grad()
    def encode(self, x: Any) -> torch.Tensor:
        return self.encode_preprocessed(self.preprocess(x))


@register
class RandomBaseline(Baseline):
    """Random unit directions (the seeded initialisation) with the TopK encoder."""

    name = "random"
    config_class = RandomConfig
    needs_sample = False

    def solve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        w = self.W_dec.detach().cpu().double().numpy()
        return w, w, None
