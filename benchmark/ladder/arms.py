"""The converged ladder's arms, protocol and cost model: what ``python -m benchmark.ladder converged`` trains.

Pure planning (no data, no training). Every compared arm goes through the same protocol:

1. **tune** (arms with ``tune``): LR over ``--lr-grid`` at the first ``--wd-grid`` value, then each other weight
   decay at the best LR, every run ``--tune-frac`` x the arm's start budget on 80% of L (+ its mined images),
   scored on the held-out 20% of L (never the test set). Fine-tune: LR over ``--ft-lr-fractions`` x step 5's LR,
   from step 5's model trained on the same 80%.
2. **search** (seed 1): the doubling search of ``plateau.py`` from the arm's start budget, at most
   ``--max-doublings`` doublings and ``--cap-epochs``.
3. **re-check** (main arms): the chosen setting and the tuning's runner-up, both at the chosen budget on the
   tuning split; if the runner-up scores higher on the held-out part it replaces the choice, and the search runs
   again under it (once) from half the chosen budget, with the same cap.
4. **seeds**: the other seeds at the chosen budget.

Rungs (one factor each, seed 1 only, LR and weight decay of step 5 unless the rung is a loss, which has its own LR
search): the search starts at half step 5's chosen budget in images seen, converted to the rung's epochs, so a rung
that is flat from there is compared with step 5 at the same images seen.

Start budgets (:data:`START`, half the expected plateau: the search's first budget) are guesses from the
2026-11-26 classic ladder (5,000 labels, batch 128): CE on L still rose 2.9 points from 16 to 32 epochs (1,250
steps), SSLD on L + mined gained ~2 points per doubling of its 5-15 epochs. With 2,000 labels an epoch is 2.5x
shorter. A start one doubling too low costs one extra budget (half the cost of the next); too high costs the budget
and reports a plateau at it. The plan's "expected" case assumes every guess is right; the run's log rescales it.
"""
import argparse
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from benchmark.ladder.plateau import budgets_up_to

# ---- Cost model (2-core AMD EPYC / Intel Xeon of this project, machine alone) ---------------------------------
# ce / cached: MobileNetV3_small_x0_35, 32 px, batch 128, CE (269-327 img/s) or read from a soft-label cache
#   (293-338 img/s), the evaluation included, in the committed ladder (benchmark/results/ladder/ladder.json,
#   2026-11-26); train_throughput.md has the cached step at 1.10x CE.
# teacher: ResNet18, AdamW, batch 64: 60,000 images + evaluation in 622 s (same ladder).
# cache: generation with the teacher engine (docs/teacher_engine.md: ResNet18 forward 1,598 img/s at 32 px) and
#   two image-reading threads; not yet measured inside a ladder, so the ladder's ETA corrects it as it runs.
# mine: scoring + de-duplication, 102 s for a 20,000-image pool (same ladder, dygraph teacher).
IPS = {"ce": 295.0, "cached": 315.0, "teacher": 100.0, "cache": 1000.0}
EVAL_S = {"student": 12.0, "teacher": 40.0}  # per 10,000 evaluated images
MINE_S = 0.0051  # per pool image
START_S, CACHE_START_S, PREPARE_S = 5.0, 10.0, 30.0
CLASSES, FULL, TEST = 10, 60000, 10000
DIGITS = {"train": 1433, "val": 364}
DUP_RATE = 0.15  # pool images removed as test near-duplicates (3,063 of 20,000 in the committed ladder)
START = {"ce_oracle": 8, "ce_L": 32, "js_mined": 8, "finetune": 2}
MAIN = ("ce_oracle", "ce_L", "js_mined", "finetune")


