//! Renamed domains. When BuiltWith's answer for a domain is about another root
//! domain, the site has moved there (its crawl followed the redirect; the `company`
//! table's `redirects_to`). Every commit keeps the `renames` table — the previous
//! snapshot's, confirmed or extended by this one's answers, each old name pointing at
//! the newest — and the next night's book looks the account up under its new name,
//! with its change history and its `targets_history` carried over.

use std::collections::BTreeMap;

use anyhow::Context as _;
use arrow::array::{Array, StringArray};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::store::table::{TableBuilder, date_values};

/// One move: `domain` is now `renamed_to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rename {
    pub domain: String,
    pub renamed_to: String,
    /// Where the move was seen: `builtwith` (its answer named the new root domain).
    pub source: String,
    pub first_seen: NaiveDate,
    pub last_seen: NaiveDate,
}

/// Text columns of a stored table, a batch at a time; a missing column reads as nulls.
fn for_each_row(
    bytes: &Bytes,
    columns: &[&str],
    f: &mut dyn FnMut(&RecordBatch, &[Option<StringArray>]),
) -> anyhow::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    for batch in ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?.build()? {
        let batch = batch?;
        let arrays: Vec<Option<StringArray>> = columns
            .iter()
            .map(|name| batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned()))
            .collect();
        f(&batch, &arrays);
    }
    Ok(())
}

fn value(array: &Option<StringArray>, i: usize) -> Option<&str> {
    array.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i)).filter(|v| !v.is_empty())
}

/// What a `company` table shows: the moves (old domain → new domain) and the domains
/// BuiltWith answered for as themselves.
pub fn detected(company: &Bytes) -> anyhow::Result<(BTreeMap<String, String>, Vec<String>)> {
    let (mut moves, mut live) = (BTreeMap::new(), Vec::new());
    for_each_row(company, &["domain", "redirects_to"], &mut |batch, arrays| {
        for i in 0..batch.num_rows() {
            match (value(&arrays[0], i), value(&arrays[1], i)) {
                (Some(from), Some(to)) => {
                    moves.insert(from.to_string(), to.to_string());
                }
                (Some(domain), None) => live.push(domain.to_string()),
                (None, _) => {}
            }
        }
    })
    .context("reading the company table's redirects")?;
    Ok((moves, live))
}

/// A stored `renames` table.
pub fn read(bytes: &Bytes) -> anyhow::Result<Vec<Rename>> {
    let mut rows = Vec::new();
    let mut failure = None;
    for_each_row(bytes, &["domain", "renamed_to", "source"], &mut |batch, arrays| {
        let (Some(first), Some(last)) = (date_values(batch, "first_seen"), date_values(batch, "last_seen")) else {
            failure = Some("renames has no first_seen/last_seen dates");
            return;
        };
        for i in 0..batch.num_rows() {
            let (Some(from), Some(to)) = (value(&arrays[0], i), value(&arrays[1], i)) else { continue };
            let (Some(first_seen), Some(last_seen)) = (first[i], last[i]) else { continue };
            rows.push(Rename {
                domain: from.to_string(),
                renamed_to: to.to_string(),
                source: value(&arrays[2], i).unwrap_or("builtwith").to_string(),
                first_seen,
                last_seen,
            });
        }
    })
    .context("reading the renames table")?;
    if let Some(failure) = failure {
        anyhow::bail!(failure);
    }
    Ok(rows)
}

