"""Prints the markdown table of medians for one bench/run.sh results folder."""
import json
import re
import statistics
import sys
from pathlib import Path


def load(folder, scenario):
    runs = []
    # "<scenario>-<run>.json" exactly: "conns" must not pick up "conns-10k"
    # (nor "says" pick up "says+disk").
    pattern = re.compile(re.escape(scenario) + r"-\d+\.json")
    for f in sorted(Path(folder).glob("*.json")):
        if not pattern.fullmatch(f.name):
            continue
        try:
            runs.append(json.loads(f.read_text()))
        except ValueError:
            print(f"warning: {f} is not JSON (run failed?)", file=sys.stderr)
    return runs


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, unit="", digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        v = round(v) if digits == 0 else round(v, digits)
    return f"{v}{unit}"


def fanout_row(name, runs):
    r = [x["results"] for x in runs]
    lat = [x.get("latency") or {} for x in r]
    # Older reports have no ok round trip or says/s: "–".
    ok = [x.get("ok_latency") or {} for x in r]
    offered = med([x["target_send_rate_per_s"] * x["subscribers"] / max(x["rooms"], 1) for x in r])
    return (
        f"| {name} | {len(runs)} | {fmt(offered, '/s', 0)} | "
        f"{fmt(med([x['deliveries_per_s'] for x in r]), '/s', 0)} | "
        f"{fmt(med([x['expected_deliveries'] and x['deliveries'] / x['expected_deliveries'] * 100 for x in r]), ' %')} | "
        f"{fmt(med([x['lost'] for x in r]))} | "
        f"{fmt(med([l.get('p50_ms') for l in lat]), ' ms', 2)} | "
        f"{fmt(med([l.get('p99_ms') for l in lat]), ' ms', 2)} | "
        f"{fmt(med([l.get('max_ms') for l in lat]), ' ms', 1)} | "
        f"{fmt(med([x.get('says_per_s') for x in r]), '/s', 0)} | "
        f"{fmt(med([o.get('p50_ms') for o in ok]), ' ms', 2)} | "
        f"{fmt(med([o.get('p99_ms') for o in ok]), ' ms', 2)} | "
        f"{fmt(med([x.get('server_cpu_us_per_delivery') for x in r]), ' µs', 2)} | "
        f"{fmt(med([y['cpu'].get('server_cores') for y in runs]), '', 2)} / "
        f"{fmt(med([y['cpu'].get('tester_cores') for y in runs]), '', 2)} | "
        f"{', '.join(sorted({y['outcome'] for y in runs}))} |"
    )


def main():
    folder, scenarios = sys.argv[1], sys.argv[2:]
    # "@N" (bench/cluster.sh: N nodes) and "+disk"/"+tls" name variants.
    fanouts = [s for s in scenarios if s.startswith("fanout") or s.split("+")[0].split("@")[0] in ("rooms", "says")]
    if fanouts:
        print("| scenario | runs | offered deliveries | delivered | of expected | lost | p50 | p99 | max | says acked | ok p50 | ok p99 | server CPU / delivery | cores server / tester | outcome |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in fanouts:
            runs = load(folder, s)
            if runs:
                print(fanout_row(s, runs))
        print()
        for s in fanouts:
            sizes = [int(f.read_text()) for f in sorted(Path(folder).glob(f"{s}-*.store-bytes"))]
            if sizes:
                print(f"{s}: store file after the run (--data-dir/natter.redb): "
                      f"median {fmt(med(sizes) / 1024, ' KiB', 0)} over {len(sizes)} runs")
        print()
    conns = [s for s in scenarios if s.startswith("conns")]
    if conns:
        print("| scenario | runs | connected | refused | failed | connect p50 | connect p99 | connects/s | server bytes / connection | outcome |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for name in conns:
        runs = load(folder, name)
        if runs:
            r = [x["results"] for x in runs]
            ct = [x["connections"]["connect_time"] for x in r]
            print(
                f"| {name} | {len(runs)} | {fmt(med([x['connections']['connected'] for x in r]))} | "
                f"{fmt(med([x['connections']['refused_503'] for x in r]))} | "
                f"{fmt(med([x['connections']['failed'] for x in r]))} | "
                f"{fmt(med([c.get('p50_ms') for c in ct]), ' ms', 1)} | "
                f"{fmt(med([c.get('p99_ms') for c in ct]), ' ms', 1)} | "
                f"{fmt(med([x.get('connect_rate_per_s') for x in r]), '', 0)} | "
                f"{fmt(med([x.get('server_bytes_per_connection') for x in r]), ' B', 0)} | "
                f"{', '.join(sorted({y['outcome'] for y in runs}))} |"
            )
    if conns:
        print()
    if "ramp" in scenarios:
        runs = load(folder, "ramp")
        if runs:
            r = [x["results"] for x in runs]
            print("| scenario | runs | largest step under limit | stop reason (run 1) | outcome |")
            print("|---|---|---|---|---|")
            print(
                f"| ramp | {len(runs)} | {fmt(med([x.get('largest_step_under_limit') for x in r]))} | "
                f"{r[0].get('stop_reason')} | {', '.join(sorted({y['outcome'] for y in runs}))} |"
            )


main()