@dataclass(frozen=True)
class Arm:
    """One compared arm. ``k``: the mined list ('' = L only); ``labels``: the mined images keep their true labels
    (CE, the oracle); ``tune``: lr_wd, lr, ft or '' (step 5's setting)."""
    key: str
    step: str
    name: str
    loss: str
    teacher: str
    k: str
    seeds: int
    tune: str
    labels: bool = False

    @property
    def rung(self) -> bool:
        """A factor rung (seed 1, its search starts at step 5's budget in images)."""
        return self.step == "rung"


def arms(args: argparse.Namespace) -> List[Arm]:
    """Every arm of the options, in execution order (steps 1, 5, 6 first: the comparison the goal is about)."""
    n, k = len(seeds_of(args)), str(args.k)
    out = [Arm("ce_L", "1", "CE on L", "ce", "", "", n, "lr_wd"),
           Arm("js_mined", "5", f"SSLD JS on L + mined (k={k})", "js", "strong", k, n, "lr_wd"),
           Arm("finetune", "6", "+ fine-tune on L (JS, step 5's model)", "ft", "strong", "", n, "ft"),
           Arm("ce_oracle", "0", "CE on L + the mined images with their true labels (oracle)", "ce", "", k, 1,
               "lr_wd", labels=True),
           Arm("teacher_weak", "rung", "teacher: 1-epoch ResNet18 (mines and teaches)", "js", "weak", k, 1, ""),
           Arm("dml", "rung", "loss: DML (symmetric KL)", "dml", "strong", k, 1, "lr"),
           Arm("kl_t4", "rung", "loss: KL at T=4 (no hard labels)", "kl", "strong", k, 1, "lr")]
    for kr in k_rungs(args):
        out.append(Arm(f"k{kr}", "rung", f"mined: k={kr} per class" if kr != "0" else "mined: none (k=0, L only)",
                       "js", "strong", "" if kr == "0" else kr, 1, ""))
    only = set(parse_only(getattr(args, "only", None)))
    if not only:
        return out
    need = set(only)
    if need - {"ce_L", "ce_oracle"}:
        need.add("js_mined")  # every SSLD arm starts from its budget or setting
    if "finetune" in need or "transfer" in need:
        need |= {"js_mined", "finetune"}
    if "transfer" in need:
        need.add("ce_L")
    return [a for a in out if a.key in need]


def k_rungs(args: argparse.Namespace) -> List[str]:
    """The mined-amount rungs other than step 5's own k."""
    return [k for k in str(args.k_rungs).split(",") if k.strip() and k.strip() != str(args.k)]


def seeds_of(args: argparse.Namespace) -> List[int]:
    """``--seeds`` as ints."""
    return [int(s) for s in str(args.seeds).split(",") if s.strip()]


def parse_only(text: Optional[str]) -> Tuple[str, ...]:
    """``--only`` as arm keys (ValueError naming the bad ones and the valid keys)."""
    if not text:
        return ()
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    valid = ["ce_L", "js_mined", "finetune", "ce_oracle", "teacher_weak", "dml", "kl_t4", "transfer"] + \
        [f"k{k}" for k in ("0", "300", "1000", "all")]
    bad = [k for k in keys if k not in valid]
    if bad or not keys:
        raise ValueError(f"--only {text}: unknown arm(s) {', '.join(bad) or '(none given)'}; valid: {', '.join(valid)}")
    return keys


def start_budgets(args: argparse.Namespace) -> Dict[str, int]:
    """The start budget of each main arm: :data:`START` with ``--start key=epochs,...`` over it."""
    out = dict(START)
    for item in [s for s in str(getattr(args, "start", "") or "").split(",") if s.strip()]:
        key, _, value = item.partition("=")
        if key.strip() not in START or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--start {args.start}: '{item}' is not <arm>=<epochs> with arm in "
                             f"{', '.join(START)} and epochs >= 1")
        out[key.strip()] = int(value)
    return out


