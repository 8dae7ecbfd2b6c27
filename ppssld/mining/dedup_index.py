"""Indexed near-duplicate search: the reference set in faiss indexes instead of an all-pairs scan.

- **Hash.** The packed perceptual hashes go into ``faiss.IndexBinaryFlat`` and each query's
  references within the Hamming threshold come from one ``range_search`` (faiss's popcount
  kernel: ~0.02 ms per query against 50,000 references on one core). Exact, so the hash
  candidates equal the scan's. Multi-index hashing (``IndexBinaryMultiHash``) measured worse at
  this radius (18 of 64 bits): 8 tables of 8 bits 10x slower and half the pairs lost, 16 of 4
  bits 250x slower (``benchmark/results/mining_scale.md``).
- **Thumbnail.** A thumbnail candidate needs correlation >= ``thumb_min`` between (nearly)
  unit thumbnails, i.e. ``|q - r|^2 <= |q|^2 + |r|^2 - 2 thumb_min``. Projecting onto any
  orthonormal basis never lengthens a difference, so an L2 ``range_search`` on the first
  :data:`PCA_DIMS` principal components of the reference thumbnails with that radius is a
  lossless filter (``faiss.IndexFlatL2``); the survivors are decided on their exact value.
- **Features** (optional): unit teacher features in ``faiss.IndexFlatIP`` (an IVF index past
  :data:`IVF_FROM` references), nearest reference per query.

Every candidate then goes through :func:`ppssld.mining.dedup.gate_pairs` and
:func:`ppssld.mining.confirm.confirm`, exactly as the scan's do: same decisions (tested).
"""
import logging
from typing import Dict, List, Optional, Tuple

import faiss
import numpy as np

from ppssld.mining import confirm as confirm_mod
from ppssld.mining import dedup

logger = logging.getLogger(__name__)

PCA_DIMS = 32
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
        if len(thumbs) > 1:
            centred = thumbs[:min(len(thumbs), 20000)] - thumbs[:20000].mean(axis=0)
            self.basis = np.ascontiguousarray(np.linalg.svd(centred, full_matrices=False)[2][:dims], np.float32)
        else:
            self.basis = np.eye(thumbs.shape[1], dtype=np.float32)[:dims]
        self.thumb_index = faiss.IndexFlatL2(dims)
        self.thumb_index.add(thumbs @ self.basis.T)
        self._band: Optional[np.ndarray] = None

    @property
    def ref_band(self) -> np.ndarray:
        """Band-pass vectors of the references (computed on first use)."""
        if self._band is None:
            self._band = confirm_mod.band_vectors(self.ref.grey)
        return self._band

    def candidates(self, query: confirm_mod.Sigs) -> confirm_mod.Pairs:
        """Pairs passing the hash or thumbnail gate, sorted by query then ref (equal to the scan's)."""
        n = len(query.hash)
        qi_parts: List[np.ndarray] = []
        rj_parts: List[np.ndarray] = []
        if n and len(self.ref.hash):
            lims, _dist, ids = self.hash_index.range_search(np.ascontiguousarray(query.hash, np.uint8),
                                                            self.threshold + 1)  # faiss keeps d < radius
            qi_parts.append(np.repeat(np.arange(n), np.diff(lims.astype(np.int64))))
            rj_parts.append(ids)
            if self.thumb_min is not None:
                qt = np.ascontiguousarray(query.thumb, dtype=np.float32)
                radius = float((qt * qt).sum(axis=1).max()) + self.ref_sq - 2.0 * self.thumb_min
                radius = radius * (1 + 1e-4) + 1e-4  # float slack: survivors are decided exactly
                lims, _dist, ids = self.thumb_index.range_search(np.ascontiguousarray(qt @ self.basis.T), radius)
                qi_parts.append(np.repeat(np.arange(n), np.diff(lims.astype(np.int64))))
                rj_parts.append(ids)
        qi = np.concatenate(qi_parts) if qi_parts else np.zeros(0, np.int64)
        rj = np.concatenate(rj_parts) if rj_parts else np.zeros(0, np.int64)
        return dedup.gate_pairs(query, self.ref, qi, rj, self.threshold, self.thumb_min)

    def find(self, query: confirm_mod.Sigs, max_checks: int = dedup.DEFAULT_MAX_CHECKS,
             pixel_thresholds: Optional[Tuple[float, float]] = dedup.DEFAULT_PIXEL_THRESHOLDS,
             ranking: str = "grid",
             grid_min: float = confirm_mod.DEFAULT_GRID_MIN) -> Tuple[List[dedup.Match], Dict[str, int]]:
        """Confirmed duplicates of ``query`` among the references (as :func:`dedup.find_duplicates`)."""
        pairs = self.candidates(query)
        return confirm_mod.confirm(pairs, query, self.ref, dedup.pixel_check(query, self.ref), max_checks,
                                   pixel_thresholds, ranking, grid_min,
                                   self.ref_band if ranking == "grid" and len(pairs.query) else None)


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
