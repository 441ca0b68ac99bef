//! Query results as an analyst takes them: an aligned table, CSV, a JSON array,
//! JSON lines, or a Parquet file.
//!
//! Everything goes through DuckDB's Arrow results and arrow-rs' writers — never
//! values converted by hand — so a DECIMAL stays exact, a TIME or an INTERVAL is
//! spelled as such, a float reads back equal, and every column of the SELECT is
//! kept in its order. Two columns of one name (`SELECT a.domain, b.domain`) are
//! told apart in JSON as DuckDB names them in a table: `domain`, `domain_1`.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// How a result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for reading (the default on a terminal).
    Table,
    /// RFC 4180 CSV with a header row (the default when stdout is not a terminal).
    Csv,
    /// One JSON array of objects, columns in the SELECT's order.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet (with `--out FILE.parquet`).
    Parquet,
}

impl Format {
    /// The format a file name asks for by its extension.
    pub fn of_path(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            "parquet" => Some(Self::Parquet),
            "txt" => Some(Self::Table),
            _ => None,
        }
    }
}

/// A query's result: its schema (known even with no rows) and its batches.
pub struct Output {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing the result: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("writing the result as Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("writing the result: {0}")]
    Io(#[from] std::io::Error),
}

impl Output {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Writes the result in `format`.
    pub fn write(&self, format: Format, out: &mut impl Write) -> Result<(), OutputError> {
        match format {
            Format::Table => out.write_all(self.table(60)?.as_bytes())?,
            Format::Csv => self.csv(out)?,
            Format::Json => {
                let mut writer = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::JsonArray>(&mut *out);
                if self.rows() == 0 {
                    drop(writer);
                    out.write_all(b"[]")?;
                } else {
                    for batch in self.for_json()? {
                        writer.write(&batch)?;
                    }
                    writer.finish()?;
                }
                out.write_all(b"\n")?;
            }
            Format::Jsonl => {
                let mut writer = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut *out);
                for batch in self.for_json()? {
                    writer.write(&batch)?;
                }
                writer.finish()?;
            }
            Format::Parquet => {
                let batches = self.for_parquet()?;
                let schema = batches.first().map(RecordBatch::schema).unwrap_or_else(|| plain_schema(&self.schema));
                let props =
                    crate::store::table::writer_properties().map_err(|e| std::io::Error::other(e.to_string()))?;
                let mut writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, Some(props))?;
                for batch in &batches {
                    writer.write(batch)?;
                }
                out.write_all(&writer.into_inner()?)?;
            }
        }
        Ok(())
    }

