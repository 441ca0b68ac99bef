//! Domain families: a company's sites (regional domains, sister brands, microsites) that
//! share a strong identifier — an analytics, tag-manager or ad account id, as BuiltWith's
//! Relationships report them — grouped so that the company is one account in lists and
//! scores. Every domain of a family is a member; the book's members point to the
//! family's primary (the one with the most traffic), which carries the account.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::store::table::TableBuilder;

/// One edge of a family: `domain` shares `via:identifier` with `related` (a row of
/// `related_domains`).
pub type Link = crate::modules::tables::RelatedRow;

/// A book domain's family: its id and the member that carries the account.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub family_id: String,
    pub primary: String,
}

/// The families of a snapshot: the `families` table's rows, and the book's memberships.
#[derive(Debug, Default)]
pub struct Families {
    pub rows: Vec<FamilyRow>,
    pub of_book: HashMap<String, Membership>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FamilyRow {
    pub family_id: String,
    pub domain: String,
    pub is_primary: bool,
    pub in_book: bool,
    /// The strong identifiers that tie it to the family, `ga:UA-1, gtm:GTM-2`.
    pub identifiers: String,
    /// When BuiltWith first and last saw them shared (epoch ms).
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
}

/// Groups the domains `links` join through a strong identifier (`strong`, lower case)
/// into families that hold at least one book domain. A family's id is its first book
/// domain (in sort order); its primary is the book member with the most monthly visits
/// (`visits`), then the shortest domain, then the first in sort order.
pub fn group(links: &[Link], strong: &[String], book: &BTreeSet<&str>, visits: &HashMap<String, f64>) -> Families {
    let strong: BTreeSet<String> = strong.iter().map(|s| s.to_ascii_lowercase()).collect();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let kept: Vec<&Link> = links.iter().filter(|l| strong.contains(&l.via.to_ascii_lowercase())).collect();
    for link in &kept {
        for name in [link.domain.as_str(), link.related.as_str()] {
            if !index.contains_key(name) {
                index.insert(name, names.len());
                names.push(name);
                parent.push(parent.len());
            }
        }
        let (a, b) = (find(&mut parent, index[link.domain.as_str()]), find(&mut parent, index[link.related.as_str()]));
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    // Members by root, and what ties each member in.
    let mut members: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let root = find(&mut parent, i);
        members.entry(root).or_default().insert(name);
    }
    let mut ties: HashMap<&str, Tie> = HashMap::new();
    for link in &kept {
        for name in [link.domain.as_str(), link.related.as_str()] {
            let tie = ties.entry(name).or_default();
            tie.0.insert(format!("{}:{}", link.via.to_ascii_lowercase(), link.identifier));
            tie.1 = min_some(tie.1, link.first_seen);
            tie.2 = tie.2.max(link.last_seen);
        }
    }
    let mut families = Families::default();
    for domains in members.values() {
        let in_book: Vec<&str> = domains.iter().copied().filter(|d| book.contains(d)).collect();
        let Some(family_id) = in_book.first() else { continue };
        let primary = in_book
            .iter()
            .copied()
            .max_by(|a, b| {
                let (va, vb) = (visits.get(*a).copied().unwrap_or(-1.0), visits.get(*b).copied().unwrap_or(-1.0));
                va.total_cmp(&vb).then(b.len().cmp(&a.len())).then(b.cmp(a))
            })
            .unwrap_or(family_id);
        for domain in domains {
            let (identifiers, first_seen, last_seen) = ties.get(domain).cloned().unwrap_or_default();
            families.rows.push(FamilyRow {
                family_id: family_id.to_string(),
                domain: domain.to_string(),
                is_primary: *domain == primary,
                in_book: book.contains(domain),
                identifiers: identifiers.into_iter().collect::<Vec<_>>().join(", "),
                first_seen,
                last_seen,
            });
        }
        for domain in &in_book {
            let membership = Membership { family_id: family_id.to_string(), primary: primary.to_string() };
            families.of_book.insert(domain.to_string(), membership);
        }
    }
    families
}

/// What ties a member in: its identifiers, and when they were first and last seen shared.
type Tie = (BTreeSet<String>, Option<i64>, Option<i64>);

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The links of a stored `related_domains` table (rows stored before `first_seen`
/// existed have no dates).
pub fn links(bytes: &Bytes) -> anyhow::Result<Vec<Link>> {
    let mut out = Vec::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    for batch in ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?.build()? {
        let batch = batch?;
        let text = |name: &str| -> anyhow::Result<StringArray> {
            let column = batch.column_by_name(name).ok_or_else(|| anyhow::anyhow!("related_domains has no {name}"))?;
            column
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("related_domains.{name} is not text"))
        };
        let time = |name: &str| {
            batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>().cloned())
        };
        let (domains, related, via, identifiers) =
            (text("domain")?, text("related")?, text("via")?, text("identifier")?);
        let (first, last) = (time("first_seen"), time("last_seen"));
        let at = |times: &Option<TimestampMillisecondArray>, i: usize| {
            times.as_ref().filter(|t| !t.is_null(i)).map(|t| t.value(i))
        };
        for i in 0..batch.num_rows() {
            out.push(Link {
                domain: domains.value(i).to_string(),
                related: related.value(i).to_string(),
                via: via.value(i).to_string(),
                identifier: identifiers.value(i).to_string(),
                first_seen: at(&first, i),
                last_seen: at(&last, i),
            });
        }
    }
    Ok(out)
}

