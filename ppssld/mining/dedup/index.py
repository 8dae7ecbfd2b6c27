"""Indexed near-duplicate search: the reference set in faiss indexes instead of an all-pairs scan.

- **Hash.** The packed perceptual hashes go into ``faiss.IndexBinaryFlat`` and each query's
  references within the Hamming threshold come from one ``range_search`` (faiss's popcount
  kernel: ~0.02 ms per query against 50,000 references on one core). Exact, so the hash
  candidates equal the scan's. Multi-index hashing (``IndexBinaryMultiHash``) measured worse at
  this radius (18 of 64 bits): 8 tables of 8 bits 10x slower and half the pairs lost, 16 of 4
  bits 250x slower (``benchmark/results/mining/mining_scale.md``).
- **Thumbnail.** A thumbnail candidate needs correlation >= ``thumb_min`` between (nearly)
  unit thumbnails, i.e. ``|q - r|^2 <= |q|^2 + |r|^2 - 2 thumb_min``. Projecting onto any
  orthonormal basis never lengthens a difference, so an L2 ``range_search`` on the first
  :data:`PCA_DIMS` principal components of the reference thumbnails with that radius is a
  lossless filter (``faiss.IndexFlatL2``); the survivors are decided on their exact value.
- **Features** (optional): unit teacher features in ``faiss.IndexFlatIP`` (an IVF index past
  :data:`IVF_FROM` references), nearest reference per query.

Every candidate then goes through :func:`ppssld.mining.dedup.gate_pairs` and
:func:`ppssld.mining.dedup.confirm.confirm`, exactly as the scan's do: same decisions (tested).
With the (default) aligned band-pass ranking, :meth:`RefIndex.find` first drops the pairs
that cannot reach its floor (:class:`GridBound`, a lossless PCA bound) and gates only the
rest: on 28-px Fashion-MNIST every query has ~1,000 gated pairs of which ~8 survive, and
listing them all cost 5 ms per query (``benchmark/results/mining/mining_throughput.md``).
"""
import logging
from typing import Dict, List, Optional, Tuple

import faiss
import numpy as np

from ppssld.mining.dedup import confirm as confirm_mod
from ppssld.mining.dedup import near_duplicates as dedup

logger = logging.getLogger(__name__)

PCA_DIMS = 16  # measured: 50k synthetic refs 0.143 vs 0.195 ms per query at 32, same pairs; real 28-px refs same decisions
BAND_DIMS = 128
IVF_FROM = 200_000


