#!/usr/bin/env python3
"""Peers on the same files: pandas, Polars and DuckDB from PyPI reading the synthetic
nights that benches/scoring.rs wrote, scoring them with the shipped ICP model
(pipelines/scoring/icp.toml: category and band components, tiers) and diffing the two
nights (search vendor, monthly visits, ICP tier) by domain.

    cargo bench --bench scoring -- 1000000 --keep /tmp/nights
    python3 benches/peers.py /tmp/nights [--runs 3]        # pip install pandas polars duckdb

Prints one JSON line: per engine, the median seconds of read + score (night 2) and of
the diff (both nights read, scored and compared). The peers compute the ICP score only
— no conflicts, signals, provenance or case studies — so they do less than the engine's
full recompute; the comparison says what the same files cost other engines.
"""
import argparse
import json
import os
import statistics
import sys
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def model():
    with open(os.path.join(ROOT, "pipelines", "scoring", "icp.toml"), "rb") as f:
        return tomllib.load(f)


def sql_score(m):
    """The ICP score and tier as SQL over columns vertical, sw_monthly_visits, tech_spend, partner_tech."""
    parts = []
    for c in m["components"]:
        column = c["column"]
        if c["kind"] == "category":
            cases = " ".join(f"WHEN {column} = '{k}' THEN {v}" for k, v in c["points"].items())
            parts.append(f"(CASE WHEN {column} IS NULL THEN {c.get('missing', 0)} {cases} ELSE {c.get('other', 0)} END)")
        else:
            cases = " ".join(f"WHEN {column} >= {b['min']} THEN {b['points']}" for b in c["bands"])
            parts.append(f"(CASE {cases} ELSE 0 END)")
    score = " + ".join(parts)
    tiers = " ".join(f"WHEN score >= {t['min_score']} THEN {t['tier']}" for t in m["tiers"])
    return score, f"CASE {tiers} END"


def files(folder, night):
    return {t: os.path.join(folder, night, f"{t}.parquet") for t in ("company", "tech_spend", "traffic")}


def run_duckdb(folder, m):
    import duckdb
    score, tier = sql_score(m)
    con = duckdb.connect()

    def scored(night):
        f = files(folder, night)
        return f"""
            SELECT domain, score, {tier} AS tier, current_search, sw_monthly_visits FROM (
              SELECT *, {score} AS score FROM (
                SELECT b.domain, coalesce(b.vertical, c.vertical) AS vertical,
                       coalesce(b.partner_tech, s.partner_tech_detected) AS partner_tech,
                       s.tech_spend, s.current_search, t.monthly_visits AS sw_monthly_visits
                FROM read_csv('{os.path.join(folder, 'book.csv')}', all_varchar = true) b
                LEFT JOIN read_parquet('{f['company']}') c USING (domain)
                LEFT JOIN read_parquet('{f['tech_spend']}') s USING (domain)
                LEFT JOIN read_parquet('{f['traffic']}') t USING (domain)
                WHERE NOT coalesce(s.runs_algolia, false)))"""

    def score_night():
        return con.execute(f"SELECT count(*), sum(score) FROM ({scored('2')})").fetchone()

    def diff():
        return con.execute(f"""
            SELECT count(*) FROM ({scored('1')}) a JOIN ({scored('2')}) b USING (domain)
            WHERE a.tier IS DISTINCT FROM b.tier OR a.current_search IS DISTINCT FROM b.current_search
               OR a.sw_monthly_visits IS DISTINCT FROM b.sw_monthly_visits""").fetchone()

    return score_night, diff