    /// Aligned columns, each at most `width` characters (longer cells end in `…`),
    /// numbers to the right, then the row count.
    pub fn table(&self, width: usize) -> Result<String, OutputError> {
        let names: Vec<String> = self.schema.fields().iter().map(|f| f.name().clone()).collect();
        let numeric: Vec<bool> = self.schema.fields().iter().map(|f| f.data_type().is_numeric()).collect();
        let mut cells: Vec<Vec<String>> = Vec::new();
        let options = FormatOptions::default().with_null("");
        for batch in &self.batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()?;
            for row in 0..batch.num_rows() {
                cells.push(
                    formatters.iter().map(|f| f.value(row).to_string().replace(['\n', '\r', '\t'], " ")).collect(),
                );
            }
        }
        let widths: Vec<usize> = names
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells.iter().map(|r| r[i].chars().count()).chain([c.chars().count()]).max().unwrap_or(0).min(width)
            })
            .collect();
        let line = |values: &[String], align_numbers: bool| {
            let padded: Vec<String> = values
                .iter()
                .zip(&widths)
                .zip(&numeric)
                .map(|((v, w), number)| {
                    let v: String =
                        if v.chars().count() > *w { v.chars().take(w - 1).chain(['…']).collect() } else { v.clone() };
                    if align_numbers && *number { format!("{v:>w$}") } else { format!("{v:<w$}") }
                })
                .collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let mut out = line(&names, false);
        out.push_str(&line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(), false));
        for row in &cells {
            out.push_str(&line(row, true));
        }
        out.push_str(&format!("({} row{})\n", cells.len(), if cells.len() == 1 { "" } else { "s" }));
        Ok(out)
    }

    fn csv(&self, out: &mut impl Write) -> Result<(), OutputError> {
        let batches = self.convert(|t| !csv_writes(t))?;
        let schema = batches.first().map(RecordBatch::schema).unwrap_or_else(|| plain_schema(&self.schema));
        // The header from the schema, so an empty result still names its columns.
        let mut header = csv::Writer::from_writer(Vec::new());
        header.write_record(schema.fields().iter().map(|f| f.name())).map_err(std::io::Error::other)?;
        out.write_all(&header.into_inner().map_err(|e| std::io::Error::other(e.to_string()))?)?;
        let mut writer = arrow::csv::WriterBuilder::new().with_header(false).build(&mut *out);
        for batch in &batches {
            writer.write(batch)?;
        }
        Ok(())
    }

    /// Batches with unique column names and only types arrow-json writes.
    fn for_json(&self) -> Result<Vec<RecordBatch>, OutputError> {
        let batches = self.convert(|t| !json_writes(t))?;
        batches.into_iter().map(unique_names).collect()
    }

    fn for_parquet(&self) -> Result<Vec<RecordBatch>, OutputError> {
        let batches = self.convert(|t| !parquet_writes(t))?;
        batches.into_iter().map(unique_names).collect()
    }

    /// Every column whose type `spell` says needs it becomes text, as DuckDB shows it
    /// (dictionaries become their values).
    fn convert(&self, spell: impl Fn(&DataType) -> bool) -> Result<Vec<RecordBatch>, OutputError> {
        let options = FormatOptions::default().with_null("");
        self.batches
            .iter()
            .map(|batch| {
                let mut fields = Vec::with_capacity(batch.num_columns());
                let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
                for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                    let column = match column.data_type() {
                        DataType::Dictionary(_, value) => arrow::compute::cast(column, value)?,
                        _ => column.clone(),
                    };
                    if spell(column.data_type()) {
                        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
                        let text: StringArray = (0..column.len())
                            .map(|i| (!column.is_null(i)).then(|| formatter.value(i).to_string()))
                            .collect();
                        fields.push(Field::new(field.name(), DataType::Utf8, true));
                        columns.push(Arc::new(text));
                    } else {
                        fields.push(field.as_ref().clone().with_data_type(column.data_type().clone()));
                        columns.push(column);
                    }
                }
                Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
            })
            .collect()
    }
}

/// The schema with dictionaries as their values (for an empty result's header).
fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => f.as_ref().clone().with_data_type(value.as_ref().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Column names made unique the way DuckDB makes them in a table: `x`, `x_1`, `x_2`.
fn unique_names(batch: RecordBatch) -> Result<RecordBatch, OutputError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut changed = false;
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let mut name = f.name().clone();
            let mut n = 0;
            while !seen.insert(name.clone()) {
                n += 1;
                name = format!("{}_{n}", f.name());
                changed = true;
            }
            f.as_ref().clone().with_name(name)
        })
        .collect();
    if !changed {
        return Ok(batch);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec())?)
}

fn csv_writes(t: &DataType) -> bool {
    use DataType as D;
    t.is_primitive() && !matches!(t, D::Interval(_) | D::Duration(_))
        || matches!(t, D::Boolean | D::Utf8 | D::LargeUtf8 | D::Utf8View | D::Null)
}

fn json_writes(t: &DataType) -> bool {
    use DataType as D;
    match t {
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => json_writes(f.data_type()),
        D::Struct(fields) => fields.iter().all(|f| json_writes(f.data_type())),
        D::Map(entries, _) => json_writes(entries.data_type()),
        D::Interval(_) | D::Duration(_) | D::Time32(_) | D::Time64(_) | D::Binary | D::LargeBinary | D::BinaryView => {
            false
        }
        D::FixedSizeBinary(_) | D::Dictionary(..) | D::Union(..) => false,
        _ => true,
    }
}

fn parquet_writes(t: &DataType) -> bool {
    use DataType as D;
    match t {
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => parquet_writes(f.data_type()),
        D::Struct(fields) => fields.iter().all(|f| parquet_writes(f.data_type())),
        D::Map(entries, _) => parquet_writes(entries.data_type()),
        D::Interval(_) | D::Duration(_) | D::Union(..) | D::Dictionary(..) => false,
        _ => true,
    }
}
