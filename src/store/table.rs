//! Arrow record batches from typed rows, and Parquet bytes from batches.
//!
//! The fetch layer's tables (normalized module rows, the ledger, raw bodies)
//! are written with arrow-rs + parquet; Polars and DuckDB read the files.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
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

    /// Timestamps in UTC, milliseconds (stored without a zone: every time in the store is UTC).
    pub fn timestamp_ms(self, name: &str, values: impl IntoIterator<Item = Option<i64>>) -> Self {
        let array: TimestampMillisecondArray = values.into_iter().collect();
        self.push(name, DataType::Timestamp(TimeUnit::Millisecond, None), Arc::new(array))
    }

    pub fn finish(self) -> Result<RecordBatch, StoreError> {
        RecordBatch::try_new(Arc::new(Schema::new(self.fields)), self.columns)
            .map_err(|e| StoreError::Encode(e.to_string()))
    }
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
    fn the_fingerprint_is_spelled_by_the_project_and_tells_schemas_apart() {
        let batch = TableBuilder::new()
            .text("domain", [Some("a.com")])
            .int("visits", [Some(1)])
            .timestamp_ms("fetched_at", [Some(0)])
            .finish()
            .unwrap();
        // The spelling is ours, pinned here: it may only change on purpose.
        let spelled = "domain:utf8:null\nvisits:int64:null\nfetched_at:timestamp[ms, none]:null";
        assert_eq!(schema_fingerprint(&batch.schema()), crate::config::sha256_hex(spelled.as_bytes())[..16]);
        assert_eq!(schema_fingerprint(&batch.schema()), "bc0364efac6233a5");
        let other = TableBuilder::new().text("domain", [Some("a.com")]).float("visits", [Some(1.0)]).finish().unwrap();
        assert_ne!(schema_fingerprint(&batch.schema()), schema_fingerprint(&other.schema()));
    }
}
