//! Arrow record batches from typed rows, and Parquet bytes from batches.
//!
//! The fetch layer's tables (normalized module rows, the ledger, raw bodies)
//! are written with arrow-rs + parquet; Polars and DuckDB read the files.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::StoreError;

/// Builds a batch column by column; every column must have the same length.
#[derive(Default)]
pub struct TableBuilder {
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
}

impl TableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, name: &str, data_type: DataType, array: ArrayRef) -> Self {
        self.fields.push(Field::new(name, data_type, true));
        self.columns.push(array);
        self
    }

    pub fn text<I, S>(self, name: &str, values: I) -> Self
    where
        I: IntoIterator<Item = Option<S>>,
        S: AsRef<str>,
    {
        let array: StringArray = values.into_iter().collect();
        self.push(name, DataType::Utf8, Arc::new(array))
    }

    pub fn float(self, name: &str, values: impl IntoIterator<Item = Option<f64>>) -> Self {
        let array: Float64Array = values.into_iter().collect();
        self.push(name, DataType::Float64, Arc::new(array))
    }

    pub fn int(self, name: &str, values: impl IntoIterator<Item = Option<i64>>) -> Self {
        let array: Int64Array = values.into_iter().collect();
        self.push(name, DataType::Int64, Arc::new(array))
    }

    pub fn boolean(self, name: &str, values: impl IntoIterator<Item = Option<bool>>) -> Self {
        let array: BooleanArray = values.into_iter().collect();
        self.push(name, DataType::Boolean, Arc::new(array))
    }

    /// Timestamps in milliseconds, stored with the UTC zone (every time in the store is UTC):
    /// pandas, pyarrow and DuckDB read them as zoned instants, not wall-clock times.
    pub fn timestamp_ms(self, name: &str, values: impl IntoIterator<Item = Option<i64>>) -> Self {
        let array = values.into_iter().collect::<TimestampMillisecondArray>().with_timezone(UTC);
        self.push(name, DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())), Arc::new(array))
    }

    /// Calendar dates (Arrow `Date32`, Parquet `DATE`).
    pub fn date(self, name: &str, values: impl IntoIterator<Item = Option<chrono::NaiveDate>>) -> Self {
        let array: Date32Array = values.into_iter().map(|d| d.map(days_since_epoch)).collect();
        self.push(name, DataType::Date32, Arc::new(array))
    }

    pub fn finish(self) -> Result<RecordBatch, StoreError> {
        RecordBatch::try_new(Arc::new(Schema::new(self.fields)), self.columns)
            .map_err(|e| StoreError::Encode(e.to_string()))
    }
}

/// The zone every stored timestamp carries.
pub const UTC: &str = "UTC";

/// A date as Arrow's `Date32`: days since 1970-01-01.
pub fn days_since_epoch(date: chrono::NaiveDate) -> i32 {
    // Dates within ±5.8 million years fit; every date the engine reads does.
    i32::try_from((date - chrono::NaiveDate::default()).num_days()).unwrap_or(i32::MAX)
}

/// The date of a `Date32` value.
pub fn epoch_days_date(days: i32) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::default().checked_add_signed(chrono::Duration::days(i64::from(days)))
}

/// A date column's values: `Date32`, or `YYYY-MM-DD` text as snapshots written
/// before dates were typed hold it. `None` when the column is missing or of another type.
pub fn date_values(batch: &RecordBatch, name: &str) -> Option<Vec<Option<chrono::NaiveDate>>> {
    use arrow::array::Array;
    let column = batch.column_by_name(name)?;
    if let Some(days) = column.as_any().downcast_ref::<Date32Array>() {
        return Some(days.iter().map(|d| d.and_then(epoch_days_date)).collect());
    }
    let text = column.as_any().downcast_ref::<StringArray>()?;
    Some(
        (0..text.len())
            .map(|i| {
                (!text.is_null(i)).then(|| chrono::NaiveDate::parse_from_str(text.value(i), "%Y-%m-%d").ok()).flatten()
            })
            .collect(),
    )
}

/// A short fingerprint of a schema's fields (names, types, nullability), over a
/// spelling of our own: an arrow upgrade that prints types differently must not
/// change it (a changed fingerprint stops carry-forward and re-pays every module).
pub fn schema_fingerprint(schema: &Schema) -> String {
    let spelled: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}:{}", f.name(), spell(f.data_type()), if f.is_nullable() { "null" } else { "required" }))
        .collect();
    crate::config::sha256_hex(spelled.join("\n").as_bytes())[..16].to_string()
}

/// The fingerprint manifests written before `schema_fingerprint` had its own
/// spelling hold (arrow's `Debug` of the fields); still accepted so those stores keep carrying.
pub fn legacy_schema_fingerprint(schema: &Schema) -> String {
    crate::config::sha256_hex(format!("{:?}", schema.fields()).as_bytes())[..16].to_string()
}

