//! A Parquet file written a row group at a time with its columns encoded on every core.
//!
//! arrow-rs's `ArrowWriter` encodes a row group's columns one after another on the
//! calling thread; the targets table (a struct of 24 structs, lists of structs) spent a
//! quarter of a full recompute there while the other core waited. Here a row group's
//! batches are held until it ends, then each top-level column's leaves are encoded by
//! whichever thread is free, and the chunks appended in the schema's order: the same
//! pages, row groups and footer as `ArrowWriter` writes (a test compares the bytes).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The cores this process may run on (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` of each index `0..items` on up to `threads` threads (the caller's among them), each
/// taking the next index when it is free; the results in index order. `None` for an index
/// whose thread panicked.
pub fn each_on_threads<T: Send>(items: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<Option<T>> {
    each_on_threads_with(items, threads, || (), |(), i| f(i))
}

/// [`each_on_threads`], each thread with a state of its own made by `state` on that thread
/// (a connection, a buffer) and handed to `f` with every index it takes.
pub fn each_on_threads_with<S, T: Send>(
    items: usize,
    threads: usize,
    state: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) -> T + Sync,
) -> Vec<Option<T>> {
    let slots: Vec<Mutex<Option<T>>> = (0..items).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut state = state();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(i) else { return };
            // A panic leaves its slot empty; the other indices are still done.
            let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut state, i))).ok();
            if let Ok(mut slot) = slot.lock() {
                *slot = value;
            }
        }
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads.min(items)).map(|_| scope.spawn(work)).collect();
        work();
        for other in others {
            let _ = other.join();
        }
    });
    slots.into_iter().map(|slot| slot.into_inner().ok().flatten()).collect()
}

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::KeyValue;
use parquet::file::writer::SerializedFileWriter;

pub struct ParallelWriter<W: std::io::Write + Send> {
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// Per top-level column, how many Parquet columns (leaves) it has; a column's leaves
    /// follow the previous column's.
    leaves: Vec<usize>,
    /// The rows a row group holds at most (the properties' limit).
    max_rows: usize,
    /// The threads that encode a row group's columns.
    threads: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

impl<W: std::io::Write + Send> ParallelWriter<W> {
    /// Takes over an `ArrowWriter` that has written nothing (its schema and properties).
    pub fn new(writer: ArrowWriter<W>, schema: SchemaRef) -> Result<Self> {
        let (file, factory) = writer.into_serialized_writer()?;
        let descr = file.schema_descr();
        let mut leaves = vec![0; schema.fields().len()];
        for leaf in 0..descr.num_columns() {
            let root = descr.get_column_root_idx(leaf);
            *leaves
                .get_mut(root)
                .ok_or_else(|| ParquetError::General(format!("column {leaf} has no field {root} in the schema")))? += 1;
        }
        let max_rows = file.properties().max_row_group_row_count().unwrap_or(usize::MAX).max(1);
        let threads = cores().min(leaves.len()).max(1);
        Ok(Self { file, factory, schema, leaves, max_rows, threads, pending: Vec::new(), pending_rows: 0 })
    }

    /// The rows written since the last row group ended.
    pub fn in_progress_rows(&self) -> usize {
        self.pending_rows
    }

    pub fn append_key_value_metadata(&mut self, kv: KeyValue) {
        self.file.append_key_value_metadata(kv);
    }

