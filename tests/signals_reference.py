"""An independent recomputation of the signal layer from a snapshot's Parquet files.

Reads the rules from pipelines/signals.toml (tomllib) and the module tables with
pandas, recomputes per target the inputs the rules read (revenue growth, the dead
search vendor, the trigger events of the window, the executive change), every
signal's points and level, the priority, the size band, the region and the matched
case studies, and compares them with the targets table row by row.

usage: python3 signals_reference.py SNAPSHOT_FOLDER SIGNALS_TOML CASE_STUDIES_CSV
Prints a JSON summary; exits 1 on any disagreement.
"""
import json
import sys
import tomllib
from datetime import date, timedelta

import pandas as pd

folder, rules_path, studies_path = sys.argv[1:4]
rules = tomllib.load(open(rules_path, "rb"))


def table(name, columns=None):
    return pd.read_parquet(f"{folder}/{name}.parquet", columns=columns)


targets = table("targets")
snapshot = date.fromisoformat(targets["snapshot_id"].iloc[0])
window_start = snapshot - timedelta(days=rules["window_days"])

# Inputs from the module tables.
history = table("financial_history").dropna(subset=["revenue"])
growth = {}
for domain, rows in history.groupby("domain"):
    rows = rows.sort_values("fiscal_year_end", ascending=False)
    if len(rows) >= 2 and rows["revenue"].iloc[1] > 0:
        growth[domain] = rows["revenue"].iloc[0] / rows["revenue"].iloc[1] - 1.0

stack = table("tech_stack")
dead = stack[stack["is_search_vendor"] & ~stack["live"]]
dead_vendor = set(dead["domain"])

events = table("trigger_events")
events = events[pd.to_datetime(events["published"]).dt.date >= window_start]
trigger_count = events.groupby("domain").size().to_dict()
exec_change = set(events[events["event_type"] == "new_executive"]["domain"])

fetched = {
    "tech_fetched_at": set(table("tech_spend")["domain"]),
    "traffic_fetched_at": set(table("traffic")["domain"]),
    "hiring_fetched_at": set(table("hiring")["domain"]),
    "news_fetched_at": set(table("fetches").query("module == 'm12'")["domain"]),
}


def value(row, column):
    """What the rules read: a targets column, or an input recomputed above."""
    domain = row["domain"]
    if column in fetched:
        return True if domain in fetched[column] else None
    if column == "revenue_growth":
        return growth.get(domain)
    if column == "dead_search_vendor":
        return "dead" if domain in dead_vendor else None
    if column == "trigger_events_recent":
        return trigger_count.get(domain)
    if column == "exec_change_on":
        return "changed" if domain in exec_change else None
    v = row[column]
    return None if v is None or (isinstance(v, float) and pd.isna(v)) else v


def fires(row, rule):
    """The points a rule gives the row (0: it does not fire)."""
    if any(value(row, c) is not None for c in rule.get("unless", [])):
        return 0
    v = value(row, rule["column"])
    if "bands" in rule:
        if v is None:
            return 0
        for band in rule["bands"]:
            if float(v) >= band["min"]:
                return band["points"]
        return 0
    if "one_of" in rule:
        names = {n.lower() for n in rules["lists"][rule["one_of"]]}
        return rule["points"] if v is not None and str(v).lower() in names else 0
    if rule.get("present"):
        return rule["points"] if v is not None else 0
    if rule.get("missing"):
        return rule["points"] if v is None and value(row, rule["guard"]) is not None else 0
    raise ValueError(f"a rule without a test: {rule}")


def level_of(total, levels):
    for level in levels:
        if total >= level["min_points"]:
            return level["name"]
    return levels[-1]["name"]


def size_band(row):
    revenue, visits = value(row, "revenue"), value(row, "sw_monthly_visits")
    if revenue is None and visits is None:
        return None
    for band in rules["size_bands"]:
        if (revenue is not None and revenue >= band["min_revenue"]) or (visits is not None and visits >= band["min_visits"]):
            return band["name"]
    return None


def region(row):
    country = value(row, "country")
    for name, countries in sorted(rules["regions"].items()):
        if country is not None and country.upper() in {c.upper() for c in countries}:
            return name
    return None


# keep_default_na=False: the region "NA" is North America, not a missing value.
studies = pd.read_csv(studies_path, dtype=str, keep_default_na=False)
weights = rules["case_studies"]["weights"]


def best_studies(row, band, reg):
    key = {"vertical": value(row, "vertical"), "partner_tech": value(row, "partner_tech"), "region": reg,
           "country": value(row, "country"), "size_band": band}
    scored = []
    for position, study in enumerate(studies.itertuples(index=False)):
        score = sum(w for field, w in weights.items()
                    if key[field] is not None and str(key[field]).lower() == getattr(study, field).lower())
        if score > 0:
            scored.append((-score, position, study.id))
    scored.sort()
    return [s[2] for s in scored[: rules["case_studies"]["per_target"]]]


mismatches = []
levels_seen = {}
for row in targets.to_dict("records"):
    expected = {}
    priority = rules["priority"]["tier_points"].get(row["icp_tier_name"], 0)
    for signal in rules["signals"]:
        total = sum(fires(row, rule) for rule in signal["rules"])
        known = any(value(row, c) is not None for c in signal["known_when"])
        level = level_of(total, signal["levels"]) if known else "unknown"
        expected[f"{signal['name']}_points"] = total
        expected[f"{signal['name']}_signal"] = level
        levels_seen.setdefault(signal["name"], {}).setdefault(level, 0)
        levels_seen[signal["name"]][level] += 1
        priority += rules["priority"]["level_points"][level]
    expected["priority_points"] = priority
    expected["priority"] = level_of(priority, rules["priority"]["levels"])
    expected["size_band"] = size_band(row)
    expected["region"] = region(row)
    got_studies = [s["id"] for s in row["case_studies"]] if row["case_studies"] is not None else []
    want_studies = best_studies(row, expected["size_band"], expected["region"])
    for column, want in expected.items():
        got = row[column]
        got = None if got is None or (isinstance(got, float) and pd.isna(got)) else got
        if got != want:
            mismatches.append({"domain": row["domain"], "column": column, "engine": got, "reference": want})
    if got_studies != want_studies:
        mismatches.append({"domain": row["domain"], "column": "case_studies", "engine": got_studies, "reference": want_studies})
    for signal in rules["signals"]:
        if len(row[f"{signal['name']}_reasons"]) == 0:
            mismatches.append({"domain": row["domain"], "column": f"{signal['name']}_reasons", "engine": [], "reference": "a reason"})

print(json.dumps({"rows": len(targets), "mismatches": mismatches[:20], "mismatched": len(mismatches), "levels": levels_seen}, default=str))
sys.exit(1 if mismatches else 0)