/// The columns stored as dates (text before dates were typed).
pub const DATE_COLUMNS: [&str; 3] = ["fetched_on", "posted_at", "published"];

/// Whether a stored table's fingerprint is this build's schema, or the same table as
/// written before timestamps carried the UTC zone and dates were typed (its rows are
/// read through [`upgrade_batch`]).
pub fn same_table(stored: &str, schema: &Schema) -> bool {
    let before_added = Schema::new(
        schema.fields().iter().filter(|f| !ADDED_COLUMNS.contains(&f.name().as_str())).cloned().collect::<Vec<_>>(),
    );
    [schema.clone(), before_added].iter().any(|schema| {
        let earlier = earlier_form(schema);
        [
            schema_fingerprint(schema),
            legacy_schema_fingerprint(schema),
            schema_fingerprint(&earlier),
            legacy_schema_fingerprint(&earlier),
        ]
        .iter()
        .any(|f| f == stored)
    })
}

/// Columns added to carried tables since stores were first written (`raw_responses.page`,
/// with paged answers; `related_domains.first_seen` / `last_seen`, for families;
/// `company.redirects_to`, for renamed domains): a stored table without them is still
/// the same table, its rows read through [`conform`].
pub const ADDED_COLUMNS: [&str; 4] = ["page", "first_seen", "last_seen", "redirects_to"];

/// A stored batch in the columns of `schema`, in its order: an added column the
/// batch lacks is filled (`page` with 1: each stored body was a whole answer; any
/// other with nulls).
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, StoreError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => Ok(column.clone()),
            None if field.name() == "page" && field.data_type() == &DataType::Int64 => {
                Ok(Arc::new(Int64Array::from(vec![1; rows])) as ArrayRef)
            }
            None if field.is_nullable() => Ok(arrow::array::new_null_array(field.data_type(), rows)),
            None => Err(StoreError::Encode(format!("a stored table has no column {}", field.name()))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| StoreError::Encode(e.to_string()))
}

/// A schema as the store wrote it before: zone-less timestamps, dates as text.
fn earlier_form(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(unit, Some(_)) => f.as_ref().clone().with_data_type(DataType::Timestamp(*unit, None)),
            DataType::Date32 if DATE_COLUMNS.contains(&f.name().as_str()) => {
                f.as_ref().clone().with_data_type(DataType::Utf8)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new(fields)
}

/// A stored batch in this build's form: zone-less timestamps get the UTC zone (they
/// always were UTC), date text becomes `Date32` (through [`crate::modules::calendar_date`]).
pub fn upgrade_batch(batch: RecordBatch) -> Result<RecordBatch, StoreError> {
    use arrow::array::{Array, TimestampMillisecondArray as Ms};
    let schema = batch.schema();
    let needs = schema.fields().iter().any(|f| {
        matches!(f.data_type(), DataType::Timestamp(_, None))
            || (f.data_type() == &DataType::Utf8 && DATE_COLUMNS.contains(&f.name().as_str()))
    });
    if !needs {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                let Some(times) = column.as_any().downcast_ref::<Ms>() else {
                    return Err(StoreError::Encode(format!("column {} is not a timestamp", field.name())));
                };
                columns.push(Arc::new(times.clone().with_timezone(UTC)));
                fields.push(
                    field.as_ref().clone().with_data_type(DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into()))),
                );
            }
            DataType::Utf8 if DATE_COLUMNS.contains(&field.name().as_str()) => {
                let Some(text) = column.as_any().downcast_ref::<StringArray>() else {
                    return Err(StoreError::Encode(format!("column {} is not text", field.name())));
                };
                let days: Date32Array = (0..text.len())
                    .map(|i| {
                        (!text.is_null(i))
                            .then(|| crate::modules::calendar_date(text.value(i)).map(days_since_epoch))
                            .flatten()
                    })
                    .collect();
                columns.push(Arc::new(days));
                fields.push(field.as_ref().clone().with_data_type(DataType::Date32));
            }
            _ => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| StoreError::Encode(e.to_string()))
}

fn spell(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 => "utf8".into(),
        DataType::LargeUtf8 => "large_utf8".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "float64".into(),
        DataType::Boolean => "bool".into(),
        DataType::Date32 => "date32".into(),
        DataType::Timestamp(unit, zone) => {
            let unit = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            format!("timestamp[{unit}, {}]", zone.as_deref().unwrap_or("none"))
        }
        DataType::List(item) | DataType::LargeList(item) => format!("list<{}>", spell(item.data_type())),
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields.iter().map(|f| format!("{}: {}", f.name(), spell(f.data_type()))).collect();
            format!("struct<{}>", inner.join(", "))
        }
        // Types the fetch layer never writes: named, so they still tell schemas apart.
        other => format!("other[{other}]"),
    }
}

