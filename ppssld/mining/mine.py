"""One-command mining: score the pool, remove near-duplicates of eval images, pick top-k per class."""
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ppssld.utils.checks import is_int
from ppssld.utils.config import get
from ppssld.data.lists.label_list import IMAGE_EXTENSIONS, format_record, read_label_list, write_label_list
from ppssld.data.transforms import build_transforms
from ppssld.mining.dedup import near_duplicates as dedup
from ppssld.mining import sharded
from ppssld.mining.report import class_names_from, plot_per_class, write_report
from ppssld.mining.score import chunk_path, score_pool, wait_for_chunks
from ppssld.utils.dist_env import dist_env
from ppssld.mining.score_files import check_chunks
from ppssld.mining.select import confidence_stats, per_class_counts
from ppssld.mining.settings import check_folders, check_settings
from ppssld.teacher.frozen import Teacher
from ppssld.teacher.inputs import view_ops
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.folder_lock import holding
from ppssld.utils.io import atomic_path, ensure_dir

logger = logging.getLogger(__name__)

SELECTED_CLASSES = "selected_classes.txt"  # beside selected_list.txt: each mined image with its class


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


def sample_pool(pool: str, image_root: Optional[str], size: Optional[int], seed: int, out_path: str,
                size_name: str = "size", seed_name: str = "seed") -> Tuple[str, Optional[str]]:
    """The whole pool, or a seeded random sample of ``size`` of its images, written as a list to ``out_path``.

    The main job's ``mine.pool`` and ``select_unlabeled.py --max-pool`` both sample here: the pool's images (a
    list's lines in order, a folder's images sorted) at the first ``size`` positions of
    ``numpy.random.RandomState(seed).permutation``, kept in the pool's order.

    Args:
        pool: pool list or folder; image_root: the folder a list's paths are relative to.
        size: images to keep (None: the whole pool, nothing written).
        seed: seed of the sample.
        out_path: the sample's list file.
        size_name, seed_name: the names the user gave them by (in errors and in the log).
    Returns:
        ``(pool, image_root)`` to mine: the sample's list and the folder its paths are relative to.
    Raises:
        ConfigError: ``size`` not a whole number >= 1, ``seed`` outside [0, 2**32).
        DataError: see :func:`pool_paths`.
    """
    if size is None:
        return pool, image_root
    if not is_int(size) or size < 1:
        raise ConfigError(f"{size_name} must be a whole number of pool images >= 1 (leave it out to score the "
                          f"whole pool), got {size!r}")
    if not is_int(seed) or not 0 <= seed < 2 ** 32:
        raise ConfigError(f"{seed_name} must be a whole number in [0, 2**32) (the pool sample's seed), got {seed!r}")
    if os.path.isfile(pool):
        paths = [rec.path for rec in read_label_list(pool, unlabeled=True, ignore_labels=True)]
    else:
        paths, image_root = pool_paths(pool, image_root)  # a folder's images (DataError if neither)
    keep = sorted(np.random.RandomState(seed).permutation(len(paths))[:size].tolist())
    write_label_list(out_path, [(paths[i], None) for i in keep])
    logger.info("mining a random sample of %d of the %d pool images (%s=%d, %s=%d): %s", len(keep), len(paths),
                size_name, size, seed_name, seed, out_path)
    return out_path, image_root


def eval_transform_ops(config: Dict[str, Any]) -> List[Any]:
    """The config's eval transforms (``DataLoader.Eval.dataset.transform_ops``, else ``Infer.transforms``)."""
    ops, _place = view_ops(config, "eval")  # the one rule of which list mining's views come from
    if not ops:
        raise ConfigError("the config has no DataLoader.Eval.dataset.transform_ops (nor Infer.transforms): "
                          "mining scores images with the eval transforms")
    return ops


