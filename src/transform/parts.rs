//! A snapshot's tables split by ranges of domains, once, into local files that are read
//! back a range at a time: change tracking and the targets' assembly hold one range's
//! rows, not the book's.

use anyhow::Context as _;

use super::changes::{DomainRange, SnapshotFiles};

/// A snapshot's tables split by ranges of domains ([`partition_by_range`]): each range's
/// rows of each table in a local file, read back one range at a time. The folder goes
/// when the parts are dropped.
pub struct Parts {
    folder: std::path::PathBuf,
    tables: Vec<String>,
    ranges: usize,
    /// One range only: the tables themselves, not split.
    whole: Option<SnapshotFiles>,
}

impl Parts {
    /// The number of ranges.
    pub fn len(&self) -> usize {
        self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges == 0
    }

    fn path(&self, table: &str, range: usize) -> std::path::PathBuf {
        self.folder.join(format!("{table}-{range:05}.parquet"))
    }

    /// The tables' rows of range `range`.
    pub fn load(&self, range: usize) -> anyhow::Result<SnapshotFiles> {
        if let Some(whole) = &self.whole {
            return Ok(whole.clone());
        }
        let mut out = SnapshotFiles::new();
        for table in &self.tables {
            let path = self.path(table, range);
            let bytes = std::fs::read(&path).with_context(|| format!("reading the part {}", path.display()))?;
            out.insert(table.clone(), bytes::Bytes::from(bytes));
        }
        Ok(out)
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        if self.whole.is_none() {
            let _ = std::fs::remove_dir_all(&self.folder);
        }
    }
}

/// Rows a split keeps of a table: `(table, column, value)`, the rows whose `column` reads
/// `value` as text (`true` for a boolean). A table without one keeps every row.
pub type Keep<'a> = (&'a str, &'a str, &'a str);

/// The parts' files open at once while tables are split on several threads, at most.
const MAX_OPEN_PARTS: usize = 256;

/// Splits `tables` (each with the columns read from it; another table is not split) by the
/// ranges (sorted, contiguous, as [`DomainRange::split`] makes them) in one pass over each,
/// into local files (memory holds a batch and each range's open row group, not the parts:
/// at a million targets the parts are the size of the tables), keeping the rows `keep`
/// names; a table without a `domain` column has empty parts.
pub fn partition_by_range(
    files: &SnapshotFiles,
    tables: &[(&str, &[&str])],
    keep: &[Keep],
    ranges: &[DomainRange],
) -> anyhow::Result<Parts> {
    let bounds: Vec<&str> = ranges.iter().filter_map(|r| r.lo.as_deref()).collect();
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let folder = std::env::temp_dir().join(format!("partnerforge-parts-{}-{nanos:x}", std::process::id()));
    let mut parts = Parts { folder, tables: Vec::new(), ranges: ranges.len(), whole: None };
    if ranges.len() == 1 {
        parts.whole = Some(files.clone());
        return Ok(parts);
    }
    std::fs::create_dir_all(&parts.folder).with_context(|| format!("creating {}", parts.folder.display()))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .set_max_row_group_row_count(Some(8 * 1024))
        .build();
    // Only the tables and columns asked for. Local, read once and removed: no compression
    // (encoding costs what copying does), but dictionaries — the repeated sources, modules
    // and technologies of a million targets took 1.3 GB plain, 0.2 GB with them.
    // A table the snapshot lacks (or holds empty) has no parts.
    let mut work: Vec<(&str, &[&str], &bytes::Bytes)> = tables
        .iter()
        .filter_map(|(table, columns)| files.get(*table).filter(|b| !b.is_empty()).map(|b| (*table, *columns, b)))
        .collect();
    // (A table named twice is split once: two threads would write the same files.)
    let mut seen = std::collections::HashSet::new();
    work.retain(|(table, _, _)| seen.insert(*table));
    parts.tables = work.iter().map(|(table, _, _)| table.to_string()).collect();
    // The tables on every core, the largest first.
    let mut order: Vec<usize> = (0..work.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(work[*i].2.len()));
    let split = |k: usize| -> anyhow::Result<()> {
        let (table, columns, bytes) = work[order[k]];
        let kept = keep.iter().find(|(t, _, _)| *t == table).map(|(_, column, value)| (*column, *value));
        split_table(bytes, table, columns, kept, &bounds, &|r| parts.path(table, r), &props)
    };
    // Each table being split holds a file and a row group open per range: the threads are
    // as many as keep that under `MAX_OPEN_PARTS` (one at 10M targets' 400 ranges).
    let threads = super::encode::cores().min(MAX_OPEN_PARTS / ranges.len().max(1)).max(1);
    for done in super::encode::each_on_threads(order.len(), threads, split) {
        done.unwrap_or_else(|| Err(anyhow::anyhow!("a thread splitting the tables stopped")))?;
    }
    Ok(parts)
}

