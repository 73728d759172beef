"""The whole fault suite: ``python -m bench.faults [--quick]``, one summary table at the end.

Runs ``kill_monitor``, ``broker_outage``, ``fuzz``, ``spool_disk``, ``overload`` and
``cluster_kill`` one after another (each starts and stops its own broker or 3-node cluster), then prints one row per fault and writes
``bench/out/faults_summary.json``. Exit code 1 when any check failed. ``--quick`` uses the
development sizes (20k samples and 3 kills, 10 s outages, 1,000 fuzzed messages).
"""

from __future__ import annotations

import argparse
import sys
import traceback

from bench.common import print_table, save_json
from bench.faults import broker_outage, cluster_kill, fuzz, kill_monitor, overload, spool_disk

QUICK = {
    "kill_monitor": ["--samples", "20000", "--kills", "3"],
    "broker_outage": ["--outage-s", "10"],
    "fuzz": ["--messages", "1000", "--huge", "2"],
    "spool_disk": ["--outage-s", "10"],
    "overload": ["--freezes", "1"],
    "cluster_kill": ["--after-s", "15"],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=None, help="comma-separated subset")
    args = p.parse_args(argv)
    scripts = {"kill_monitor": kill_monitor, "broker_outage": broker_outage, "fuzz": fuzz,
               "spool_disk": spool_disk, "overload": overload, "cluster_kill": cluster_kill}
    chosen = args.only.split(",") if args.only else list(scripts)
    rows, results = [], {}
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        try:
            res = scripts[name].main(QUICK[name] if args.quick else [])
        except Exception as exc:  # one fault's crash must not hide the others' figures
            traceback.print_exc()
            res = {"name": name, "passed": False, "summary": f"crashed: {exc!r}", "figures": {}, "checks": []}
        results[name] = res
        failed = [c["check"] for c in res.get("checks", []) if not c["ok"]]
        rows.append([name, "PASS" if res["passed"] else "FAIL", res.get("summary", ""),
                     res.get("figures", {}).get("wall_s", ""),
                     "; ".join(failed) if failed else ""])
    print_table("Fault suite", ["fault", "result", "figures", "wall s", "failed checks"], rows)
    save_json("faults_summary", {"results": results, "rows": rows})
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