    /// Adds a batch to the row group in progress (which ends at the properties' row limit,
    /// as `ArrowWriter`'s does).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(ParquetError::General(format!(
                "a batch of another schema than the file's: {:?}, not {:?}",
                batch.schema().fields().iter().map(|f| f.name()).collect::<Vec<_>>(),
                self.schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
            )));
        }
        let mut batch = batch.clone();
        while batch.num_rows() > 0 {
            let room = self.max_rows - self.pending_rows;
            let take = batch.num_rows().min(room);
            self.pending.push(batch.slice(0, take));
            self.pending_rows += take;
            batch = batch.slice(take, batch.num_rows() - take);
            if self.pending_rows >= self.max_rows {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Ends the row group in progress: its columns encoded in parallel, then written.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        let mut writers = self.factory.create_column_writers(self.file.flushed_row_groups().len())?.into_iter();
        // Each top-level column's writers, taken by one thread.
        let mut columns: Vec<Mutex<Vec<ArrowColumnWriter>>> = Vec::with_capacity(self.leaves.len());
        for count in &self.leaves {
            columns.push(Mutex::new(writers.by_ref().take(*count).collect()));
        }
        let encode = |c: usize| -> Result<Vec<ArrowColumnChunk>> {
            let field = &self.schema.fields()[c];
            let mut writers = std::mem::take(
                &mut *columns[c].lock().map_err(|_| ParquetError::General("a column writer's lock".into()))?,
            );
            for batch in &batches {
                let leaves = compute_leaves(field, batch.column(c))?;
                if leaves.len() != writers.len() {
                    return Err(ParquetError::General(format!(
                        "column {}: {} leaves, {} Parquet columns",
                        field.name(),
                        leaves.len(),
                        writers.len()
                    )));
                }
                for (writer, leaf) in writers.iter_mut().zip(&leaves) {
                    writer.write(leaf)?;
                }
            }
            writers.into_iter().map(ArrowColumnWriter::close).collect()
        };
        // Every column encoded (or the first error) before the row group begins.
        let chunks = each_on_threads(columns.len(), self.threads, encode)
            .into_iter()
            .map(|chunks| chunks.ok_or_else(|| ParquetError::General("a column was not encoded".into()))?)
            .collect::<Result<Vec<_>>>()?;
        let mut row_group = self.file.next_row_group()?;
        for chunk in chunks.into_iter().flatten() {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        Ok(())
    }

    /// Ends the last row group and writes the footer.
    pub fn close(mut self) -> Result<()> {
        self.flush()?;
        self.file.close().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Array, ArrayRef, Int64Array, ListArray, StringArray, StructArray};
    use arrow::datatypes::{DataType, Field, Fields, Int64Type, Schema};

    fn batch(rows: usize, from: usize) -> RecordBatch {
        let names: StringArray = (from..from + rows).map(|i| (i % 7 != 3).then(|| format!("domain-{i}"))).collect();
        let numbers: Int64Array = (from..from + rows).map(|i| (i % 5 != 0).then_some(i as i64 * 31)).collect();
        let lists = ListArray::from_iter_primitive::<Int64Type, _, _>(
            (from..from + rows).map(|i| (i % 4 != 1).then(move || (0..i % 3).map(move |k| Some((i + k) as i64)))),
        );
        let inner = Fields::from(vec![Field::new("n", DataType::Int64, true), Field::new("s", DataType::Utf8, true)]);
        let structs = StructArray::new(
            inner.clone(),
            vec![Arc::new(numbers.clone()) as ArrayRef, Arc::new(names.clone()) as ArrayRef],
            None,
        );
        let schema = Schema::new(vec![
            Field::new("domain", DataType::Utf8, true),
            Field::new("number", DataType::Int64, true),
            Field::new("list", lists.data_type().clone(), true),
            Field::new("struct", DataType::Struct(inner), true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(names), Arc::new(numbers), Arc::new(lists), Arc::new(structs)],
        )
        .unwrap()
    }

    fn properties() -> parquet::file::properties::WriterProperties {
        parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .set_max_row_group_row_count(Some(1000))
            .build()
    }

    #[test]
    fn each_index_is_done_once_in_order_and_a_panic_is_none() {
        let done = each_on_threads(100, 3, |i| i * 2);
        assert_eq!(done, (0..100).map(|i| Some(i * 2)).collect::<Vec<_>>());
        let done = each_on_threads(5, 2, |i| {
            assert!(i != 3, "index 3 fails");
            i
        });
        assert_eq!(done, [Some(0), Some(1), Some(2), None, Some(4)]);
        assert!(each_on_threads(0, 4, |i| i).is_empty());
    }

    #[test]
    fn the_file_is_the_one_arrow_writer_writes() {
        // Batches that end a row group, share one, and cross the row-group limit.
        let batches = [batch(300, 0), batch(400, 300), batch(2500, 700), batch(10, 3200)];
        let schema = batches[0].schema();
        let kv = KeyValue::new("k".to_string(), "v".to_string());
        let mut expected = Vec::new();
        {
            let mut w = ArrowWriter::try_new(&mut expected, schema.clone(), Some(properties())).unwrap();
            w.append_key_value_metadata(kv.clone());
            for (i, b) in batches.iter().enumerate() {
                w.write(b).unwrap();
                if i == 1 {
                    w.flush().unwrap();
                }
            }
            w.close().unwrap();
        }
        let mut got = Vec::new();
        {
            let inner = ArrowWriter::try_new(&mut got, schema.clone(), Some(properties())).unwrap();
            let mut w = ParallelWriter::new(inner, schema).unwrap();
            w.append_key_value_metadata(kv);
            for (i, b) in batches.iter().enumerate() {
                w.write(b).unwrap();
                if i == 1 {
                    assert_eq!(w.in_progress_rows(), 700);
                    w.flush().unwrap();
                }
            }
            // A batch of other columns is an error, and changes nothing.
            let other = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
                vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
            )
            .unwrap();
            assert!(w.write(&other).is_err());
            w.close().unwrap();
        }
        assert_eq!(got, expected);
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(got)).unwrap();
        // 700 | 1000 1000 500 (the limit) + 10 ... as ArrowWriter cuts them.
        assert_eq!(reader.metadata().num_row_groups(), 4);
        let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 3210);
    }
}
