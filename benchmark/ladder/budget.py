"""The ladder's plan and cost model: which runs and soft-label caches a set of options implies, and their minutes.

Pure planning (no data, no training): :class:`Plan` turns the command line into :class:`RunSpec` (one training
run) and :class:`CacheSpec` (one teacher soft-label cache) objects. ``classic.py`` executes them and
``--plan`` prints :meth:`Plan.table`.

Caches: every distillation arm (KD, JS, fine-tune, and the KD/JS LR-search runs) reads the cache of its
(train list + unlabeled list, seed): one cache per such pair, with V = the most epochs any of its readers trains
(no view reused) and K = ``--cache-topk``. ``--no-cache`` plans every arm online (the teacher run per batch).
"""
import argparse
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

# ---- Cost model ------------------------------------------------------------------------------------------------
# Training images/s including start-up, and seconds per 10,000 evaluated images, on the 2-core CPU.
# ce / distill / mine: the committed ladder run (2026-11-25, OMP_NUM_THREADS=2, benchmark/results/ladder/ladder.json).
# teacher: ResNet18 with AdamW, batch 64 (teacher_ResNet18_1ep.yaml): 137-141 img/s in teacher_choice.md.
# cached: a distillation arm reading the soft-label cache runs the student alone (train_throughput.md: 1.10x the
#   student's CE speed on synthetic tensors), so it is costed as CE until the ladder measures it.
# cache: generating a cache = the teacher's eval-mode forward on augmented images, as mining's scoring pass.
# Mining: teacher scoring, then ~20 ms per pool image to de-duplicate it against the test set (single-threaded).
IPS = {"ce": 190.0, "distill": 93.0, "cached": 190.0, "teacher": 130.0, "mine": 190.0, "cache": 190.0}
DEDUP_S = 0.020
EVAL_S = {"ce": 15.0, "distill": 15.0, "cached": 15.0, "teacher": 45.0}
PREPARE_S = 30.0  # both copies of the 70,000 Fashion-MNIST PNGs (measured: 22 s with OMP_NUM_THREADS=1)
START_S = 5.0  # per run: config, model build, first batch
CACHE_START_S = 10.0  # per cache: teacher build, dataset scan, manifest


@dataclass(frozen=True)
class Step:
    """One rung: ``data`` is full (all labels), L (labeled), L+mined, U (the pool) or transfer."""
    step: str
    key: str
    name: str
    data: str
    epochs: int
    cost: str
    seeds: int
    loss: str = "ce"  # ce, kd, js, ft (fine-tune: JS at LR/10 from step 5), teacher, mine
    scaled: bool = True  # False: the epoch count is the recipe's, --scale does not touch it


# Epochs at --scale 1; the default --scale 0.5 halves them (min 1). The teacher is teacher_ResNet18_1ep.yaml's
# recipe (AdamW, 1 epoch on all 60,000 labels; benchmark/results/studies/teacher_choice.md), whatever the scale.
BUDGET: List[Step] = [  # step, key, name, data, epochs, cost model, runs (seeds), loss
    Step("T", "teacher", "teacher ResNet18, CE (AdamW, 1 epoch), all labels", "full", 1, "teacher", 1, "teacher",
         scaled=False),
    Step("0", "ce_full", "student CE, all labels (plain supervised)", "full", 2, "ce", 1, "ce"),
    Step("1", "ce_L", "student CE on L", "L", 15, "ce", 2, "ce"),
    Step("2", "kd_L", "classic KD: CE + KL(T=4) on L", "L", 15, "distill", 1, "kd"),
    Step("3", "js_L", "SSLD JS on L", "L", 15, "distill", 1, "js"),
    Step("4", "js_long", "SSLD JS on L, 2x longer", "L", 30, "distill", 1, "js"),
    Step("M", "mine", "mine top-k per class from 20k of U", "U", 0, "mine", 1, "mine"),
    Step("5", "js_mined", "SSLD JS on L + mined U", "L+mined", 0, "distill", 2, "js"),  # epochs: images of step 4
    Step("6", "finetune", "+ fine-tune on L (LR/10)", "L", 3, "distill", 2, "ft"),
    Step("X", "transfer", "transfer to digits, lr_mult_list", "transfer", 15, "ce", 2, "ce"),
]
STEPS = {s.key: s for s in BUDGET}
DISTILL = ("kd", "js", "ft")  # the losses that read the teacher (from a cache unless --no-cache)
TUNE_ARMS = ("ce", "kd", "js")
ONLINE_CHECK = ("js_L", "js_mined")  # the arms --online-check trains both ways, both seeds
CONVERGE = ("ce_full", "ce_L")  # the arms --converge trains until test top-1 stops rising
# what a step needs run first (besides data and teacher, always run): --only adds these
NEEDS = {"js_mined": ("mine",), "finetune": ("js_mined",), "transfer": ("ce_L", "finetune")}
DATASETS = {"fashion_mnist": {"full": 60000, "L": 5000, "val": 10000, "classes": 10},
            "digits": {"full": 1433, "L": 300, "val": 364, "classes": 10}}
