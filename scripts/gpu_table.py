"""Grade every assignment's fixtures (and the GPU-only ones) on CPU and CUDA and print one table
(issue 7's hardware check, for every assignment since issue 12).

    python scripts/gpu_table.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def verdict(cases: list[dict], device: str) -> str:
    ran = [c for c in cases if c["device"] == device and c["status"] != "skipped"]
    if not ran:
        return "-"
    passed = sum(1 for c in ran if c["status"] == "passed")
    return f"{passed}/{len(ran)}"


def main() -> None:
    paths = [p for folder in sorted((ROOT / "assignments").glob("*/fixtures")) for p in sorted(folder.iterdir())
             if p.suffix in (".ipynb", ".py")] + sorted((FIXTURES / "gpu").glob("*.py"))
    out = Path(tempfile.mkdtemp())
    print(f"{'fixture':<28} {'item':<20} {'cpu':>6} {'cuda':>6} {'score':>8}  {'s':>5}  first cuda failure")
    for path in paths:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "grader", str(path), "--device", "auto", "-o",
                                 str(out / "r.json"), "--quiet"], capture_output=True, text=True, cwd=ROOT)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            print(f"{path.name:<28} grader failed ({result.returncode}): {result.stderr.strip()[-200:]}")
            continue
        report = json.loads((out / "r.json").read_text())
        for name, cls in report["items"].items():
            failure = next((c["message"] for c in cls["cases"] if c["device"] == "cuda"
                            and c["status"] not in ("passed", "skipped", "unsupported")), "")
            causes = ",".join(c["cause"] for c in cls.get("likely_causes", []))
            status = cls["status"] if cls["status"] != "graded" else ""
            if cls["status"] == "missing":
                continue
            print(f"{path.name:<28} {name:<20} {verdict(cls['cases'], 'cpu'):>6} {verdict(cls['cases'], 'cuda'):>6} "
                  f"{cls['score']:>8.2f}  {seconds:>5.1f}  {status}{failure[:70]}{' [' + causes + ']' if causes else ''}")


if __name__ == "__main__":
    main()