/// One table's rows (its `columns`, the rows `kept` names) into a file per range
/// (`path(range)`), in one pass.
fn split_table(
    bytes: &bytes::Bytes,
    table: &str,
    columns: &[&str],
    kept: Option<(&str, &str)>,
    bounds: &[&str],
    path: &dyn Fn(usize) -> std::path::PathBuf,
    props: &parquet::file::properties::WriterProperties,
) -> anyhow::Result<()> {
    use arrow::array::{Array, RecordBatchReader, StringArray, UInt32Array};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let ranges = bounds.len() + 1;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .and_then(|b| {
            let fields = b.schema().fields();
            let roots = (0..fields.len()).filter(|i| columns.contains(&fields[*i].name().as_str()));
            let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), roots);
            b.with_projection(mask).with_batch_size(8192).build()
        })
        .with_context(|| format!("reading the {table} table"))?;
    let schema = reader.schema();
    let mut writers = Vec::with_capacity(ranges);
    for r in 0..ranges {
        let path = path(r);
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        writers.push(ArrowWriter::try_new(std::io::BufWriter::new(file), schema.clone(), Some(props.clone()))?);
    }
    for batch in reader {
        let mut batch = batch?;
        // (Without the column every row is kept, and its reader says what is missing.)
        if let Some((values, value)) = kept.and_then(|(column, value)| Some((batch.column_by_name(column)?, value))) {
            let text = arrow::compute::cast(values, &arrow::datatypes::DataType::Utf8)?;
            let mask = arrow::compute::kernels::cmp::eq(&text, &StringArray::new_scalar(value))?;
            batch = arrow::compute::filter_record_batch(&batch, &mask)?;
        }
        let Some(column) = batch.column_by_name("domain") else { continue };
        let domains = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)?;
        let Some(domains) = domains.as_any().downcast_ref::<StringArray>() else { continue };
        // The batch's rows grouped by range, a counting sort (a mask per range and batch
        // was quadratic: 400 ranges at 10M targets). Rows keep their order within a range;
        // a row in the previous row's range (tables written in domain order) is found
        // without a search.
        let mut of_row = Vec::with_capacity(domains.len());
        let mut counts = vec![0u32; ranges + 1];
        let mut last = usize::MAX;
        for i in 0..domains.len() {
            let d = domains.value(i);
            let within =
                last != usize::MAX && (last == 0 || bounds[last - 1] <= d) && bounds.get(last).is_none_or(|b| d < *b);
            if !within {
                last = bounds.partition_point(|b| *b <= d);
            }
            of_row.push(last as u32);
            counts[last + 1] += 1;
        }
        for r in 1..counts.len() {
            counts[r] += counts[r - 1];
        }
        let mut grouped = vec![0u32; domains.len()];
        let mut next = counts.clone();
        for (i, r) in of_row.iter().enumerate() {
            grouped[next[*r as usize] as usize] = i as u32;
            next[*r as usize] += 1;
        }
        for (r, writer) in writers.iter_mut().enumerate() {
            let (from, to) = (counts[r] as usize, counts[r + 1] as usize);
            if from < to {
                let indices = UInt32Array::from_iter_values(grouped[from..to].iter().copied());
                writer.write(&arrow::compute::take_record_batch(&batch, &indices)?)?;
            }
        }
    }
    for writer in writers {
        writer.close()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::table::{TableBuilder, to_parquet};

    #[test]
    fn each_range_gets_exactly_its_rows_in_their_order() {
        // Rows in the order their calls finished, not by domain; a table without domains
        // too, and one the observations do not read.
        let domains: Vec<String> = (0..40).map(|i| format!("d{:02}.com", (i * 17) % 40)).collect();
        let batch = TableBuilder::new()
            .text("domain", domains.iter().map(Some))
            .text("technology", (0..40).map(|i| Some(format!("{i:02}"))))
            .text("unread", (0..40).map(|_| Some("x")))
            .finish()
            .unwrap();
        let plain = TableBuilder::new().int("market_cap", [Some(1)]).finish().unwrap();
        let mut files = SnapshotFiles::new();
        files.insert("tech_stack".into(), to_parquet(&batch).unwrap());
        files.insert("stock".into(), to_parquet(&plain).unwrap());
        files.insert("company".into(), to_parquet(&batch).unwrap());
        let mut sorted: Vec<&str> = domains.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let ranges = DomainRange::split(sorted.iter().copied(), 7);
        assert_eq!(ranges.len(), 6);
        let parts = partition_by_range(&files, &crate::transform::changes::OBSERVED, &[], &ranges).unwrap();
        let folder = parts.folder.clone();
        let mut seen = 0;
        for (r, range) in ranges.iter().enumerate() {
            let part = parts.load(r).unwrap();
            assert!(!part.contains_key("company"), "a table the observations do not read is not split");
            let rows = crate::transform::read_parquet(part["tech_stack"].clone(), &["domain", "technology"])
                .unwrap()
                .collect()
                .unwrap();
            assert_eq!(rows.width(), 2);
            assert!(
                crate::transform::read_parquet(part["tech_stack"].clone(), &["unread"]).is_err(),
                "only its columns"
            );
            let (d, n) =
                (rows.column("domain").unwrap().str().unwrap(), rows.column("technology").unwrap().str().unwrap());
            for i in 0..rows.height() {
                let domain = d.get(i).unwrap();
                assert!(
                    range.lo.as_deref().is_none_or(|lo| domain >= lo)
                        && range.hi.as_deref().is_none_or(|hi| domain < hi)
                );
                assert_eq!(domains[n.get(i).unwrap().parse::<usize>().unwrap()], domain);
            }
            assert!(n.iter().is_sorted(), "the input's order within a range");
            seen += rows.height();
            assert_eq!(
                crate::transform::read_parquet(part["stock"].clone(), &["market_cap"])
                    .unwrap()
                    .collect()
                    .unwrap()
                    .height(),
                0
            );
        }
        assert_eq!(seen, 40);
        drop(parts);
        assert!(!folder.exists(), "the parts' folder goes with them");
    }

    #[test]
    fn a_split_keeps_the_rows_named_by_text_or_boolean_value() {
        let domains: Vec<String> = (0..30).map(|i| format!("d{:02}.com", (i * 7) % 30)).collect();
        let fetches = TableBuilder::new()
            .text("module", (0..30).map(|i| Some(if i % 3 == 0 { "m12" } else { "m03" })))
            .text("domain", domains.iter().map(Some))
            .finish()
            .unwrap();
        let stack = TableBuilder::new()
            .text("domain", domains.iter().map(Some))
            .boolean("is_search_vendor", (0..30).map(|i| if i % 5 == 0 { None } else { Some(i % 2 == 0) }))
            .finish()
            .unwrap();
        let mut files = SnapshotFiles::new();
        files.insert("fetches".into(), to_parquet(&fetches).unwrap());
        files.insert("tech_stack".into(), to_parquet(&stack).unwrap());
        files.insert("empty".into(), bytes::Bytes::new());
        let mut sorted: Vec<&str> = domains.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let ranges = DomainRange::split(sorted.iter().copied(), 10);
        let tables: [(&str, &[&str]); 3] = [
            ("fetches", &["module", "domain"]),
            ("tech_stack", &["domain", "is_search_vendor"]),
            ("empty", &["domain"]),
        ];
        let keep = [("fetches", "module", "m12"), ("tech_stack", "is_search_vendor", "true")];
        let parts = partition_by_range(&files, &tables, &keep, &ranges).unwrap();
        let (mut modules, mut vendors) = (Vec::new(), Vec::new());
        for r in 0..parts.len() {
            let part = parts.load(r).unwrap();
            assert!(!part.contains_key("empty"), "an empty table has no parts");
            let read = |table: &str, column: &str| {
                crate::transform::read_parquet(part[table].clone(), &[column]).unwrap().collect().unwrap()
            };
            let m = read("fetches", "module");
            modules.extend(m.column("module").unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()));
            let v = read("tech_stack", "is_search_vendor");
            vendors.extend(v.column("is_search_vendor").unwrap().bool().unwrap().iter());
        }
        assert_eq!(modules.len(), 10, "{modules:?}");
        assert!(modules.iter().all(|m| m == "m12"));
        // i even and not a multiple of 5 (null is not true): 0..30 → 12 rows.
        assert_eq!(vendors, vec![Some(true); 12]);
    }
}
