"""The converged ladder's plateau rule and doubling search, with no training in them (tests feed synthetic results).

Rule: the search trains B0, 2 B0, 4 B0, ... epochs (each a full run with its own cosine schedule) and stops at the
first doubling that gains less than ``plateau`` points of test top-1; the chosen budget is the larger budget of that
pair, the last one trained: the arm was trained until a doubling stopped paying. Further doublings are taken to gain
less still (diminishing returns per doubling, which the rule itself presumes; every gain is reported). Choosing the
larger budget makes the search start at half the expected plateau: for the same chosen budget B it trains B/2 + B
epochs where "stop when doubling B gains too little" would train B + 2B, and it asks for flatness on the way to B.
It stops unplateaued when the next budget would pass ``cap`` epochs and then chooses the largest budget it trained,
saying so. The search runs on one seed; the other seeds train at the chosen budget only, and their spread is
reported beside the gain that stopped the search.
"""
from typing import Any, Callable, Dict, List, Sequence


def budgets_up_to(start: int, cap: int) -> List[int]:
    """Every budget a search from ``start`` may train: start, 2 start, ... up to ``cap`` (start clamped to cap)."""
    epochs, out = max(1, min(int(start), int(cap))), []
    while epochs <= cap:
        out.append(epochs)
        epochs *= 2
    return out


def search(train: Callable[[int], float], start: int, cap: int, plateau: float) -> Dict[str, Any]:
    """The doubling search (module docstring). ``train(epochs)`` returns test top-1 as a fraction.

    Returns ``budgets`` (each ``epochs``, ``top1``, and from the second on ``gain`` in points), ``chosen``,
    ``plateaued`` and ``stop`` (why it stopped, in words)."""
    budgets: List[Dict[str, Any]] = []
    for epochs in budgets_up_to(start, cap):
        budgets.append({"epochs": epochs, "top1": float(train(epochs))})
        if len(budgets) > 1:
            gain = 100.0 * (budgets[-1]["top1"] - budgets[-2]["top1"])
            budgets[-1]["gain"] = round(gain, 3)
            if gain < plateau:
                return {"budgets": budgets, "chosen": epochs, "plateaued": True,
                        "stop": f"plateau: {budgets[-2]['epochs']} -> {epochs} epochs gained {gain:+.2f} < "
                                f"{plateau:g} points"}
    last = budgets[-1]
    rise = f"; still rising ({last['gain']:+.2f} at the last doubling)" if "gain" in last else \
        "; no doubling fitted under the cap"
    return {"budgets": budgets, "chosen": last["epochs"], "plateaued": False,
            "stop": f"cap, not converged: {2 * last['epochs']} epochs would pass the cap of {cap} epochs{rise}"}


def stats(values: Sequence[float]) -> Dict[str, Any]:
    """Mean, spread (max - min) and count of top-1 fractions (spread 0 for one value)."""
    vals = [float(v) for v in values]
    if not vals:
        return {"mean": None, "spread": None, "n": 0, "values": []}
    return {"mean": sum(vals) / len(vals), "spread": max(vals) - min(vals), "n": len(vals), "values": vals}


def verdict(arm: Dict[str, Any], ref: Dict[str, Any], min_gain: float = 3.0, min_ratio: float = 3.0) -> Dict[str, Any]:
    """An arm against the reference (both ``stats`` dicts plus ``plateaued``): the gain in points, the largest seed
    spread of the two in points, their ratio, and whether the goal holds (gain >= ``min_gain`` points, >=
    ``min_ratio`` x the largest spread, both arms plateaued)."""
    gain = 100.0 * (arm["mean"] - ref["mean"])
    spread = 100.0 * max(arm["spread"], ref["spread"])
    ratio = gain / spread if spread > 0 else None
    met = bool(arm.get("plateaued")) and bool(ref.get("plateaued")) and gain >= min_gain and \
        (ratio is None or ratio >= min_ratio) and min(arm["n"], ref["n"]) >= 2
    return {"gain": round(gain, 3), "largest_spread": round(spread, 3), "ratio": None if ratio is None else
            round(ratio, 2), "goal_met": met}
