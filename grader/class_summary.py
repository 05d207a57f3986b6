"""The whole class at a glance, as data: what `class_report.html` draws.

`summarize(reports, ids)` reads report dicts only (nothing is graded or re-run), in the order
given, so the shards of a batch merged in the batch's order summarize exactly as the batch did.
It returns plain JSON-able data:

- `items`: per graded item, its score distribution (10 bins over its points), how many
  submissions have it graded, missing or failing to load, and the pass rate of each case group
  (passed / counted cases over the whole class: which kinds of input break the item);
- `causes`: the likely causes the reports name, most common first, with example submissions;
- `outliers`: submissions with timed-out cases, violations, load failures or grader failures;
- `durations`: the time each submission took, binned;
- `similar`: per item, groups of submissions whose code is the same after normalization or a
  near copy (grader/similarity.py), with the sources for a side-by-side view.
"""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from .render import _num

COUNTED = ("passed", "failed", "error", "timeout", "unsupported")
BINS = 10
EXAMPLES = 5
SIDE_BY_SIDE = 4     # pairs shown side by side per similar group


def items_of(report: dict) -> dict:
    """The graded items of a report: `items` (schema 2) or `classes` (schema 1)."""
    return report.get("items", report.get("classes", {}))


def summarize(reports: list[dict], ids: list[str]) -> dict:
    from .batch import GRADER_FAILURE

    first = reports[0] if reports else {"assignment": {"id": ""}, "max_score": 0}
    names: list[str] = []
    for report in reports:
        names.extend(n for n in items_of(report) if n not in names)
    totals = [r["score"] for r in reports]
    return {
        "assignment": {"id": first["assignment"]["id"], "title": first["assignment"].get("title") or
                       first["assignment"]["id"]},
        "submissions": len(reports),
        "max_score": first["max_score"],
        "total": _distribution(totals, first["max_score"]),
        "items": [_item(name, reports) for name in names],
        "causes": _causes(reports, ids),
        "outliers": _outliers(reports, ids, GRADER_FAILURE),
        "durations": _durations(reports, ids),
        "similar": _similar(names, reports, ids),
    }


def _distribution(scores: list[float], top: float) -> dict:
    counts = [0] * BINS
    for score in scores:
        counts[min(BINS - 1, int(BINS * score / top)) if top > 0 else 0] += 1
    labels = [_num(top * i / BINS) for i in range(BINS)]
    return {"counts": counts, "labels": labels, "max": top,
            "mean": round(statistics.fmean(scores), 2) if scores else None,
            "median": round(statistics.median(scores), 2) if scores else None,
            "full_marks": sum(1 for s in scores if top > 0 and s >= top - 1e-9)}


def _item(name: str, reports: list[dict]) -> dict:
    present = [items_of(r)[name] for r in reports if name in items_of(r)]
    top = max((i["max_score"] for i in present), default=0)
    statuses = Counter(i["status"] for i in present)
    groups: dict[str, dict] = {}
    for item in present:
        for group in item.get("groups", []):
            entry = groups.setdefault(group["name"], {"name": group["name"], "hidden": group.get("hidden", False),
                                                      "passed": 0, "counted": 0, "unsupported": 0,
                                                      "submissions": 0, "all_passed": 0})
            counted = sum(group.get(s, 0) for s in COUNTED)
            if counted == 0:
                continue
            entry["passed"] += group["passed"]
            entry["counted"] += counted
            entry["unsupported"] += group.get("unsupported", 0)
            entry["submissions"] += 1
            entry["all_passed"] += group["passed"] == counted
    for entry in groups.values():
        entry["rate"] = round(entry["passed"] / entry["counted"], 4) if entry["counted"] else None
    return {"name": name, "max_score": top, "statuses": dict(sorted(statuses.items())),
            "scores": _distribution([i["score"] for i in present], top), "groups": list(groups.values())}


def _causes(reports: list[dict], ids: list[str]) -> list[dict]:
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for identity, report in zip(ids, reports):
        for name, item in items_of(report).items():
            for cause in {c["cause"] for c in item.get("likely_causes", [])}:
                found[(name, cause)].append(identity)
    rows = [{"item": name, "cause": cause, "count": len(who), "examples": who[:EXAMPLES]}
            for (name, cause), who in found.items()]
    rows.sort(key=lambda r: (-r["count"], r["item"], r["cause"]))
    return rows