def mine(teacher: Teacher, config: Dict[str, Any], pool: str, image_root: Optional[str], eval_list: str, k: int,
         out: str, train_list: Optional[str] = None, topn: int = 10, batch_size: int = 64, chunk_size: int = 1024,
         min_conf: float = 0.0, cap: Optional[int] = None, features: bool = False,
         feature_threshold: Optional[float] = None, hash_threshold: int = dedup.DEFAULT_THRESHOLD,
         pixel_thresholds: Optional[Tuple[float, float]] = dedup.DEFAULT_PIXEL_THRESHOLDS,
         restart: bool = False, names: Optional[Dict[str, str]] = None) -> Optional[Dict[str, Any]]:
    """Score, de-duplicate, select; write ``selected_list.txt``, ``report.json``, ``per_class.png``.

    Args:
        teacher: the frozen teacher.
        config: the loaded config (eval transforms, class count, class names).
        pool: pool list or folder; image_root: root of the pool, eval and train lists.
        eval_list: evaluation list to de-duplicate against.
        k: images per class.
        out: output folder (scores are kept in ``out/scores`` for resumption).
        train_list: also de-duplicate against this labeled list.
        topn, batch_size, chunk_size: see :func:`ppssld.mining.score.score_pool`; min_conf, cap: ``select_topk``.
        features: store teacher features; feature_threshold: also remove pool images whose feature
            cosine to an eval image reaches it (needs eval features: eval images are scored too).
        hash_threshold, pixel_thresholds: see :func:`ppssld.mining.dedup.find_duplicates`.
        restart: discard scores of a different run in ``out/scores``.
        names: how the caller's user names the settings in errors (:data:`ppssld.mining.settings.ARGUMENTS`
            for select_unlabeled.py; default ``mine.<setting>``).
    Returns:
        The report (None on ranks other than 0, which score and de-duplicate their shard).
    Raises:
        ConfigError: a setting out of range (:func:`ppssld.mining.settings.check_settings`), before any work.
        OutputError: another mining run writes ``out`` (its holder named; see :mod:`ppssld.utils.folder_lock`).
    """
    check_settings({"k": k, "topn": topn, "batch_size": batch_size, "chunk_size": chunk_size, "min_conf": min_conf,
                    "cap": cap, "feature_threshold": feature_threshold, "hash_threshold": hash_threshold,
                    "pixel_thresholds": pixel_thresholds}, names)
    check_folders(image_root, out, names)
    with holding(out, (names or {}).get("out", "the mining output folder")):  # one mining per folder (rank 0)
        return _mine(teacher, config, pool, image_root, eval_list, k, out, train_list, topn, batch_size, chunk_size,
                     min_conf, cap, features, feature_threshold, hash_threshold, pixel_thresholds, restart)


