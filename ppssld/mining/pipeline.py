"""One-command mining: score the pool, remove near-duplicates of eval images, pick top-k per class."""
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from ppssld.utils.progress import progress as tqdm

from ppssld.config import get
from ppssld.data.label_list import IMAGE_EXTENSIONS, read_label_list, write_label_list
from ppssld.data.image import load_and_transform
from ppssld.data.transforms import Compose, build_transforms
from ppssld.mining import dedup
from ppssld.mining.report import class_names_from, duplicate_entries, plot_per_class, write_report
from ppssld.mining.score import dist_env, load_scores, score_pool, signatures_of, wait_for_chunks
from ppssld.mining.select import confidence_stats, per_class_counts, select_topk
from ppssld.mining.teacher import Teacher
from ppssld.utils.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def pool_paths(pool: str, image_root: Optional[str]) -> Tuple[List[str], str]:
    """Distinct pool image paths and their root, from a list file or a folder (walked recursively).

    A list's repeated lines are kept once: oversampling means nothing to mining.

    Raises:
        DataError: the pool is neither, or a list needs ``image_root``.
    """
    if os.path.isdir(pool):
        found = []
        for dirpath, _dirs, files in os.walk(pool):
            for name in files:
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(os.path.relpath(os.path.join(dirpath, name), pool))
        return sorted(found), pool
    if not os.path.isfile(pool):
        raise DataError(f"pool {pool!r} is neither a label list nor a folder")
    if image_root is None:
        raise DataError("a pool list needs --image-root (the folder its paths are relative to)")
    records = read_label_list(pool, unlabeled=True, ignore_labels=True)
    paths, seen = [], set()
    for rec in records:
        key = os.path.normpath(rec.path)
        if key not in seen:
            seen.add(key)
            paths.append(rec.path)
    if len(paths) < len(records):
        logger.info("pool %s: %d repeated line(s) scored once (an image is selected at most once)", pool,
                    len(records) - len(paths))
    return paths, image_root


def eval_transform_ops(config: Dict[str, Any]) -> List[Any]:
    """The config's eval transforms (``DataLoader.Eval.dataset.transform_ops``, else ``Infer.transforms``)."""
    ops = get(config, "DataLoader.Eval.dataset.transform_ops") or get(config, "Infer.transforms")
    if not ops:
        raise ConfigError("the config has no DataLoader.Eval.dataset.transform_ops (nor Infer.transforms): "
                          "mining scores images with the eval transforms")
    return ops


