"""Goal lines for bench/run-all: each bench prints one `BENCH-RESULT {json}` line per goal it
measures (beside its own table), so a summary can be made of every bench's output, even of
a bench that ran inside the real-KVM lane."""
import json


def report(measure, unit, skvm, peers, better="lower", ratio_goal=None, value_goal=None, note=""):
    """skvm's value against the best of `peers` ({name: value}; lower or higher is better).

    ratio_goal: skvm / best peer must be ≤ it (lower is better) or ≥ it (higher is better);
    value_goal: skvm's own value must be ≤ it (or ≥ it). Either or both."""
    lower = better == "lower"
    peers = {name: value for name, value in peers.items() if value is not None and value == value and value > 0}
    best = (min if lower else max)(peers, key=peers.get) if peers else None
    ratio = skvm / peers[best] if best and skvm is not None else None
    met = skvm is not None
    goals = []
    if ratio_goal is not None:
        goals.append(f"{'≤' if lower else '≥'} {ratio_goal:g}×")
        met = met and ratio is not None and (ratio <= ratio_goal if lower else ratio >= ratio_goal)
    if value_goal is not None:
        goals.append(f"{'≤' if lower else '≥'} {value_goal:g} {unit}")
        met = met and (skvm <= value_goal if lower else skvm >= value_goal)
    print("BENCH-RESULT " + json.dumps({
        "measure": measure, "unit": unit, "skvm": skvm, "peer": best, "peer_value": peers.get(best),
        "ratio": ratio, "goal": ", ".join(goals) or "—", "met": met if goals else None, "note": note,
    }), flush=True)