class RefIndex:
    """Faiss indexes over the reference (evaluation or training) signatures.

    Args:
        ref: reference signatures as arrays.
        threshold: hash Hamming threshold.
        thumb_min: thumbnail correlation gate (None: hash only).
        pca_dims: dimensions of the thumbnail prefilter.
    """

    def __init__(self, ref: confirm_mod.Sigs, threshold: int = dedup.DEFAULT_THRESHOLD,
                 thumb_min: Optional[float] = dedup.DEFAULT_THUMB_MIN, pca_dims: int = PCA_DIMS) -> None:
        self.ref = ref
        self.threshold = int(threshold)
        self.thumb_min = thumb_min
        self.hash_index = faiss.IndexBinaryFlat(int(ref.hash.shape[1]) * 8)
        self.hash_index.add(np.ascontiguousarray(ref.hash, dtype=np.uint8))
        thumbs = np.ascontiguousarray(ref.thumb, dtype=np.float32)
        self.ref_sq = float((thumbs * thumbs).sum(axis=1).max()) if len(thumbs) else 0.0
        dims = min(pca_dims, thumbs.shape[1], max(1, len(thumbs)))
        if len(thumbs) > 1:  # principal directions from the 256x256 scatter matrix (eigh: ~10x cheaper than
            # an SVD of the sample); any orthonormal basis keeps the filter lossless, this one makes it tight
            centred = (thumbs[:20000] - thumbs[:20000].mean(axis=0)).astype(np.float64)
            vecs = np.linalg.eigh(centred.T @ centred)[1]
            self.basis = np.ascontiguousarray(vecs[:, ::-1][:, :dims].T, np.float32)
        else:
            self.basis = np.eye(thumbs.shape[1], dtype=np.float32)[:dims]
        self.thumb_index = faiss.IndexFlatL2(dims)
        self.thumb_index.add(thumbs @ self.basis.T)
        self._band: Optional[np.ndarray] = None
        self._bound: Optional[GridBound] = None

    @property
    def ref_band(self) -> np.ndarray:
        """Band-pass vectors of the references (computed on first use)."""
        if self._band is None:
            self._band = confirm_mod.band_vectors(self.ref.grey)
        return self._band

    def _search(self, query: confirm_mod.Sigs) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw index hits before the gate: hash pairs per query, hash pairs (qi, rj), thumbnail-prefilter pairs
        (qi, rj) (empty without ``thumb_min``). Needs a non-empty query and reference set."""
        n = len(query.hash)
        lims, _dist, ids = self.hash_index.range_search(np.ascontiguousarray(query.hash, np.uint8),
                                                        self.threshold + 1)  # faiss keeps d < radius
        counts = np.diff(lims.astype(np.int64))
        thumb_q, thumb_r = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if self.thumb_min is not None:
            qt = np.ascontiguousarray(query.thumb, dtype=np.float32)
            radius = float((qt * qt).sum(axis=1).max()) + self.ref_sq - 2.0 * self.thumb_min
            radius = radius * (1 + 1e-4) + 1e-4  # float slack: survivors are decided exactly
            lims_t, _dist, ids_t = self.thumb_index.range_search(np.ascontiguousarray(qt @ self.basis.T), radius)
            thumb_q = np.repeat(np.arange(n), np.diff(lims_t.astype(np.int64)))
            thumb_r = ids_t.astype(np.int64)
        return counts, np.repeat(np.arange(n), counts), ids.astype(np.int64), thumb_q, thumb_r

    def candidates(self, query: confirm_mod.Sigs) -> confirm_mod.Pairs:
        """Pairs passing the hash or thumbnail gate, sorted by query then ref (equal to the scan's)."""
        qi, rj = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(query.hash) and len(self.ref.hash):
            _counts, hash_q, hash_r, thumb_q, thumb_r = self._search(query)
            qi, rj = np.concatenate([hash_q, thumb_q]), np.concatenate([hash_r, thumb_r])
        return dedup.gate_pairs(query, self.ref, qi, rj, self.threshold, self.thumb_min)

    def find(self, query: confirm_mod.Sigs, max_checks: int = dedup.DEFAULT_MAX_CHECKS,
             pixel_thresholds: Optional[Tuple[float, float]] = dedup.DEFAULT_PIXEL_THRESHOLDS,
             ranking: str = "grid",
             grid_min: float = confirm_mod.DEFAULT_GRID_MIN,
             check: str = dedup.DEFAULT_CHECK) -> Tuple[List[dedup.Match], Dict[str, int]]:
        """Confirmed duplicates of ``query`` among the references (as :func:`dedup.find_duplicates`)."""
        pixel = dedup.pixel_check(query, self.ref)
        if ranking != "grid" or len(query.hash) == 0 or len(self.ref.hash) == 0:
            pairs = self.candidates(query)
            return confirm_mod.confirm(pairs, query, self.ref, pixel, max_checks, pixel_thresholds, ranking,
                                       grid_min, self.ref_band if ranking == "grid" and len(pairs.query) else None,
                                       check=check)
        pairs, score, warp, candidate_queries = self.grid_candidates(query, grid_min)
        return confirm_mod.confirm(pairs, query, self.ref, pixel, max_checks, pixel_thresholds, ranking, grid_min,
                                   score=score, candidate_queries=candidate_queries, check=check, warp=warp)

    def grid_candidates(self, query: confirm_mod.Sigs, grid_min: float) -> Tuple[
            confirm_mod.Pairs, np.ndarray, np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """The gated pairs whose aligned band-pass score reaches ``grid_min``, their scores and best warps, the
        queries with any hash / only thumbnail candidates (the counters) -- without listing every
        gated pair: the bound of :class:`GridBound` drops the rest first (exact, see there)."""
        counts, hash_q, hash_r, thumb_q, thumb_r = self._search(query)
        hashed = np.flatnonzero(counts > 0)
        thumb_only = np.zeros(0, np.int64)
        lone = np.flatnonzero(counts[thumb_q] == 0)  # thumbnail pairs of queries without a hash pair
        if len(lone):
            gated = dedup.gate_pairs(query, self.ref, thumb_q[lone], thumb_r[lone], self.threshold, self.thumb_min)
            thumb_only = np.unique(gated.query)
        candidate_queries = (hashed, thumb_only)
        with_any = np.union1d(hashed, thumb_only)
        empty = confirm_mod.Pairs(*[np.zeros(0, np.int64)] * 2, np.zeros(0, np.int32), np.zeros(0, np.float32),
                                  np.zeros(0, bool))
        if len(with_any) == 0:
            return empty, np.zeros(0, np.float32), np.zeros(0, np.int64), candidate_queries
        qgrid = confirm_mod.query_grids(query.grey, with_any)
        qi, rj = self.bound.survivors(qgrid, with_any, np.concatenate([hash_q, thumb_q]),
                                     np.concatenate([hash_r, thumb_r]), grid_min)
        pairs = dedup.gate_pairs(query, self.ref, qi, rj, self.threshold, self.thumb_min)
        score, warp = confirm_mod.grid_scores(qgrid, self.ref_band, pairs.query, pairs.ref, with_warp=True)
        return pairs, score, warp, candidate_queries

    @property
    def bound(self) -> "GridBound":
        """The grid-score bound over the references (built on first use)."""
        if self._bound is None:
            self._bound = GridBound(self.ref_band)
        return self._bound


class GridBound:
    """Upper bound of the aligned band-pass score from PCA-reduced band vectors.

    For unit vectors a, b and an orthonormal basis P, ``a.b = Pa.Pb + (a-Pa).(b-Pb) <=
    Pa.Pb + |a-Pa| |b-Pb|`` (Cauchy-Schwarz), so a pair whose bound (under every warp) stays
    below the floor cannot reach it: dropping it changes no decision. The bound is computed
    as dense matrix products over query blocks when the candidate pairs are many (on 28-px
    images every query has hundreds of hash candidates), else over the listed pairs only.

    Args:
        ref_band: unit band-pass vectors of the references.
        dims: basis size (the references' top principal directions, uncentred).
        dense_from: candidate density (pairs / (queries x refs)) from which the dense products win.
    """

    def __init__(self, ref_band: np.ndarray, dims: int = BAND_DIMS, dense_from: float = 0.02) -> None:
        sample = ref_band[:20000].astype(np.float32)
        dims = min(dims, ref_band.shape[1])
        _vals, vecs = np.linalg.eigh((sample.T @ sample).astype(np.float64))
        self.basis = np.ascontiguousarray(vecs[:, ::-1][:, :dims].T, np.float32)
        self.ref_proj, self.ref_res = self._project(ref_band)
        self.dense_from = dense_from

    def _project(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        proj = np.ascontiguousarray(x @ self.basis.T)
        res = np.sqrt(np.maximum((x * x).sum(axis=-1) - (proj * proj).sum(axis=-1), 0.0))
        return proj, res.astype(np.float32)

    def survivors(self, qgrid: np.ndarray, queries: np.ndarray, qi: np.ndarray, rj: np.ndarray,
                  floor: float, slack: float = 1e-3) -> Tuple[np.ndarray, np.ndarray]:
        """Distinct (query, ref) pairs whose bound reaches ``floor - slack``: among the listed pairs
        (qi, rj), or among all of ``queries`` x refs when those are dense (the gate decides after)."""
        m = len(self.ref_proj)
        qp, qres = self._project(qgrid[queries])  # (nq, G, d), (nq, G)
        if len(qi) >= self.dense_from * len(queries) * m:
            rows = max(1, (1 << 22) // max(1, qp.shape[1] * m))
            out_q, out_r = [], []
            for s in range(0, len(queries), rows):
                p, r = qp[s:s + rows], qres[s:s + rows]
                b = (p.reshape(-1, p.shape[2]) @ self.ref_proj.T).reshape(len(p), p.shape[1], m)
                b += r[:, :, None] * self.ref_res[None, None, :]
                a, j = np.nonzero(b.max(axis=1) >= floor - slack)
                out_q.append(queries[s + a])
                out_r.append(j)
            qi, rj = np.concatenate(out_q).astype(np.int64), np.concatenate(out_r).astype(np.int64)
        else:
            key = np.unique(qi * m + rj)
            qi, rj = key // m, key % m
            slot = np.minimum(np.searchsorted(queries, qi), len(queries) - 1)
            listed = queries[slot] == qi  # pairs of queries without a gated candidate cannot pass the gate
            qi, rj, slot = qi[listed], rj[listed], slot[listed]
            keep = np.zeros(len(qi), bool)
            for s in range(0, len(qi), 16384):
                sl, rr = slot[s:s + 16384], rj[s:s + 16384]
                b = np.einsum("pgd,pd->pg", qp[sl], self.ref_proj[rr]) + qres[sl] * self.ref_res[rr][:, None]
                keep[s:s + 16384] = b.max(axis=1) >= floor - slack
            qi, rj = qi[keep], rj[keep]
        return qi, rj


class FeatureIndex:
    """Cosine index over unit reference features: flat below :data:`IVF_FROM` references, IVF above."""

    def __init__(self, features: np.ndarray, nprobe: int = 16) -> None:
        feats = _unit(features)
        dim = feats.shape[1]
        if len(feats) >= IVF_FROM:
            nlist = int(4 * np.sqrt(len(feats)))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.train(feats)
            self.index.nprobe = nprobe
        else:
            self.index = faiss.IndexFlatIP(dim)
        self.index.add(feats)

    def nearest(self, query: np.ndarray, threshold: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query i, ref j, cosine) of each query's nearest reference when the cosine >= ``threshold``."""
        if len(query) == 0 or self.index.ntotal == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        sim, ids = self.index.search(_unit(query), 1)
        keep = np.flatnonzero((sim[:, 0] >= threshold) & (ids[:, 0] >= 0))
        return keep.astype(np.int64), ids[keep, 0].astype(np.int64), sim[keep, 0].astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