/// Each domain's highest monthly visits in a stored `traffic` table.
pub fn visits(bytes: &Bytes) -> anyhow::Result<HashMap<String, f64>> {
    use polars::prelude::*;
    let mut out = HashMap::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    let frame = super::read_parquet(bytes.clone(), &["domain", "monthly_visits"])?
        .group_by([col("domain")])
        .agg([col("monthly_visits").cast(DataType::Float64).max()])
        .collect()?;
    let (domains, visits) = (frame.column("domain")?.str()?, frame.column("monthly_visits")?.f64()?);
    for i in 0..frame.height() {
        if let (Some(domain), Some(v)) = (domains.get(i), visits.get(i)) {
            out.insert(domain.to_string(), v);
        }
    }
    Ok(out)
}

/// The `families` table.
pub fn batch(rows: &[FamilyRow], snapshot_id: &str) -> anyhow::Result<RecordBatch> {
    Ok(TableBuilder::new()
        .text("family_id", rows.iter().map(|r| Some(&r.family_id)))
        .text("domain", rows.iter().map(|r| Some(&r.domain)))
        .boolean("is_primary", rows.iter().map(|r| Some(r.is_primary)))
        .boolean("in_book", rows.iter().map(|r| Some(r.in_book)))
        .text("identifiers", rows.iter().map(|r| Some(&r.identifiers)))
        .timestamp_ms("first_seen", rows.iter().map(|r| r.first_seen))
        .timestamp_ms("last_seen", rows.iter().map(|r| r.last_seen))
        .text("snapshot_id", rows.iter().map(|_| Some(snapshot_id)))
        .finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(domain: &str, related: &str, via: &str, id: &str, first: i64) -> Link {
        Link {
            domain: domain.into(),
            related: related.into(),
            via: via.into(),
            identifier: id.into(),
            first_seen: Some(first),
            last_seen: Some(first + 10),
        }
    }

    #[test]
    fn sites_sharing_a_strong_identifier_are_one_family_with_the_busiest_book_site_primary() {
        let links = vec![
            link("acme.com", "acme.de", "ga", "UA-1", 100),
            link("acme.com", "acme.fr", "ga", "UA-1", 50),
            link("acme.de", "acme-promo.com", "GTM", "GTM-9", 70),
            // A shared host says nothing of ownership.
            link("acme.com", "other.com", "ip", "1.2.3.4", 10),
            link("solo.com", "solo.co.uk", "ga", "UA-2", 5),
            // No book domain: not a family of the book.
            link("x.com", "y.com", "ga", "UA-3", 5),
        ];
        let strong: Vec<String> = crate::config::FamilySettings::default().identifiers;
        let book: BTreeSet<&str> = ["acme.com", "acme.de", "solo.com", "other.com"].into_iter().collect();
        let visits: HashMap<String, f64> = [("acme.com".to_string(), 10.0), ("acme.de".to_string(), 900.0)].into();
        let families = group(&links, &strong, &book, &visits);
        let acme = &families.of_book["acme.com"];
        assert_eq!(acme, &families.of_book["acme.de"]);
        assert_eq!((acme.family_id.as_str(), acme.primary.as_str()), ("acme.com", "acme.de"));
        assert_eq!(families.of_book["solo.com"].primary, "solo.com");
        assert!(!families.of_book.contains_key("other.com"), "an IP is not a family tie");
        let members: Vec<&str> =
            families.rows.iter().filter(|r| r.family_id == "acme.com").map(|r| r.domain.as_str()).collect();
        assert_eq!(members, ["acme-promo.com", "acme.com", "acme.de", "acme.fr"]);
        let de = families.rows.iter().find(|r| r.domain == "acme.de").unwrap();
        assert_eq!((de.identifiers.as_str(), de.first_seen, de.last_seen), ("ga:UA-1, gtm:GTM-9", Some(70), Some(110)));
        assert!(de.is_primary && de.in_book);
        assert!(families.rows.iter().all(|r| r.family_id != "x.com"));
    }
}