/// How every Parquet file of the store is written (zstd).
pub fn writer_properties() -> Result<WriterProperties, StoreError> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| StoreError::Encode(e.to_string()))?))
        .build())
}

/// Encodes a batch as one Parquet file (zstd).
pub fn to_parquet(batch: &RecordBatch) -> Result<Bytes, StoreError> {
    let props = writer_properties()?;
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(props))
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    writer.write(batch).map_err(|e| StoreError::Encode(e.to_string()))?;
    writer.close().map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_table_without_a_column_added_since_is_the_same_table_and_gets_it() {
        let now = TableBuilder::new()
            .text("domain", [Some("a.com")])
            .int("page", [Some(2)])
            .text("body", [Some("{}")])
            .finish()
            .unwrap();
        let before = TableBuilder::new().text("domain", [Some("a.com")]).text("body", [Some("{}")]).finish().unwrap();
        assert!(same_table(&schema_fingerprint(&before.schema()), &now.schema()), "raw bodies stored before pages");
        let other = TableBuilder::new().text("domain", [Some("a.com")]).finish().unwrap();
        assert!(!same_table(&schema_fingerprint(&other.schema()), &now.schema()));
        let conformed = conform(before, &now.schema()).unwrap();
        assert_eq!(conformed.schema(), now.schema());
        let pages = conformed.column_by_name("page").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(pages.value(0), 1, "a body stored before pages was a whole answer");
    }

    #[test]
    fn the_fingerprint_is_spelled_by_the_project_and_tells_schemas_apart() {
        let batch = TableBuilder::new()
            .text("domain", [Some("a.com")])
            .int("visits", [Some(1)])
            .timestamp_ms("fetched_at", [Some(0)])
            .finish()
            .unwrap();
        // The spelling is ours, pinned here: it may only change on purpose.
        let spelled = "domain:utf8:null\nvisits:int64:null\nfetched_at:timestamp[ms, UTC]:null";
        assert_eq!(schema_fingerprint(&batch.schema()), crate::config::sha256_hex(spelled.as_bytes())[..16]);
        // What the same table was before timestamps carried their zone: still the same table.
        let earlier = "domain:utf8:null\nvisits:int64:null\nfetched_at:timestamp[ms, none]:null";
        assert!(same_table(&crate::config::sha256_hex(earlier.as_bytes())[..16], &batch.schema()));
        assert!(same_table("bc0364efac6233a5", &batch.schema()));
        let other = TableBuilder::new().text("domain", [Some("a.com")]).float("visits", [Some(1.0)]).finish().unwrap();
        assert_ne!(schema_fingerprint(&batch.schema()), schema_fingerprint(&other.schema()));
    }

    #[test]
    fn rows_stored_before_times_were_zoned_and_dates_typed_read_in_this_builds_types() {
        use arrow::array::Array;
        let old = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("domain", DataType::Utf8, true),
                Field::new("published", DataType::Utf8, true),
                Field::new("fetched_on", DataType::Utf8, true),
                Field::new("fetched_at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![Some("a.com"), Some("b.com"), Some("c.com")])),
                Arc::new(StringArray::from(vec![
                    Some("Mon, 02 Nov 2026 09:00:00 GMT"),
                    Some("2026-11-03T23:30:00-05:00"),
                    None,
                ])),
                Arc::new(StringArray::from(vec![Some("2026-11-23"), Some("2026-11-24"), Some("not a date")])),
                Arc::new(TimestampMillisecondArray::from(vec![Some(1_700_000_000_000), None, Some(0)])),
            ],
        )
        .unwrap();
        let new = TableBuilder::new()
            .text("domain", [Some("a.com")])
            .date("published", [None])
            .date("fetched_on", [None])
            .timestamp_ms("fetched_at", [None])
            .finish()
            .unwrap();
        // The earlier shape counts as this table: its rows are carried, not fetched again.
        assert!(same_table(&schema_fingerprint(&old.schema()), &new.schema()));
        let up = upgrade_batch(old).unwrap();
        assert_eq!(up.schema(), new.schema());
        let dates = date_values(&up, "published").unwrap();
        let day = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d);
        // RFC 2822 as RSS writes it; RFC 3339 with an offset falls on the next UTC day.
        assert_eq!(dates, vec![day(2026, 11, 2), day(2026, 11, 4), None]);
        assert_eq!(date_values(&up, "fetched_on").unwrap(), vec![day(2026, 11, 23), day(2026, 11, 24), None]);
        let times = up.column_by_name("fetched_at").unwrap();
        let times = times.as_any().downcast_ref::<TimestampMillisecondArray>().unwrap();
        assert_eq!((times.value(0), times.is_null(1), times.value(2)), (1_700_000_000_000, true, 0));
        // A batch already in this build's form is returned as it is.
        assert_eq!(upgrade_batch(up.clone()).unwrap(), up);
    }
}