def frame_score(df, m, lib):
    """The ICP score and tier over a pandas or Polars frame."""
    if lib == "polars":
        import polars as pl
        total = pl.lit(0)
        for c in m["components"]:
            col = pl.col(c["column"])
            if c["kind"] == "category":
                mapped = col.replace_strict(c["points"], default=c.get("other", 0), return_dtype=pl.Int64)
                total = total + pl.when(col.is_null()).then(c.get("missing", 0)).otherwise(mapped)
            else:
                expr = pl.lit(0)
                for b in reversed(c["bands"]):
                    expr = pl.when(col >= b["min"]).then(b["points"]).otherwise(expr)
                total = total + expr
        df = df.with_columns(total.alias("score"))
        tier = pl.lit(None, dtype=pl.Int64)
        for t in reversed(m["tiers"]):
            tier = pl.when(pl.col("score") >= t["min_score"]).then(t["tier"]).otherwise(tier)
        return df.with_columns(tier.alias("tier"))
    import numpy as np
    total = np.zeros(len(df), dtype=np.int64)
    for c in m["components"]:
        col = df[c["column"]]
        if c["kind"] == "category":
            pts = col.map(c["points"]).fillna(c.get("other", 0))
            pts[col.isna()] = c.get("missing", 0)
            total += pts.to_numpy(dtype=np.int64)
        else:
            values = col.to_numpy(dtype=float, na_value=np.nan)
            conditions = [values >= b["min"] for b in c["bands"]]
            total += np.select(conditions, [b["points"] for b in c["bands"]], 0)
    df = df.assign(score=total)
    df["tier"] = np.select([total >= t["min_score"] for t in m["tiers"]], [t["tier"] for t in m["tiers"]], 0)
    return df


def run_frames(folder, m, lib):
    book_path = os.path.join(folder, "book.csv")

    def scored(night):
        f = files(folder, night)
        if lib == "polars":
            import polars as pl
            book = pl.read_csv(book_path, infer_schema=False)
            company = pl.read_parquet(f["company"], columns=["domain", "vertical"])
            spend = pl.read_parquet(f["tech_spend"], columns=["domain", "tech_spend", "current_search",
                                                            "partner_tech_detected", "runs_algolia"])
            traffic = pl.read_parquet(f["traffic"], columns=["domain", "monthly_visits"])
            df = (book.join(company, on="domain", how="left", suffix="_bw")
                  .join(spend, on="domain", how="left").join(traffic, on="domain", how="left")
                  .filter(~pl.col("runs_algolia").fill_null(False))
                  .with_columns(pl.coalesce("vertical", "vertical_bw").alias("vertical"),
                                pl.coalesce("partner_tech", "partner_tech_detected").alias("partner_tech"),
                                pl.col("monthly_visits").alias("sw_monthly_visits")))
            return frame_score(df, m, lib)
        import pandas as pd
        book = pd.read_csv(book_path, dtype=str, keep_default_na=False).replace("", None)
        company = pd.read_parquet(f["company"], columns=["domain", "vertical"])
        spend = pd.read_parquet(f["tech_spend"], columns=["domain", "tech_spend", "current_search",
                                                        "partner_tech_detected", "runs_algolia"])
        traffic = pd.read_parquet(f["traffic"], columns=["domain", "monthly_visits"])
        df = (book.merge(company, on="domain", how="left", suffixes=("", "_bw"))
              .merge(spend, on="domain", how="left").merge(traffic, on="domain", how="left"))
        df = df[~df["runs_algolia"].fillna(False).astype(bool)]
        df["vertical"] = df["vertical"].fillna(df["vertical_bw"])
        df["partner_tech"] = df["partner_tech"].fillna(df["partner_tech_detected"])
        df["sw_monthly_visits"] = df["monthly_visits"]
        return frame_score(df, m, lib)

    def score_night():
        return len(scored("2"))

    def diff():
        cols = ["domain", "tier", "current_search", "sw_monthly_visits"]
        a, b = scored("1"), scored("2")
        if lib == "polars":
            import polars as pl
            j = a.select(cols).join(b.select(cols), on="domain", suffix="_2")
            return j.filter(pl.any_horizontal(pl.col(c).ne_missing(pl.col(c + "_2")) for c in cols[1:])).height
        j = a[cols].merge(b[cols], on="domain", suffixes=("", "_2"))
        changed = False
        for c in cols[1:]:
            x, y = j[c], j[c + "_2"]
            changed = changed | ~((x == y) | (x.isna() & y.isna()))
        return int(changed.sum())

    return score_night, diff


def timed(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    m = model()
    out = {}
    for engine in ("polars", "duckdb", "pandas"):
        try:
            __import__(engine)
        except ImportError:
            out[engine] = {"missing": f"pip install {engine}"}
            continue
        score_night, diff = run_duckdb(args.folder, m) if engine == "duckdb" else run_frames(args.folder, m, engine)
        out[engine] = {"read_score_s": timed(score_night, args.runs), "diff_s": timed(diff, args.runs)}
        print(f"{engine}: {out[engine]}", file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
