#!/usr/bin/env python3
"""Generates the seed book deterministically: targets.csv (2,687 rows),
customers.csv (400 existing customers, some of them also in targets.csv),
tickers.csv (domain -> ticker for the public companies among the targets),
job_boards.csv (domain -> the job board platform and board name it posts on),
news_feeds.csv (domain -> the company's RSS or Atom news feed) and
case_studies.csv (160 published customer stories: who, vertical, partner tech,
country and region, size, use case, headline metric, link). Every company here
is made up; so are the case studies' metrics.

Run from anywhere: python3 data/seed/generate.py. The same seed always writes
the same files, so the committed CSVs can be checked by regenerating them.
"""
import csv
import os
import random

SEED = 20261123
TARGETS = 2687
CUSTOMERS = 400
CUSTOMERS_IN_TARGETS = 64

HERE = os.path.dirname(os.path.abspath(__file__))

FIRST = """blue red north south east west silver golden urban coastal alpine prairie summit harbor river
canyon maple cedar pine oak willow iron copper crystal lunar solar bright swift true bold noble royal
grand modern classic vintage wild open clear fresh pure prime peak metro pacific atlantic evergreen
sterling granite velvet cobalt amber ivory onyx jade scarlet indigo""".split()
SECOND = {
    "Commerce": "outfitters apparel goods supply market mart boutique home living gear footwear beauty kitchen style wear shop trading".split(),
    "Media": "times herald news media press tribune gazette broadcast studios post".split(),
    "Content": "magazine journal stories guides review insider digest".split(),
    "Travel": "travel voyages trips hotels resorts tours getaways airways".split(),
    "Technology": "software systems labs cloud devices networks data tech".split(),
    "Financial Services": "bank capital financial insurance credit invest wealth".split(),
    "Healthcare": "health pharmacy wellness clinic care".split(),
    "Automotive": "motors auto parts cars".split(),
    "Education": "learning academy university school".split(),
    "Manufacturing": "industries manufacturing tools works".split(),
}
VERTICALS = [("Commerce", 38), ("Media", 11), ("Content", 9), ("Travel", 8), ("Technology", 11),
             ("Financial Services", 8), ("Healthcare", 5), ("Automotive", 4), ("Education", 3),
             ("Manufacturing", 3)]
PARTNERS = [("Adobe Experience Manager", 24), ("Shopify Plus", 26), ("Salesforce Commerce Cloud", 18),
            ("Sitecore", 12), ("Contentful", 12), ("BigCommerce", 8)]
COUNTRIES = [("US", 52, ".com"), ("GB", 12, ".co.uk"), ("DE", 8, ".de"), ("FR", 6, ".fr"), ("CA", 6, ".ca"),
             ("AU", 5, ".com.au"), ("NL", 4, ".nl"), ("JP", 3, ".jp"), ("SE", 2, ".se"), ("ES", 2, ".es")]
SUFFIX = ["", "", "", " Inc.", " Group", " Co.", " Ltd", " Holdings"]


def weighted(rng, items):
    total = sum(w for _, w, *_ in items)
    roll = rng.uniform(0, total)
    for item in items:
        roll -= item[1]
        if roll <= 0:
            return item
    return items[-1]


def company(words):
    return " ".join(w.capitalize() for w in words)


