//! Left joins on a key the right side holds once, with list columns gathered by their
//! offsets.
//!
//! Polars (0.55) gathers a list column row by row: each row's list is cut out as an array
//! of its own and the arrays are concatenated again. A target's nested columns (its case
//! studies, its conflicts, its tech stack, its postings) are lists, joined onto every row
//! of a slice, so a full recompute spent a sixth of its time there (BENCHMARKS.md). Here a
//! list column is gathered as new offsets and one gather of its values.

use polars::prelude::*;
use polars_arrow::array::{Array, ListArray};
use polars_arrow::bitmap::MutableBitmap;
use polars_arrow::offset::OffsetsBuffer;

/// The row index column of the right side, while joining.
const RIGHT_ROW: &str = "__right_row";

/// `left` with the columns of `right` (but its keys) of the row whose `right_on` equals
/// the row's `left_on`, in `left`'s order; nulls where none does. As Polars' left join
/// when `right` holds each key once; when it holds one twice, or a column name is on both
/// sides, it is Polars' left join.
pub fn left_join_unique(
    left: DataFrame,
    right: &DataFrame,
    left_on: &[&str],
    right_on: &[&str],
    nulls_equal: bool,
) -> PolarsResult<DataFrame> {
    let key = |names: &[&str]| names.iter().map(|n| col(*n)).collect::<Vec<_>>();
    let args = JoinArgs { nulls_equal, ..JoinArgs::new(JoinType::Left) };
    let columns: Vec<&Column> = right.columns().iter().filter(|c| !right_on.contains(&c.name().as_str())).collect();
    let clash = columns.iter().any(|c| left.schema().contains(c.name()));
    let rows = if clash {
        None
    } else {
        let keys = right.select(right_on.iter().copied())?.with_row_index(RIGHT_ROW.into(), None)?;
        let rows = left
            .select(left_on.iter().copied())?
            .lazy()
            .join(
                keys.lazy(),
                key(left_on),
                key(right_on),
                JoinArgs { maintain_order: MaintainOrderJoin::Left, ..args.clone() },
            )
            .select([col(RIGHT_ROW)])
            .collect()?;
        // More rows than `left`: a key the right side holds twice.
        (rows.height() == left.height()).then_some(rows)
    };
    let Some(rows) = rows else {
        return left.lazy().join(right.clone().lazy(), key(left_on), key(right_on), args).collect();
    };
    let rows = rows.column(RIGHT_ROW)?.idx()?.rechunk();
    let mut out = left;
    let gathered = columns
        .into_iter()
        .map(|c| {
            let series = c.as_materialized_series();
            match series.dtype() {
                DataType::List(_) => gather_list(series.list()?, &rows),
                _ => series.take(&rows),
            }
        })
        .collect::<PolarsResult<Vec<Series>>>()?;
    for series in gathered {
        out.with_column(series.into_column())?;
    }
    Ok(out)
}