DIGITS = DATASETS["digits"]  # the transfer set
DEFAULT_TOPK = 5  # tools/cache_soft_labels.py has no default --topk


@dataclass
class CacheSpec:
    """One soft-label cache: the teacher on list ``lists`` (L, L+mined or tune) with ``seed``."""
    label: str
    lists: str
    seed: int
    views: int = 0
    topk: int = DEFAULT_TOPK
    readers: List[str] = field(default_factory=list)
    est_s: float = 0.0


@dataclass
class RunSpec:
    """One training run: ``cache`` is the label of the cache it reads (None: online teacher, or no teacher)."""
    label: str
    key: str
    loss: str
    data: str
    seed: int
    epochs: int
    cache: Optional[str] = None
    online_twin: bool = False
    lr_tag: str = ""  # tune runs: the LR tried
    est_s: float = 0.0


def parse_only(text: Optional[str]) -> Tuple[str, ...]:
    """``--only`` as step keys (ValueError naming the bad ones and the valid keys)."""
    if not text:
        return ()
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in keys if k not in STEPS or k == "teacher"]
    if bad or not keys:
        valid = ", ".join(s.key for s in BUDGET if s.key != "teacher")
        raise ValueError(f"--only {text}: unknown step key(s) {', '.join(bad) or '(none given)'}; valid: {valid}")
    return keys


