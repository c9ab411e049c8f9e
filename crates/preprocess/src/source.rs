//! The `staged` table as a stream: the current raw objects are read from the lake and staged on a blocking
//! thread, object after object, while DataFusion consumes the batches. One partition, in input order: the
//! clean task keeps the first row per subject, so order is part of the result.

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use trialflow_core::lake::CurrentObject;
use trialflow_core::{Error, Result, Storage};

use trialflow_core::stage;

/// What staging saw: rows per source (in object order) and the first error, kept whole so that the task
/// reports it as it was raised (DataFusion only carries a message).
#[derive(Debug, Default)]
pub struct StagedTally {
    pub rows_per_object: Vec<(String, u64)>,
    /// Values NFC-composed or stripped of invisible characters.
    pub normalized: u64,
    /// Contract column → the first label a source declared for it.
    pub labels: std::collections::BTreeMap<String, String>,
    pub error: Option<Error>,
}

#[derive(Debug)]
pub struct StagedSource {
    lake: Storage,
    objects: Vec<CurrentObject>,
    columns: Vec<String>,
    schema: SchemaRef,
    limits: stage::StageLimits,
    /// Source name → its missing-value tokens.
    missing: Arc<MissingValues>,
    tally: Arc<Mutex<StagedTally>>,
}

/// Source name → the field texts read as NULL in it.
pub type MissingValues = std::collections::BTreeMap<String, Vec<String>>;

impl StagedSource {
    pub fn table(
        lake: &Storage,
        objects: &[CurrentObject],
        columns: &[String],
        limits: stage::StageLimits,
        missing: MissingValues,
    ) -> Result<(StreamingTable, Arc<Mutex<StagedTally>>)> {
        let schema = stage::staged_schema(columns);
        let tally = Arc::new(Mutex::new(StagedTally::default()));
        let source = Self {
            lake: lake.clone(),
            objects: objects.to_vec(),
            columns: columns.to_vec(),
            schema: schema.clone(),
            limits,
            missing: Arc::new(missing),
            tally: tally.clone(),
        };
        let table = StreamingTable::try_new(schema, vec![Arc::new(source)]).map_err(Error::bug)?;
        Ok((table, tally))
    }
}

type Sender = tokio::sync::mpsc::Sender<std::result::Result<RecordBatch, DataFusionError>>;

async fn produce(
    lake: Storage,
    objects: Vec<CurrentObject>,
    columns: Arc<Vec<String>>,
    limits: stage::StageLimits,
    missing: Arc<MissingValues>,
    tally: Arc<Mutex<StagedTally>>,
    tx: Sender,
) -> Result<()> {
    let mut next_row = 0i64;
    for o in objects {
        let reader = lake.blocking_reader(&o.object).await?;
        let (cols, sender) = (columns.clone(), tx.clone());
        let first = next_row;
        let url = o.url.clone();
        let tokens = missing.get(&o.source).cloned().unwrap_or_default();
        let staged = tokio::task::spawn_blocking(move || {
            let mut emit = |b: RecordBatch| {
                // A closed channel means the consumer stopped (its own error says why).
                sender
                    .blocking_send(Ok(b))
                    .map_err(|_| Error::Internal("the clean task stopped reading".into()))
            };
            stage::stage_object(&o, reader, &cols, first, limits, &tokens, &mut emit)
        })
        .await
        .map_err(|e| Error::Internal(format!("staging: {e}")))??;
        next_row = staged.next_row;
        if let Ok(mut t) = tally.lock() {
            t.rows_per_object.push((url, (next_row - first) as u64));
            t.normalized += staged.normalized;
            for (column, label) in staged.labels {
                t.labels.entry(column).or_insert(label);
            }
        }
    }
    Ok(())
}

impl PartitionStream for StagedSource {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (lake, objects, tally) = (self.lake.clone(), self.objects.clone(), self.tally.clone());
        let columns = Arc::new(self.columns.clone());
        let (limits, missing) = (self.limits, self.missing.clone());
        tokio::spawn(async move {
            let sender = tx.clone();
            if let Err(e) =
                produce(lake, objects, columns, limits, missing, tally.clone(), tx).await
            {
                let message = e.to_string();
                if let Ok(mut t) = tally.lock() {
                    t.error.get_or_insert(e);
                }
                let _ = sender
                    .send(Err(DataFusionError::Execution(format!(
                        "staging: {message}"
                    ))))
                    .await;
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}
