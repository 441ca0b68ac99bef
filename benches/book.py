#!/usr/bin/env python3
"""Writes a targets CSV of N synthetic domains (same columns as data/seed/targets.csv),
for whole runs at scale against the embedded simulator:

    python3 benches/book.py 100000 /tmp/book-100k.csv
    partnerforge run --targets /tmp/book-100k.csv --store /tmp/store-100k

The simulated world answers for any domain, so every row is a real target of the run.
The same N always writes the same file.
"""
import csv
import random
import sys

VERTICALS = ["Commerce", "Media", "Content", "Travel", "Technology", "Financial Services",
             "Healthcare", "Automotive", "Education", "Manufacturing"]
WEIGHTS = [38, 11, 9, 8, 11, 8, 5, 4, 3, 3]
PARTNERS = ["Adobe Experience Manager", "Shopify Plus", "Salesforce Commerce Cloud", "Sitecore",
            "Contentful", "BigCommerce"]
COUNTRIES = [("US", ".com"), ("GB", ".co.uk"), ("DE", ".de"), ("FR", ".fr"), ("CA", ".ca"),
             ("AU", ".com.au"), ("NL", ".nl"), ("JP", ".jp")]
WORDS = """blue red north south east west silver golden urban coastal alpine prairie summit harbor
river canyon maple cedar pine oak willow iron copper crystal lunar solar bright swift""".split()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: book.py N OUT.csv")
    n, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(n)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["domain", "company_name", "partner_tech", "vertical", "country"])
        for i in range(n):
            vertical = rng.choices(VERTICALS, WEIGHTS)[0]
            country, tld = rng.choice(COUNTRIES)
            a, b = rng.choice(WORDS), rng.choice(WORDS)
            w.writerow([f"{a}-{b}-{i}{tld}", f"{a.capitalize()} {b.capitalize()} {i}", rng.choice(PARTNERS),
                        vertical, country])


if __name__ == "__main__":
    main()