class Plan:
    """Runs, caches and estimated seconds implied by the options (``mined``: the mined list's size, once known)."""

    def __init__(self, args: argparse.Namespace, mined: Optional[int] = None) -> None:
        self.args = args
        self.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
        self.mined = mined
        self.use_cache = not getattr(args, "no_cache", False)
        self.only = parse_only(getattr(args, "only", None))

    # ---- what runs ---------------------------------------------------------------------------------------------
    def keys(self) -> List[str]:
        """The step keys that run, in ladder order (--only plus what they need; the teacher always)."""
        if not self.only:
            return [s.key for s in BUDGET]
        wanted = set(self.only) | {"teacher"}
        todo = list(self.only)
        while todo:
            for need in NEEDS.get(todo.pop(), ()):
                if need not in wanted:
                    wanted.add(need)
                    todo.append(need)
        return [s.key for s in BUDGET if s.key in wanted]

    def step_seeds(self, key: str) -> List[int]:
        """Seeds step ``key`` trains (steps 3 and 5: --check-seeds of them under --online-check)."""
        n = STEPS[key].seeds
        if key in ONLINE_CHECK and getattr(self.args, "online_check", False):
            n = max(n, getattr(self.args, "check_seeds", 2))
        return self.seeds[:n]

    def epochs(self, step: Step) -> int:
        """Epochs of ``step`` after --scale (step 5 sees as many images as step 4)."""
        if step.key == "js_mined":
            n = self.sizes()
            return max(1, round(self.epochs(STEPS["js_long"]) * n["L"] / n["L+mined"]))
        return max(1, round(step.epochs * (self.args.scale if step.scaled else 1.0)))

    def tune_epochs(self) -> int:
        """Epochs of each LR-search run."""
        return max(1, round(self.args.tune_epochs * self.args.scale))

    def sizes(self) -> Dict[str, int]:
        """Images per data kind, after --limit-train / --limit-val."""
        ds, lim = DATASETS[self.args.dataset], self.args.limit_train or 10 ** 9
        full, lab = min(ds["full"], lim), min(ds["L"], lim)
        pool = min(ds["full"] - ds["L"], lim, self.args.pool or 10 ** 9)
        mined = self.mined if self.mined is not None else min(self.args.k * ds["classes"], pool)
        return {"full": full, "L": lab, "U": pool, "L+mined": lab + mined, "transfer": min(DIGITS["full"], lim),
                "tune": lab - lab // 5, "val": min(ds["val"], self.args.limit_val or 10 ** 9)}

    def converge_budgets(self, key: str) -> List[int]:
        """Epoch budgets E, 2E, 4E, ... --converge may train for step ``key``: as many as fit --converge-cap-min
        by the cost model (the runner stops earlier once a doubling gains < --plateau points)."""
        base = self.epochs(STEPS[key])
        if not self.converging(key):
            return [base]
        budgets, spent, cap = [base], self.run_s(key, base) * len(self.step_seeds(key)), self.args.converge_cap_min * 60
        while spent + self.run_s(key, 2 * budgets[-1]) * len(self.step_seeds(key)) <= cap:
            budgets.append(2 * budgets[-1])
            spent += self.run_s(key, budgets[-1]) * len(self.step_seeds(key))
        return budgets

    def converging(self, key: str) -> bool:
        """Whether step ``key`` runs under --converge's protocol."""
        return bool(getattr(self.args, "converge", False)) and key in CONVERGE

    def label(self, key: str, seed: int, epochs: int) -> str:
        """A run's label: ``<step>_<key>_seed<s>``, plus ``_ep<E>`` for a --converge budget."""
        return f"{STEPS[key].step}_{key}_seed{seed}" + (f"_ep{epochs}" if self.converging(key) else "")

    def run_s(self, key: str, epochs: int, cost: Optional[str] = None, data: Optional[str] = None) -> float:
        """Seconds one run should take by the cost model."""
        step, n = STEPS.get(key), self.sizes()
        data = data or step.data
        cost = cost or step.cost
        val = min(DIGITS["val"], n["val"]) if data == "transfer" else n["val"]
        if data == "tune":
            val = n["L"] // 5
        return epochs * n[data] / IPS[cost] + EVAL_S[cost] * val / 1e4 + START_S

    def mine_s(self) -> float:
        """Seconds of the mining pass."""
        n = self.sizes()
        return n["U"] / IPS["mine"] + n["U"] * DEDUP_S

    def _cache_for(self, caches: Dict[str, CacheSpec], lists: str, seed: int, reader: str, epochs: int) -> str:
        label = f"C_cache_{lists.replace('+', '_')}_seed{seed}"
        spec = caches.setdefault(label, CacheSpec(label, lists, seed, topk=self.args.cache_topk))
        spec.views = max(spec.views, epochs)
        spec.readers.append(reader)
        return label

    def runs(self) -> Tuple[List[RunSpec], Dict[str, CacheSpec]]:
        """Every training run in ladder order (converge budgets at their worst case) and the caches they read."""
        runs: List[RunSpec] = []
        caches: Dict[str, CacheSpec] = {}
        keys = self.keys()

        def add(spec: RunSpec, cost: str) -> None:
            if spec.loss in DISTILL and self.use_cache and not spec.online_twin:
                spec.cache = self._cache_for(caches, {"L": "L", "L+mined": "L+mined", "tune": "tune"}[spec.data],
                                             spec.seed, spec.label, spec.epochs)
                cost = "cached"
            spec.est_s = self.run_s(spec.key, spec.epochs, cost, spec.data)
            runs.append(spec)

        if "teacher" in keys and not self.args.teacher:
            step = STEPS["teacher"]
            add(RunSpec(f"T_teacher_seed{self.seeds[0]}", "teacher", "teacher", "full", self.seeds[0],
                        self.epochs(step)), "teacher")
        if getattr(self.args, "tune", False):
            for arm in TUNE_ARMS:
                for lr in self.args.lr_grid.split(","):
                    add(RunSpec(f"tune_{arm}_lr{float(lr)}", "tune", arm, "tune", self.seeds[0], self.tune_epochs(),
                                lr_tag=str(float(lr))), "ce" if arm == "ce" else "distill")
        for key in keys:
            step = STEPS[key]
            if key in ("teacher", "mine", "transfer"):
                continue
            budgets = self.converge_budgets(key)
            for epochs in budgets:
                for seed in self.step_seeds(key):
                    add(RunSpec(self.label(key, seed, epochs), key, step.loss, step.data, seed, epochs), step.cost)
                    if key in ONLINE_CHECK and getattr(self.args, "online_check", False):
                        add(RunSpec(f"{step.step}_{key}_online_seed{seed}", key, step.loss, step.data, seed, epochs,
                                    online_twin=True), "distill")
        if "transfer" in keys:
            step = STEPS["transfer"]
            for src in ("1_ce_L", "6_finetune"):
                add(RunSpec(f"X_transfer_from_{src}_seed{self.seeds[0]}", "transfer", "ce", "transfer",
                            self.seeds[0], self.epochs(step)), "ce")
        n = self.sizes()
        for spec in caches.values():
            spec.est_s = spec.views * n[spec.lists] / IPS["cache"] + CACHE_START_S
        return runs, caches

    def units(self) -> List[Tuple[str, float]]:
        """(label, estimated seconds) of everything, in execution order: each cache just before its first reader."""
        runs, caches = self.runs()
        units = [("prepare", PREPARE_S * DATASETS[self.args.dataset]["full"] / 6e4)]
        placed = set()
        for spec in runs:
            if spec.key == "js_mined" and "mine" not in placed:
                units.append((f"M_mine_seed{self.seeds[0]}", self.mine_s()))
                placed.add("mine")
            if spec.cache and spec.cache not in placed:
                units.append((spec.cache, caches[spec.cache].est_s))
                placed.add(spec.cache)
            units.append((spec.label, spec.est_s))
        if "mine" in self.keys() and "mine" not in placed:
            units.append((f"M_mine_seed{self.seeds[0]}", self.mine_s()))
        return units

    # ---- the table ---------------------------------------------------------------------------------------------
    def table(self) -> str:
        """The budget per step as a markdown table (worst case under --converge) with the estimated total."""
        runs, caches = self.runs()
        rows = ["| step | key | name | data | epochs | runs | teacher | est. min |", "|" + "---|" * 8]
        for step in BUDGET:
            if step.key not in self.keys():
                continue
            mine = [r for r in runs if r.key == step.key]
            if step.key == "mine":
                rows.append(f"| M | mine | {step.name} | U | - | 1 | online | {self.mine_s() / 60:.1f} |")
                continue
            if not mine:
                continue
            eps = ",".join(str(e) for e in sorted({r.epochs for r in mine}))
            teacher = "-" if step.loss not in DISTILL else ("cache" if any(r.cache for r in mine) else "online")
            if any(r.online_twin for r in mine):
                teacher += " + online twin"
            rows.append(f"| {step.step} | {step.key} | {step.name} | {step.data} | {eps} | {len(mine)} | {teacher} | "
                        f"{sum(r.est_s for r in mine) / 60:.1f} |")
        tune = [r for r in runs if r.key == "tune"]
        if tune:
            rows.append(f"| - | tune | LR search ({self.args.lr_grid}) on 80% of L | tune | {self.tune_epochs()} | "
                        f"{len(tune)} | {'cache' if any(r.cache for r in tune) else 'online'} | "
                        f"{sum(r.est_s for r in tune) / 60:.1f} |")
        for c in caches.values():
            rows.append(f"| C | cache | teacher soft labels, top-{c.topk} float16, read by {len(c.readers)} runs | "
                        f"{c.lists} seed {c.seed} | {c.views} views | 1 | - | {c.est_s / 60:.1f} |")
        total = sum(s for _, s in self.units()) / 60
        notes = []
        if getattr(self.args, "converge", False):
            notes.append(f"--converge: worst case, every budget up to --converge-cap-min {self.args.converge_cap_min:g}"
                         f" per step; it stops once a doubling gains < {self.args.plateau:g} points")
        notes.append("teacher: cache = the arm reads its list's soft-label cache; online = the teacher runs per batch")
        return "\n".join(rows) + f"\n\nEstimated total (data preparation, teacher, caches, mining" \
                                 f"{' and tuning' if tune else ''} included): {total:.0f} min\n\n" + \
            "\n".join(f"- {n}" for n in notes)