/// The renames as of `date`: the previous ones, and this snapshot's moves (a move seen
/// again keeps its first date). A domain that answers as itself again, or is the new
/// name of a newer move, is no old name any more. Chains resolve to the newest name
/// (A → B, then B → C: A → C); a cycle keeps the newest move only.
pub fn merge(previous: Vec<Rename>, moves: &BTreeMap<String, String>, live: &[String], date: NaiveDate) -> Vec<Rename> {
    let mut by_old: BTreeMap<String, Rename> = BTreeMap::new();
    for rename in previous {
        by_old.insert(rename.domain.clone(), rename);
    }
    // A domain answered as itself tonight has not moved (or has moved back).
    for domain in live {
        if !moves.contains_key(domain) {
            by_old.remove(domain);
        }
    }
    for (from, to) in moves {
        by_old.remove(to);
        let first_seen = match by_old.get(from) {
            Some(r) if &r.renamed_to == to => r.first_seen,
            _ => date,
        };
        by_old.insert(
            from.clone(),
            Rename {
                domain: from.clone(),
                renamed_to: to.clone(),
                source: "builtwith".into(),
                first_seen,
                last_seen: date,
            },
        );
    }
    let targets: BTreeMap<String, String> = by_old.iter().map(|(k, r)| (k.clone(), r.renamed_to.clone())).collect();
    let mut out = Vec::with_capacity(by_old.len());
    for (from, mut rename) in by_old {
        let mut name = rename.renamed_to.clone();
        let mut steps = 0;
        while let Some(next) = targets.get(&name) {
            steps += 1;
            if next == &from || steps > targets.len() {
                break;
            }
            name = next.clone();
        }
        if name == from {
            continue;
        }
        rename.renamed_to = name;
        out.push(rename);
    }
    out
}

/// The `renames` table.
pub fn batch(rows: &[Rename], snapshot_id: &str) -> anyhow::Result<RecordBatch> {
    Ok(TableBuilder::new()
        .text("domain", rows.iter().map(|r| Some(&r.domain)))
        .text("renamed_to", rows.iter().map(|r| Some(&r.renamed_to)))
        .text("source", rows.iter().map(|r| Some(&r.source)))
        .date("first_seen", rows.iter().map(|r| Some(r.first_seen)))
        .date("last_seen", rows.iter().map(|r| Some(r.last_seen)))
        .text("snapshot_id", rows.iter().map(|_| Some(snapshot_id)))
        .finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn moves(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn pairs(rows: &[Rename]) -> Vec<(&str, &str)> {
        rows.iter().map(|r| (r.domain.as_str(), r.renamed_to.as_str())).collect()
    }

    #[test]
    fn moves_accumulate_and_chains_resolve_to_the_newest_name() {
        let first = merge(Vec::new(), &moves(&[("a.com", "b.com")]), &[], day(1));
        assert_eq!(pairs(&first), [("a.com", "b.com")]);
        // Seen again: the first date stays.
        let again = merge(first.clone(), &moves(&[("a.com", "b.com")]), &[], day(2));
        assert_eq!((again[0].first_seen, again[0].last_seen), (day(1), day(2)));
        // Not looked up (the book has moved on to b.com): kept.
        let kept = merge(again.clone(), &moves(&[]), &["b.com".to_string()], day(3));
        assert_eq!(pairs(&kept), [("a.com", "b.com")]);
        // b.com moves on to c.com: both old names point at c.com.
        let chained = merge(kept, &moves(&[("b.com", "c.com")]), &[], day(4));
        assert_eq!(pairs(&chained), [("a.com", "c.com"), ("b.com", "c.com")]);
    }

    #[test]
    fn a_domain_that_answers_as_itself_again_is_no_old_name() {
        let first = merge(Vec::new(), &moves(&[("a.com", "b.com")]), &[], day(1));
        assert!(merge(first.clone(), &moves(&[]), &["a.com".to_string()], day(2)).is_empty());
        // Moved back: b.com now redirects to a.com.
        let back = merge(first, &moves(&[("b.com", "a.com")]), &[], day(2));
        assert_eq!(pairs(&back), [("b.com", "a.com")]);
    }

    #[test]
    fn the_table_reads_back() {
        let rows = merge(Vec::new(), &moves(&[("a.com", "b.com"), ("x.com", "y.com")]), &[], day(5));
        let bytes = crate::store::table::to_parquet(&batch(&rows, "2026-11-05").unwrap()).unwrap();
        assert_eq!(read(&bytes).unwrap(), rows);
        let (moves, live) = detected(&Bytes::new()).unwrap();
        assert!(moves.is_empty() && live.is_empty());
    }
}