def _mine(teacher: Teacher, config: Dict[str, Any], pool: str, image_root: Optional[str], eval_list: str, k: int,
          out: str, train_list: Optional[str], topn: int, batch_size: int, chunk_size: int, min_conf: float,
          cap: Optional[int], features: bool, feature_threshold: Optional[float], hash_threshold: int,
          pixel_thresholds: Optional[Tuple[float, float]], restart: bool) -> Optional[Dict[str, Any]]:
    t0 = time.perf_counter()
    paths, root = pool_paths(pool, image_root)
    if not paths:
        raise DataError(f"pool {pool!r} holds no images")
    transform = build_transforms(eval_transform_ops(config), "DataLoader.Eval.dataset.transform_ops")
    rank, world = dist_env()
    score_dir = ensure_dir(os.path.join(out, "scores"))
    run = _Run(teacher, paths, root, transform, score_dir, rank, world, batch_size, hash_threshold,
               sharded.DedupSettings(hash_threshold, pixel_thresholds, feature_threshold=feature_threshold),
               [("eval", eval_list)] + ([("train", train_list)] if train_list else []))
    stats, times = run.score(topn, chunk_size, features or feature_threshold is not None, restart, t0)
    key = sharded.dedup_chunks(score_dir, paths, run.refs, run.settings, rank, world)  # chunks of an earlier run
    if rank != 0:
        return None
    wait_for_chunks(score_dir, len(paths), chunk_size)
    check_chunks(score_dir, (len(paths) + chunk_size - 1) // chunk_size)  # every chunk as recorded, before selection
    removed, dedup_stats = sharded.merge_dedup(score_dir, key, (len(paths) + chunk_size - 1) // chunk_size)
    for against, count in run.ref_counts.items():
        dedup_stats.setdefault(against, {})["reference_images"] = count
    times["dedup_after_scoring_and_merge"] = round(time.perf_counter() - t0 - times["t_ref"] - times["t_score"], 3)
    with np.load(chunk_path(score_dir, 0), allow_pickle=False) as first:
        n_top = int(first["prob"].shape[1])
    class_num = int(get(config, "Arch.class_num") or n_top)
    t_sel = time.perf_counter()
    sel, errors, top1 = sharded.select_streaming(score_dir, k, class_num, removed, min_conf, cap)
    times["selection"] = round(time.perf_counter() - t_sel, 3)
    unreadable = [{"image": paths[i], "error": errors[i]} for i in sorted(errors)]
    if unreadable:
        logger.warning("%d pool image(s) could not be read and were skipped (listed in the report)", len(unreadable))
    counts = _write_selection(out, paths, sel, class_num, k, get(config, "Global.class_names"))
    report = {
        "pool": pool, "image_root": root, "eval_list": eval_list, "train_list": train_list, "teacher":
            teacher.description, "k": k, "class_num": class_num, "topn": n_top,
        **({"teachers": teacher.report()} if callable(getattr(teacher, "report", None)) else {}),
        "min_conf": min_conf, "cap": cap, "pool_images": len(paths), "scored": int(len(top1)),
        "unreadable": len(unreadable), "unreadable_images": unreadable, "unreadable_reference_images": run.bad_refs,
        "selected": int(len(sel.index)), "per_class": counts,
        "candidates_per_class": sel.candidates.astype(int).tolist(),
        "short_classes": [{"class": c, "selected": counts[c], "missing": k - counts[c]}
                          for c in range(class_num) if counts[c] < k],
        "confidence": {"selected": confidence_stats(sel.prob), "pool_top1": confidence_stats(top1),
                       "per_class_selected": [confidence_stats(sel.prob[sel.label == c]) for c in range(class_num)]},
        "dedup": _dedup_report(run.settings, hash_threshold, pixel_thresholds, feature_threshold, removed, dedup_stats),
        "removed_duplicates": sorted(removed.values(), key=lambda r: r["pool_image"]),
        "scoring": dict(stats, seconds_total_to_scores=round(times["t_ref"] + times["t_score"], 2), world_size=world),
        "seconds_by_part": {"reference_signatures_and_index": round(times["t_ref"], 3),
                            "reference_signatures_and_index_own": round(times["t_ref_own"], 3),
                            "reference_in_background": feature_threshold is None,
                            "scoring_with_overlapped_dedup": round(times["t_score"], 3),
                            "dedup_after_scoring_and_merge": times["dedup_after_scoring_and_merge"],
                            "selection": times["selection"]},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_report(os.path.join(out, "report.json"), report)
    logger.info("selected %d images (%d classes short of k=%d); removed %d duplicates; %d unreadable",
                len(sel.index), len(report["short_classes"]), k, len(removed), len(unreadable))
    return report


class _Run:
    """One mining pass's scoring: the references hashed, and each scored chunk de-duplicated, in one
    background thread while the teacher scores (with teacher features the references are scored first:
    one model, one thread)."""

    def __init__(self, teacher: Teacher, paths: List[str], root: str, transform: Any, score_dir: str, rank: int,
                 world: int, batch_size: int, hash_threshold: int, settings: sharded.DedupSettings,
                 ref_lists: List[Tuple[str, str]]) -> None:
        self.teacher, self.paths, self.root, self.transform = teacher, paths, root, transform
        self.score_dir, self.rank, self.world, self.batch_size = score_dir, rank, world, batch_size
        self.hash_threshold, self.settings, self.ref_lists = hash_threshold, settings, ref_lists
        # a bad list fails now, not after scoring; parsed once, here (the background thread only hashes)
        self.ref_list_paths = {path: [r.path for r in read_label_list(path)] for _against, path in ref_lists}
        self.refs: List[Tuple[str, sharded.Reference]] = []
        self.bad_refs: List[Dict[str, str]] = []
        self.ref_counts: Dict[str, int] = {}

    def load_references(self) -> Tuple[List[Tuple[str, sharded.Reference]], List[Dict[str, str]], Dict[str, int],
                                       float]:
        """Hash (and with a feature threshold, score) the reference lists of this rank."""
        start = time.perf_counter()
        refs, bad, counts = [], [], {}
        for against, list_path in self.ref_lists:
            ref_paths = self.ref_list_paths[list_path]
            with_features = self.settings.feature_threshold is not None and against == "eval"
            ref = sharded.reference(ref_paths, self.root, self.score_dir, self.rank, self.world,
                                    self.teacher if with_features else None, self.transform, self.batch_size,
                                    self.hash_threshold)
            refs.append((against, ref))
            bad += [{"image": p, "list": against, "error": e} for p, e in ref.bad]
            counts[against] = len(ref_paths)
        return refs, bad, counts, time.perf_counter() - start

    def score(self, topn: int, chunk_size: int, features: bool, restart: bool,
              t0: float) -> Tuple[Dict[str, Any], Dict[str, float]]:
        """Score the pool with the de-dup of each chunk overlapped; returns (scoring stats, seconds by part)."""
        pending: List[Future] = []
        with ThreadPoolExecutor(max_workers=1) as background:
            if self.settings.feature_threshold is None:
                references = background.submit(self.load_references)
            else:
                references = Future()
                references.set_result(self.load_references())
            t_ref = time.perf_counter() - t0

            def dedup_chunk(c: int, arrays: Dict[str, np.ndarray]) -> None:
                refs = references.result()[0]
                out_file = sharded.dedup_file(self.score_dir, sharded.dedup_key(self.score_dir, refs, self.settings),
                                              c)
                sharded.dedup_arrays(arrays, self.paths, refs, self.settings, out_file)

            def on_chunk(c: int, arrays: Dict[str, np.ndarray]) -> None:
                pending.append(background.submit(dedup_chunk, c, arrays))

            # without teacher features a chunk's de-dup needs only its signatures: it starts as soon as the chunk
            # is decoded, so the last one overlaps the teacher too
            hooks = {"on_chunk": on_chunk} if self.settings.feature_threshold is not None else {"on_loaded": on_chunk}
            stats = score_pool(self.teacher, self.paths, self.root, self.transform, self.score_dir, topn,
                               self.batch_size, chunk_size, features, rank=self.rank, world_size=self.world,
                               restart=restart, **hooks)
            t_score = time.perf_counter() - t0 - t_ref
            self.refs, self.bad_refs, self.ref_counts, t_ref_own = references.result()
            for job in pending:
                job.result()
        return stats, {"t_ref": t_ref, "t_ref_own": t_ref_own, "t_score": t_score}


def _write_selection(out: str, paths: List[str], sel: Any, class_num: int, k: int,
                     class_names: Any) -> List[int]:
    """``selected_list.txt`` (no label: the list training reads), ``selected_classes.txt`` (PaddleClas's list
    format with the class each image was selected for, the teacher's pseudo-label) and ``per_class.png``,
    streamed line by line, then renamed. Returns the per-class counts."""
    os.makedirs(out, exist_ok=True)
    with atomic_path(os.path.join(out, "selected_list.txt")) as tmp, \
            atomic_path(os.path.join(out, SELECTED_CLASSES)) as tmp_classes:
        with open(tmp, "w", encoding="utf-8") as handle, open(tmp_classes, "w", encoding="utf-8") as classes:
            for i, c in zip(sel.index, sel.label):
                handle.write(format_record(paths[i], None) + "\n")
                classes.write(format_record(paths[i], int(c)) + "\n")
    counts = per_class_counts(sel, class_num)
    plot_per_class(counts, os.path.join(out, "per_class.png"), k, class_names_from(class_names, class_num))
    return counts


def _dedup_report(settings: sharded.DedupSettings, hash_threshold: int, pixel_thresholds: Any,
                  feature_threshold: Optional[float], removed: Dict[int, Any], stats: Dict[str, Any]) -> Dict[str, Any]:
    """The report's ``dedup`` section: how near-duplicates were searched and decided, and the counts."""
    return {"search": "faiss IndexBinaryFlat (hash) + IndexFlatL2 (thumbnail PCA)",
            "ranking": settings.ranking, "aligned_band_pass_min": settings.grid_min,
            "pixel_check": settings.check,
            "hash": dedup.DEFAULT_HASH, "hash_bits": dedup.DEFAULT_HASH_SIZE ** 2,
            "hash_threshold": hash_threshold, "pixel_thresholds": pixel_thresholds,
            "feature_threshold": feature_threshold, "removed": len(removed), **stats,
            "note": "rejected_by_alignment / rejected_by_pixel_check count pool images that looked alike by "
                    "hash or thumbnail but were kept as distinct by the aligned band-pass floor / pixel check"}