class Plan:
    """Sizes, runs and estimated seconds of the converged ladder for the options; ``mined``: the mined lists'
    sizes by (teacher, k) once mining ran (estimates before)."""

    def __init__(self, args: argparse.Namespace, mined: Optional[Dict[Tuple[str, str], int]] = None) -> None:
        self.args = args
        self.seeds = seeds_of(args)
        self.mined = dict(mined or {})
        self.start = start_budgets(args)
        self.arms = arms(args)

    # ---- sizes -------------------------------------------------------------------------------------------------
    def limit(self, n: int, val: bool = False) -> int:
        """``n`` after --limit-train / --limit-val."""
        lim = self.args.limit_val if val else self.args.limit_train
        return min(n, lim) if lim else n

    def pool(self) -> int:
        """Pool images offered to the miner."""
        return self.limit(min(self.args.pool or FULL, FULL - self.args.labeled))

    def mined_n(self, teacher: str, k: str) -> int:
        """Images mined by ``teacher`` with ``k`` per class (measured once mining ran)."""
        if not k:
            return 0
        if (teacher, k) in self.mined:
            return self.mined[(teacher, k)]
        kept = int(self.pool() * (1 - DUP_RATE))
        return kept if k == "all" else min(int(k) * CLASSES, kept)

    def images(self, arm: Arm, tune: bool = False) -> int:
        """Training images per epoch of ``arm`` (``tune``: on the tuning split, 80% of L)."""
        lab = self.limit(self.args.labeled)
        lab = lab - lab // 5 if tune else lab
        return lab + self.mined_n(arm.teacher or "strong", arm.k)

    def run_s(self, images: int, epochs: int, val: int, cached: bool = False) -> float:
        """Seconds of one student run: ``epochs`` over ``images`` (``cached``: from a soft-label cache), evaluated
        once on ``val`` images."""
        return epochs * images / IPS["cached" if cached else "ce"] + EVAL_S["student"] * val / 1e4 + START_S

    # ---- the protocol, costed --------------------------------------------------------------------------------
    def cap(self, start: int) -> int:
        """The largest budget a search from ``start`` may train."""
        return min(self.args.cap_epochs, start * 2 ** self.args.max_doublings)

    def arm_start(self, arm: Arm, js_chosen: int) -> int:
        """Search start of ``arm``: its own, or step 5's chosen budget in images seen (rungs)."""
        if not arm.rung:
            return min(self.start[arm.key], self.args.cap_epochs)
        js = next(a for a in self.arms if a.key == "js_mined")
        return max(1, round(js_chosen * self.images(js) / self.images(arm) / 2))

    def tune_runs(self, arm: Arm) -> int:
        """Runs of the held-out search of ``arm``."""
        grid = {"lr_wd": len(self.grid("lr")) + len(self.grid("wd")) - 1, "lr": len(self.grid("lr")),
                "ft": len(self.grid("ft"))}
        return grid.get(arm.tune, 0)

    def grid(self, which: str) -> List[float]:
        """--lr-grid, --wd-grid or --ft-lr-fractions as floats."""
        text = {"lr": self.args.lr_grid, "wd": self.args.wd_grid, "ft": self.args.ft_lr_fractions}[which]
        return [float(x) for x in text.split(",") if x.strip()]

    def tune_epochs(self, start: int) -> int:
        """Epochs of each tuning run of an arm that starts its search at ``start``."""
        return max(1, round(start * self.args.tune_frac))

    def arm_cost(self, arm: Arm, js_chosen: int, worst: bool) -> Dict[str, float]:
        """Seconds of each part of ``arm`` (expected: the search stops at its first doubling and the re-check keeps
        the choice; worst: it reaches the cap and the re-check switches)."""
        start = self.arm_start(arm, js_chosen)
        cap = self.cap(start)
        budgets = budgets_up_to(start, cap) if worst else budgets_up_to(start, cap)[:2]
        chosen = budgets[-1]
        n, tn, val, held = self.images(arm), self.images(arm, tune=True), self.limit(TEST, True), \
            self.limit(self.args.labeled) // 5
        if arm.tune == "ft":
            n, tn = self.limit(self.args.labeled), self.limit(self.args.labeled) - held
        c = arm.loss != "ce"
        cost = {"tune": self.tune_runs(arm) * self.run_s(tn, self.tune_epochs(start), held, c),
                "search": sum(self.run_s(n, e, val, c) for e in budgets),
                "recheck": 2 * self.run_s(tn, chosen, held, c) if arm.tune and not arm.rung else 0.0,
                "seeds": (arm.seeds - 1) * self.run_s(n, chosen, val, c)}
        if worst and arm.tune and not arm.rung:  # the switched setting from half the chosen budget to it
            cost["search"] += self.run_s(n, max(start, chosen // 2), val, c) + self.run_s(n, chosen, val, c)
        return cost

    def js_chosen(self, worst: bool) -> int:
        """Step 5's chosen budget in the expected (its second budget) / worst case (its cap)."""
        budgets = budgets_up_to(self.start["js_mined"], self.cap(self.start["js_mined"]))
        return budgets[-1] if worst else budgets[:2][-1]

    def caches(self, worst: bool) -> Dict[str, Tuple[int, int]]:
        """Soft-label cache families (teacher, list, seed) -> (views, images), the most epochs any reader trains."""
        fam: Dict[str, Tuple[int, int]] = {}
        js = self.js_chosen(worst)

        def need(name: str, views: int, images: int) -> None:
            fam[name] = (max(views, fam.get(name, (0, 0))[0]), images)

        for arm in self.arms:
            if arm.loss == "ce":
                continue
            start = self.arm_start(arm, js)
            budgets = budgets_up_to(start, self.cap(start))
            top = chosen = budgets[-1] if worst else budgets[:2][-1]
            lists = "L" if arm.tune == "ft" or not arm.k else f"L+k{arm.k}"
            seeds = self.seeds[:arm.seeds]
            data = self.limit(self.args.labeled) if lists == "L" else self.images(arm)
            tdata = data - self.limit(self.args.labeled) // 5
            for i, seed in enumerate(seeds):
                need(f"{arm.teacher}/{lists}/seed{seed}", top if i == 0 else chosen, data)
            if arm.tune:
                views = self.tune_epochs(start) if arm.rung else max(chosen, self.tune_epochs(start))
                need(f"{arm.teacher}/tune {lists}/seed{seeds[0]}", views, tdata)
        return fam

    def fixed(self) -> Dict[str, float]:
        """Seconds of what every plan runs once: data, teachers, mining, transfer."""
        full, pool = self.limit(FULL), self.pool()
        teach = self.args.strong_epochs * full / IPS["teacher"] + 2 * (EVAL_S["teacher"] + START_S)
        mines = {(a.teacher or "strong", a.k) for a in self.arms if a.k}
        transfer = 0.0
        if not getattr(self.args, "only", None) or "transfer" in parse_only(self.args.only):
            runs = 2 * len(self.seeds)
            transfer = runs * self.run_s(self.limit(DIGITS["train"]), self.args.transfer_epochs,
                                         self.limit(DIGITS["val"], True))
        return {"prepare": PREPARE_S, "teachers": teach, "mining": len(mines) * pool * MINE_S, "transfer": transfer}

    def totals(self) -> Dict[str, float]:
        """Expected and worst-case seconds of the whole plan."""
        out = {}
        for case, worst in (("expected", False), ("worst", True)):
            js = self.js_chosen(worst)
            arms_s = sum(sum(self.arm_cost(a, js, worst).values()) for a in self.arms)
            caches_s = sum(v * n / IPS["cache"] + CACHE_START_S for v, n in self.caches(worst).values())
            out[case] = arms_s + caches_s + sum(self.fixed().values())
        return out

    # ---- the table ---------------------------------------------------------------------------------------------
    def table(self) -> str:
        """The plan as markdown: per arm its data, seeds, start and budgets, expected and worst-case minutes; the
        caches, teachers, mining, transfer; the totals against the 6-hour target."""
        a = self.args
        rows = ["| arm | step | what | images/epoch | seeds | start | expected budgets | worst budgets | "
                "expected min | worst min |", "|" + "---|" * 10]
        for arm in self.arms:
            exp, wor = (self.arm_cost(arm, self.js_chosen(w), w) for w in (False, True))
            start, wstart = (self.arm_start(arm, self.js_chosen(w)) for w in (False, True))
            budgets = budgets_up_to(wstart, self.cap(wstart))
            rows.append(f"| {arm.key} | {arm.step} | {arm.name} | {self.images(arm):,} | {arm.seeds} | {start} | "
                        f"{','.join(map(str, budgets_up_to(start, self.cap(start))[:2]))} | "
                        f"{','.join(map(str, budgets))} | "
                        f"{sum(exp.values()) / 60:.1f} | {sum(wor.values()) / 60:.1f} |")
        caches = {w: self.caches(w) for w in (False, True)}
        cache_s = {w: sum(v * n / IPS["cache"] + CACHE_START_S for v, n in caches[w].values()) for w in caches}
        fixed = self.fixed()
        rows.append(f"| caches | - | {len(caches[False])} soft-label cache families (teacher, list, seed), top-"
                    f"{a.cache_topk} float16, grown to the most epochs a reader trains | - | - | - | - | - | "
                    f"{cache_s[False] / 60:.1f} | {cache_s[True] / 60:.1f} |")
        rows.append(f"| teachers | T | ResNet18 1 epoch (weak), then {a.strong_epochs - 1} more from it (strong), all "
                    f"{self.limit(FULL):,} labels | {self.limit(FULL):,} | 1 | - | - | - | "
                    f"{fixed['teachers'] / 60:.1f} | {fixed['teachers'] / 60:.1f} |")
        rows.append(f"| mining | M | top-k per class from {self.pool():,} pool images, one pass per (teacher, k) | "
                    f"{self.pool():,} | - | - | - | - | {fixed['mining'] / 60:.1f} | {fixed['mining'] / 60:.1f} |")
        if fixed["transfer"]:
            rows.append(f"| transfer | X | digits, from steps 1 and 6 at their chosen budgets, each seed | "
                        f"{self.limit(DIGITS['train']):,} | {len(self.seeds)} | {a.transfer_epochs} | - | - | "
                        f"{fixed['transfer'] / 60:.1f} | {fixed['transfer'] / 60:.1f} |")
        tot = self.totals()
        fits = "fits" if tot["expected"] <= 6 * 3600 else "does NOT fit"
        notes = [f"Total: expected {tot['expected'] / 60:.0f} min ({tot['expected'] / 3600:.1f} h: {fits} the "
                 f"6-hour target), worst case {tot['worst'] / 60:.0f} min ({tot['worst'] / 3600:.1f} h).",
                 f"Expected: every search stops at its first doubling (start -> 2 x start gains < {a.plateau:g} "
                 f"points) and every re-check keeps the tuned setting. Worst: every search runs to its cap "
                 f"(start x 2^{a.max_doublings}, at most {a.cap_epochs} epochs) and every re-check switches.",
                 f"Per arm: tuning ({self.tune_runs(self.arms[0])} runs for LR and WD at --tune-frac "
                 f"{a.tune_frac:g} of the start budget, on 80% of L), the search on seed 1, the re-check (2 runs "
                 f"at the chosen budget on 80% of L), the other seeds at the chosen budget.",
                 f"Cost model: student {IPS['ce']:.0f} img/s (CE) / {IPS['cached']:.0f} (from a cache), teacher "
                 f"training {IPS['teacher']:.0f} img/s, cache generation {IPS['cache']:.0f} img/s, mining "
                 f"{1000 * MINE_S:.1f} ms per pool image (benchmark/ladder/arms.py); the run's log rescales it by the "
                 f"speed it measures."]
        return "\n".join(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