def main():
    rng = random.Random(SEED)
    seen = set()
    targets = []
    while len(targets) < TARGETS:
        vertical = weighted(rng, VERTICALS)[0]
        country, _, tld = weighted(rng, COUNTRIES)
        if rng.random() < 0.35:
            tld = ".com"  # many non-US companies run a .com
        words = [rng.choice(FIRST), rng.choice(SECOND[vertical])]
        if rng.random() < 0.25:
            words.insert(1, rng.choice(FIRST))
        domain = "-".join(words) if rng.random() < 0.6 else "".join(words)
        domain += tld
        if domain in seen:
            continue
        seen.add(domain)
        name = company(words) + rng.choice(SUFFIX)
        partner = weighted(rng, PARTNERS)[0]
        # Real CRM exports are messy: a few rows carry a scheme, www. or capitals.
        written = domain
        roll = rng.random()
        if roll < 0.01:
            written = "https://www." + domain + "/"
        elif roll < 0.02:
            written = "www." + domain.upper()
        # Some rows miss a field or two.
        targets.append([written, name, partner if rng.random() > 0.02 else "",
                        vertical if rng.random() > 0.03 else "", country])

    customers = [t[0] for t in rng.sample(targets, CUSTOMERS_IN_TARGETS)]
    while len(customers) < CUSTOMERS:
        vertical = weighted(rng, VERTICALS)[0]
        domain = rng.choice(FIRST) + rng.choice(SECOND[vertical]) + rng.choice([".com", ".io", ".co.uk"])
        if domain not in seen:
            seen.add(domain)
            customers.append(domain)

    tickers = []
    used = set()
    for row in targets:
        if row[0] in customers or rng.random() > 0.12:
            continue
        while True:
            ticker = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.choice([3, 4, 4])))
            if ticker not in used:
                used.add(ticker)
                break
        domain = row[0].lower().removeprefix("https://").removeprefix("www.").rstrip("/")
        tickers.append([domain, ticker])

    # Drawn after everything else so that adding this file left the others unchanged.
    job_boards = []
    for row in targets:
        if row[0] in customers or rng.random() > 0.45:
            continue
        domain = row[0].lower().removeprefix("https://").removeprefix("www.").rstrip("/")
        platform = rng.choices(["greenhouse", "lever", "ashby"], weights=[55, 30, 15])[0]
        job_boards.append([domain, platform, domain.split(".")[0]])

    news_feeds = []
    for row in targets:
        if row[0] in customers or rng.random() > 0.5:
            continue
        domain = row[0].lower().removeprefix("https://").removeprefix("www.").rstrip("/")
        if rng.random() < 0.5:
            news_feeds.append([domain, f"https://{domain}/newsroom/rss.xml"])
        else:
            news_feeds.append([domain, f"https://news.{domain}/feed.atom"])

    with open(os.path.join(HERE, "targets.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["domain", "company_name", "partner_tech", "vertical", "country"])
        w.writerows(targets)
    with open(os.path.join(HERE, "customers.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["domain"])
        w.writerows([c] for c in customers)
    with open(os.path.join(HERE, "tickers.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["domain", "ticker"])
        w.writerows(tickers)
    with open(os.path.join(HERE, "job_boards.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["domain", "platform", "board"])
        w.writerows(job_boards)
    with open(os.path.join(HERE, "news_feeds.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["domain", "feed_url"])
        w.writerows(news_feeds)
    case_studies = make_case_studies(seen)
    with open(os.path.join(HERE, "case_studies.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "customer", "domain", "vertical", "partner_tech", "country", "region", "size_band",
                    "use_case", "headline_metric", "url"])
        w.writerows(case_studies)
    print(f"targets.csv {len(targets)} rows, customers.csv {len(customers)} rows, tickers.csv {len(tickers)} rows, "
          f"job_boards.csv {len(job_boards)} rows, news_feeds.csv {len(news_feeds)} rows, "
          f"case_studies.csv {len(case_studies)} rows")


REGIONS = {"US": "NA", "CA": "NA", "GB": "EMEA", "DE": "EMEA", "FR": "EMEA", "NL": "EMEA", "SE": "EMEA",
           "ES": "EMEA", "AU": "APAC", "JP": "APAC"}
USE_CASES = {
    "Commerce": ["site search", "product discovery", "search merchandising", "recommendations", "mobile app search"],
    "Media": ["article search", "content discovery", "archive search"],
    "Content": ["content discovery", "article search", "recommendations"],
    "Travel": ["destination search", "hotel and trip discovery", "site search"],
    "Technology": ["documentation search", "in-app search", "support center search"],
    "Financial Services": ["help center search", "product finder", "site search"],
    "Healthcare": ["provider finder", "site search", "help center search"],
    "Automotive": ["parts finder", "inventory search"],
    "Education": ["course search", "catalog search"],
    "Manufacturing": ["parts catalog search", "distributor portal search"],
}
METRICS = [
    "+{a}% search conversion rate", "+{a}% revenue from search", "{a}% fewer searches with no results",
    "+{a}% click-through on search results", "search answers in {ms} ms at peak", "+{a}% average order value from search",
    "{b}x faster to launch than the in-house engine", "+{a}% engagement with recommended content",
    "{a}% fewer support tickets", "+{a}% add-to-cart rate from search",
]
CASE_PARTNERS = PARTNERS + [("Magento", 6), ("commercetools", 4)]


def make_case_studies(seen):
    # Its own generator: adding case studies leaves every other file unchanged.
    rng = random.Random(SEED + 160)
    rows = []
    names = set()
    while len(rows) < 160:
        vertical = weighted(rng, VERTICALS)[0]
        country, _, tld = weighted(rng, COUNTRIES)
        words = [rng.choice(FIRST), rng.choice(SECOND[vertical])]
        name = company(words)
        domain = "".join(words) + (tld if rng.random() < 0.6 else ".com")
        if name in names or domain in seen:
            continue
        names.add(name)
        seen.add(domain)
        partner = weighted(rng, CASE_PARTNERS)[0]
        size = rng.choices(["enterprise", "mid-market", "smb"], weights=[45, 40, 15])[0]
        metric = rng.choice(METRICS).format(a=rng.randint(8, 60), ms=rng.choice([12, 18, 25, 40]),
                                            b=rng.choice([2, 3, 4, 5]))
        slug = "-".join(w.lower() for w in words)
        rows.append([f"cs{len(rows) + 1:03d}", name, domain, vertical, partner, country, REGIONS[country], size,
                     rng.choice(USE_CASES[vertical]), metric, f"https://www.algolia.com/customers/{slug}/"])
    return rows


if __name__ == "__main__":
    main()