def _outliers(reports: list[dict], ids: list[str], grader_failure: str) -> dict:
    kinds: dict[str, list[dict]] = {"timeouts": [], "violations": [], "load_failures": [], "grader_failures": []}
    for identity, report in zip(ids, reports):
        fatal = str(report["load"].get("fatal") or "")
        if fatal.startswith(grader_failure):
            kinds["grader_failures"].append({"id": identity, "detail": fatal})
            continue
        failed_items = [n for n, i in items_of(report).items() if i["status"] == "load_error"]
        if fatal or failed_items:
            kinds["load_failures"].append({"id": identity, "detail": fatal or (
                f"{', '.join(failed_items)}: " + (items_of(report)[failed_items[0]].get("message") or "load error"))})
        timeouts = {n: sum(1 for c in i.get("cases", []) if c["status"] == "timeout")
                    for n, i in items_of(report).items()}
        timeouts = {n: k for n, k in timeouts.items() if k}
        if timeouts:
            kinds["timeouts"].append({"id": identity, "detail": "; ".join(
                f"{n}: {k} case{'s' if k != 1 else ''} timed out" for n, k in timeouts.items())})
        violations = [(n, v) for n, i in items_of(report).items() for v in i.get("violations", [])]
        if violations:
            kinds["violations"].append({"id": identity, "detail": "; ".join(
                f"{n}: {v['operator']} ({v['source']})" for n, v in violations[:4])})
    return kinds


def _durations(reports: list[dict], ids: list[str]) -> dict:
    values = [float(r.get("duration_s", 0.0)) for r in reports]
    top = max(values, default=0.0)
    edges = _nice_edges(top)
    counts = [0] * (len(edges) - 1)
    for value in values:
        counts[next((i for i in range(len(counts)) if value < edges[i + 1]), len(counts) - 1)] += 1
    slowest = sorted(zip(values, ids), key=lambda p: (-p[0], p[1]))[:10]
    return {"counts": counts, "labels": [_num(e) for e in edges[:-1]],
            "ranges": [f"{_num(e)} to {_num(f)} s" for e, f in zip(edges, edges[1:])], "total_s": round(sum(values), 1),
            "median_s": round(statistics.median(values), 2) if values else None,
            "slowest": [{"id": i, "seconds": round(v, 2)} for v, i in slowest]}


# Seconds per submission spread over orders of magnitude (a hang costs minutes, a typo none):
# bins on a roughly logarithmic ladder, as many as reach the slowest.
LADDER = (0, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


def _nice_edges(top: float) -> list[float]:
    edges = [e for e in LADDER if e <= top] + [next((e for e in LADDER if e > top), top + 1)]
    return edges if len(edges) > 2 else [0, 0.5, 1]


def _similar(names: list[str], reports: list[dict], ids: list[str]) -> list[dict]:
    from .similarity import VERSION, Member, similar_groups

    found = []
    for name in names:
        members, sources = [], {}
        for identity, report in zip(ids, reports):
            data = items_of(report).get(name, {}).get("similarity")
            if data and data.get("version") == VERSION:
                members.append(Member(identity, data["exact"], tuple(data["signature"])))
                sources[identity] = data["source"]
        exact_of = {m.id: m.exact for m in members}
        for group in similar_groups(name, members):
            # One pair per two versions of the code (near copies, closest first), then for each
            # version copied exactly, two of its copies: what differs is worth a look first.
            seen, shown = set(), []
            for a, b, score in group.pairs:
                versions = frozenset((exact_of[a], exact_of[b]))
                if versions not in seen:
                    seen.add(versions)
                    shown.append((a, b, score))
            copies: dict[str, list[str]] = {}
            for identity in group.members:
                copies.setdefault(exact_of[identity], []).append(identity)
            shown += [(ids[0], ids[1], 1.0) for ids in copies.values() if len(ids) > 1]
            near = [score for _, _, score in group.pairs]
            found.append({"item": name, "members": list(group.members), "exact": group.exact,
                          "versions": len(copies), "copied": sum(len(ids) for ids in copies.values() if len(ids) > 1),
                          "near": [min(near), max(near)] if near else None,
                          "share": round(len(group.members) / max(1, len(members)), 3),
                          "pairs": [{"a": a, "b": b, "similarity": s} for a, b, s in group.pairs],
                          "side_by_side": [{"a": a, "b": b, "similarity": s, "source_a": sources[a],
                                            "source_b": sources[b]} for a, b, s in shown[:SIDE_BY_SIDE]]})
    return found