/// The rows of a list column at `rows` (a null row index gives a null list).
pub fn gather_list(list: &ListChunked, rows: &IdxCa) -> PolarsResult<Series> {
    let list = list.rechunk();
    let Some(array) = list.downcast_iter().next().filter(|_| list.chunks().len() == 1) else {
        return Ok(list.take(rows)?.into_series());
    };
    let offsets = array.offsets().buffer();
    let mut new_offsets: Vec<i64> = Vec::with_capacity(rows.len() + 1);
    new_offsets.push(0);
    let mut values: Vec<IdxSize> = Vec::new();
    let mut validity = MutableBitmap::with_capacity(rows.len());
    for row in rows.iter() {
        if let Some(r) = row.filter(|r| *r as usize >= array.len()) {
            polars_bail!(oob = r, array.len());
        }
        match row.map(|r| r as usize).filter(|r| array.is_valid(*r)) {
            Some(r) => {
                let (start, end) = (offsets[r], offsets[r + 1]);
                values.extend((start..end).map(|v| v as IdxSize));
                validity.push(true);
            }
            None => validity.push(false),
        }
        new_offsets.push(values.len() as i64);
    }
    let inner = list.get_inner().rechunk();
    let taken = inner.take_slice(&values)?.rechunk();
    let Some(child) = taken.chunks().first().cloned() else {
        return Ok(list.take(rows)?.into_series());
    };
    let validity = if validity.unset_bits() == 0 { None } else { Some(validity.into()) };
    // SAFETY: the offsets start at 0, never decrease, and end at the child's length.
    let offsets = unsafe { OffsetsBuffer::new_unchecked(new_offsets.into()) };
    let gathered = match ListArray::<i64>::try_new(array.dtype().clone(), offsets, child, validity) {
        Ok(gathered) => gathered,
        // The gathered values typed otherwise than the list's (never seen): Polars' gather.
        Err(_) => return Ok(list.take(rows)?.into_series()),
    };
    // SAFETY: the chunk is the list's own layout and type, with rows gathered.
    Ok(unsafe { Series::from_chunks_and_dtype_unchecked(list.name().clone(), vec![gathered.boxed()], list.dtype()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with nested lists (a list of structs holding a list, a list of text) and
    /// nulls at every level.
    fn right() -> DataFrame {
        let studies = df!(
            "domain" => ["a.com", "a.com", "a.com", "c.com", "d.com", "d.com", "d.com"],
            "id" => [Some("s1"), Some("s1"), Some("s2"), None, Some("s3"), Some("s4"), Some("s5")],
            "score" => [3i64, 3, 2, 1, 5, 4, 3],
            "tag" => [Some("x"), Some("y"), None, Some("z"), Some("x"), Some("y"), Some("z")],
        )
        .unwrap()
        .lazy()
        .group_by_stable([col("domain"), col("id")])
        .agg([col("tag").alias("tags"), col("score").first()])
        .group_by_stable([col("domain")])
        .agg([
            as_struct(vec![col("id"), col("score"), col("tags")]).alias("studies"),
            col("id").alias("ids"),
            col("score").sum().alias("total"),
        ])
        .collect()
        .unwrap();
        // A row whose lists are null, not empty.
        let schema = studies.schema().clone();
        let nulls = df!("domain" => ["e.com"], "total" => [0i64]).unwrap().lazy().select([
            col("domain"),
            lit(NULL).cast(schema.get("studies").unwrap().clone()).alias("studies"),
            lit(NULL).cast(schema.get("ids").unwrap().clone()).alias("ids"),
            col("total"),
        ]);
        concat([studies.lazy(), nulls], Default::default()).unwrap().collect().unwrap()
    }

    #[test]
    fn a_left_join_on_a_unique_key_equals_polars_left_join() {
        let left = df!(
            "domain" => [Some("d.com"), Some("b.com"), Some("a.com"), None, Some("e.com"), Some("a.com"), Some("c.com")],
            "n" => [1, 2, 3, 4, 5, 6, 7],
        )
        .unwrap();
        let right = right();
        let polars = left
            .clone()
            .lazy()
            .join(
                right.clone().lazy(),
                [col("domain")],
                [col("domain")],
                JoinArgs { maintain_order: MaintainOrderJoin::Left, ..JoinArgs::new(JoinType::Left) },
            )
            .collect()
            .unwrap();
        let ours = left_join_unique(left.clone(), &right, &["domain"], &["domain"], false).unwrap();
        assert_eq!(ours.get_column_names(), polars.get_column_names());
        assert!(ours.equals_missing(&polars), "{ours}\n{polars}");
        // The gathered lists are lists of the rows asked for: d.com's three studies first.
        let first = ours.column("studies").unwrap().list().unwrap().get_as_series(0).unwrap();
        assert_eq!(first.len(), 3);
        assert!(ours.column("studies").unwrap().get(1).unwrap().is_null(), "b.com has no row");

        // A key held twice falls back to Polars' join (rows multiplied as it multiplies them).
        let twice =
            concat([right.clone().lazy(), right.clone().lazy()], Default::default()).unwrap().collect().unwrap();
        let joined = left_join_unique(left.clone(), &twice, &["domain"], &["domain"], false).unwrap();
        assert_eq!(joined.height(), 12);

        // Nulls that join (the case studies' keys): a null key finds the null key's row.
        let keyed = df!("k" => [None, Some("a.com")], "v" => [1, 2]).unwrap();
        let joined = left_join_unique(left, &keyed, &["domain"], &["k"], true).unwrap();
        let v: Vec<Option<i32>> = joined.column("v").unwrap().i32().unwrap().iter().collect();
        assert_eq!(v, [None, None, Some(2), Some(1), None, Some(2), None]);
    }

    #[test]
    fn gathering_a_list_column_keeps_its_type_and_nulls() {
        let right = right();
        let rows = IdxCa::new("rows".into(), [Some(3u32), None, Some(0), Some(2), Some(3), Some(1)]);
        for name in ["studies", "ids"] {
            let list = right.column(name).unwrap().as_materialized_series().list().unwrap().clone();
            let ours = gather_list(&list, &rows).unwrap();
            let polars = list.take(&rows).unwrap().into_series();
            assert_eq!(ours.dtype(), polars.dtype());
            assert!(ours.equals_missing(&polars), "{name}: {ours}\n{polars}");
        }
        let list = right.column("ids").unwrap().as_materialized_series().list().unwrap().clone();
        assert!(gather_list(&list, &IdxCa::new("rows".into(), [Some(99u32)])).is_err(), "a row past the end");
    }
}