def mine(teacher: Teacher, config: Dict[str, Any], pool: str, image_root: Optional[str], eval_list: str, k: int,
         out: str, train_list: Optional[str] = None, topn: int = 10, batch_size: int = 64, chunk_size: int = 1024,
         min_conf: float = 0.0, cap: Optional[int] = None, features: bool = False,
         feature_threshold: Optional[float] = None, hash_threshold: int = dedup.DEFAULT_THRESHOLD,
         pixel_thresholds: Optional[Tuple[float, float]] = dedup.DEFAULT_PIXEL_THRESHOLDS,
         restart: bool = False) -> Optional[Dict[str, Any]]:
    """Score, de-duplicate, select; write ``selected_list.txt``, ``report.json``, ``per_class.png``.

    Args:
        teacher: the frozen teacher.
        config: the loaded config (eval transforms, class count, class names).
        pool: pool list or folder; image_root: root of the pool, eval and train lists.
        eval_list: evaluation list to de-duplicate against.
        k: images per class.
        out: output folder (scores are kept in ``out/scores`` for resumption).
        train_list: also de-duplicate against this labeled list.
        topn, batch_size, chunk_size: see :func:`ppssld.mining.score.score_pool`.
        min_conf, cap: see :func:`ppssld.mining.select.select_topk`.
        features: store teacher features; feature_threshold: also remove pool images whose feature
            cosine to an eval image reaches it (needs eval features: eval images are scored too).
        hash_threshold, pixel_thresholds: see :func:`ppssld.mining.dedup.find_duplicates`.
        restart: discard scores of a different run in ``out/scores``.
    Returns:
        The report (None on ranks other than 0, which only score their shard).
    """
    t0 = time.perf_counter()
    paths, root = pool_paths(pool, image_root)
    if not paths:
        raise DataError(f"pool {pool!r} holds no images")
    transform = build_transforms(eval_transform_ops(config), "DataLoader.Eval.dataset.transform_ops")
    rank, world = dist_env()
    features = features or feature_threshold is not None
    score_dir = os.path.join(out, "scores")
    stats = score_pool(teacher, paths, root, transform, score_dir, topn, batch_size, chunk_size, features,
                       rank=rank, world_size=world, restart=restart)
    if rank != 0:
        return None
    wait_for_chunks(score_dir, len(paths), chunk_size)
    scores = load_scores(score_dir)
    t_score = time.perf_counter() - t0
    unreadable = [{"image": paths[i], "error": scores.error[i]} for i in np.flatnonzero(~scores.ok)]
    if unreadable:
        logger.warning("%d pool image(s) could not be read and were skipped (listed in the report)", len(unreadable))
    ok_idx = np.flatnonzero(scores.ok)
    pool_sigs = [scores.signature(int(i)) for i in ok_idx]
    removed: Dict[int, Dict[str, Any]] = {}
    dedup_stats: Dict[str, Any] = {}
    ref_lists = [("eval", eval_list)] + ([("train", train_list)] if train_list else [])
    bad_refs = []
    for against, list_path in ref_lists:
        ref_paths = [r.path for r in read_label_list(list_path)]
        ref_sigs, bad = signatures_of(ref_paths, root, desc=f"hashing {against} list")
        bad_refs += [{"image": p, "list": against, "error": e} for p, e in bad]
        keep = [j for j, s in enumerate(ref_sigs) if s is not None]
        with tqdm(total=len(pool_sigs), desc=f"de-duplicating against {against}", unit="img") as bar:
            matches, st = dedup.find_duplicates(pool_sigs, [ref_sigs[j] for j in keep], hash_threshold,
                                                pixel_thresholds=pixel_thresholds,
                                                progress=lambda done: bar.update(done - bar.n))
        dedup_stats[against] = dict(st, reference_images=len(ref_paths), removed=len(matches))
        kept_paths = [ref_paths[j] for j in keep]
        for m, row in zip(matches, duplicate_entries(matches, [paths[i] for i in ok_idx], kept_paths, against)):
            removed.setdefault(int(ok_idx[m.query]), row)
        if feature_threshold is not None and against == "eval":
            _feature_dedup(teacher, transform, root, kept_paths, scores, ok_idx, paths, feature_threshold,
                           batch_size, removed, dedup_stats)
    valid = scores.ok.copy()
    valid[list(removed)] = False
    class_num = int(get(config, "Arch.class_num") or scores.prob.shape[1])
    sel = select_topk(scores.prob, scores.cls, k, class_num, valid, min_conf, cap)
    os.makedirs(out, exist_ok=True)
    write_label_list(os.path.join(out, "selected_list.txt"), [(paths[i], None) for i in sel.index])
    counts = per_class_counts(sel, class_num)
    names = class_names_from(get(config, "Global.class_names"), class_num)
    plot_per_class(counts, os.path.join(out, "per_class.png"), k, names)
    report = {
        "pool": pool, "image_root": root, "eval_list": eval_list, "train_list": train_list, "teacher":
            teacher.description, "k": k, "class_num": class_num, "topn": int(scores.prob.shape[1]),
        "min_conf": min_conf, "cap": cap, "pool_images": len(paths), "scored": int(scores.ok.sum()),
        "unreadable": len(unreadable), "unreadable_images": unreadable, "unreadable_reference_images": bad_refs,
        "selected": int(len(sel.index)), "per_class": counts,
        "candidates_per_class": sel.candidates.astype(int).tolist(),
        "short_classes": [{"class": c, "selected": counts[c], "missing": k - counts[c]}
                          for c in range(class_num) if counts[c] < k],
        "confidence": {"selected": confidence_stats(sel.prob), "pool_top1": confidence_stats(
            scores.prob[scores.ok, 0]), "per_class_selected": [confidence_stats(sel.prob[sel.label == c])
                                                               for c in range(class_num)]},
        "dedup": {"hash": dedup.DEFAULT_HASH, "hash_bits": dedup.DEFAULT_HASH_SIZE ** 2,
                  "hash_threshold": hash_threshold, "pixel_thresholds": pixel_thresholds,
                  "feature_threshold": feature_threshold, "removed": len(removed), **dedup_stats,
                  "note": "rejected_by_pixel_check counts pool images that looked alike by hash or thumbnail "
                          "but were kept as distinct by the pixel check"},
        "removed_duplicates": sorted(removed.values(), key=lambda r: r["pool_image"]),
        "scoring": dict(stats, seconds_total_to_scores=round(t_score, 2), world_size=world),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_report(os.path.join(out, "report.json"), report)
    logger.info("selected %d images (%d classes short of k=%d); removed %d duplicates; %d unreadable",
                len(sel.index), len(report["short_classes"]), k, len(removed), len(unreadable))
    return report


def _feature_dedup(teacher: Teacher, transform: Compose, root: str, ref_paths: Sequence[str], scores: Any,
                   ok_idx: np.ndarray, paths: Sequence[str], threshold: float, batch_size: int,
                   removed: Dict[int, Dict[str, Any]], dedup_stats: Dict[str, Any]) -> None:
    feats = []
    for s in range(0, len(ref_paths), batch_size):
        batch = np.stack([load_and_transform(os.path.join(root, p), transform) for p in ref_paths[s:s + batch_size]])
        feats.append(teacher(batch, features=True)[1])
    qi, rj, cos = dedup.feature_matches(scores.feature[ok_idx].astype(np.float32), np.concatenate(feats), threshold)
    for q, r, c in zip(qi, rj, cos):
        removed.setdefault(int(ok_idx[q]), {"pool_image": paths[int(ok_idx[q])], "matched_image": ref_paths[int(r)],
                                            "against": "eval", "feature_cosine": round(float(c), 4)})
    dedup_stats["eval_features"] = {"threshold": threshold, "matched": int(len(qi))}
