//! Record tables (`dataset.tables`): sources with any number of records per subject (ADaM's ADTTE, BDS
//! datasets such as ADQS or ADLB, ADAE; SDTM domains), joined to the subject table on the subject id.
//!
//! Each table is read twice. The first pass gathers its pivots, the subject table's columns taken from the
//! records (one record's value per subject, or a count of records), which the `staged` view joins to the
//! subject rows. The second, once the subject table is clean, routes every record: to the table's clean file
//! when its subject is in the clean table, else to its quarantine with the reason; records in = accepted +
//! quarantined, checked. Memory: the pivot values per subject, the accepted subjects' keys and the repeated
//! records' places; nothing per record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use trialflow_core::config::{Config, RecordTable, RepeatedIds, Take};
use trialflow_core::contracts::{PivotCount, TableCounts};
use trialflow_core::lake::{self, CurrentObject};
use trialflow_core::table::ParquetSink;
use trialflow_core::{Error, Result, Storage, stage};

use crate::router::{self, QuarantineBuilder};
use crate::source::{MissingValues, StagedSource, StagedTally};
use crate::sql::ident;

/// The view the subject table's SQL reads: the subject rows, each with its pivot columns.
pub const SUBJECT_ROWS: &str = "staged_subjects";
const PIVOTS: &str = "pivots";
const RECORDS: &str = "records";

/// A record table of the contract with the raw objects that hold its records.
pub struct TableInput<'a> {
    pub name: &'a str,
    pub table: &'a RecordTable,
    pub objects: Vec<CurrentObject>,
}

/// The raw objects of the subject table, and each record table with its own.
pub fn split_objects<'a>(
    cfg: &'a Config,
    objects: &[CurrentObject],
) -> (Vec<CurrentObject>, Vec<TableInput<'a>>) {
    let subjects = objects
        .iter()
        .filter(|o| cfg.table_of_source(&o.source).is_none())
        .cloned()
        .collect();
    let tables = cfg
        .dataset
        .tables
        .iter()
        .map(|(name, table)| TableInput {
            name,
            table,
            objects: objects
                .iter()
                .filter(|o| table.sources.contains(&o.source))
                .cloned()
                .collect(),
        })
        .collect();
    (subjects, tables)
}

fn session() -> SessionContext {
    SessionContext::new_with_config(crate::engine::as_written(
        SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(stage::BATCH_ROWS),
    ))
}

fn pivot_key(table: &str, pivot: &str) -> String {
    format!("dataset.tables.{table}.pivot.{pivot}")
}

/// The first pass's statement: lineage, the id columns, then per pivot whether the record matches
/// (`_m<i>`) and, for a value pivot, its value (`_v<i>`).
fn pivot_sql(cfg: &Config, table: &RecordTable) -> String {
    let mut cols = vec![
        "\"_source\"".to_string(),
        "\"_line\"".into(),
        "\"_defect\"".into(),
    ];
    cols.extend(cfg.dataset.id.columns().iter().map(|c| ident(c)));
    for (i, p) in table.pivot.values().enumerate() {
        cols.push(format!("(({}) IS TRUE) AS \"_m{i}\"", p.condition));
        if let Some(v) = &p.value {
            cols.push(format!("{} AS \"_v{i}\"", ident(v)));
        }
        if let Some(o) = &p.order_by {
            cols.push(format!("{} AS \"_o{i}\"", ident(o)));
        }
    }
    format!("SELECT {} FROM {RECORDS}", cols.join(", "))
}

/// Plans every pivot's condition over an empty table of the record table's columns: a condition naming a
/// column the table does not read, or that is not a condition, is an error naming the pivot.
pub async fn check_conditions(cfg: &Config) -> Result<()> {
    for (name, table) in &cfg.dataset.tables {
        let ctx = session();
        let schema = stage::staged_schema(&cfg.table_columns(table));
        let empty = MemTable::try_new(schema, vec![vec![]]).map_err(Error::bug)?;
        ctx.register_table(RECORDS, Arc::new(empty))
            .map_err(Error::bug)?;
        let pivots = table
            .pivot
            .iter()
            .map(|(p, pivot)| (format!("{}.where", pivot_key(name, p)), &pivot.condition));
        let flags = table
            .flags
            .iter()
            .map(|(f, condition)| (format!("dataset.tables.{name}.flags.{f}"), condition));
        for (key, condition) in pivots.chain(flags) {
            let df = ctx
                .sql(&format!("SELECT ({condition}) AS m FROM {RECORDS}"))
                .await
                .map_err(|e| {
                    Error::config(
                        &cfg.source_file,
                        &key,
                        format!(
                            "this condition does not run over the table's columns ({}; a column it reads \
                             must be in `columns`): {e}",
                            cfg.table_columns(table).join(", ")
                        ),
                    )
                })?;
            let t = df.schema().field(0).data_type();
            if t != &DataType::Boolean && t != &DataType::Null {
                return Err(Error::config(
                    &cfg.source_file,
                    &key,
                    format!(
                        "expected a condition, e.g. `PARAMCD = 'TTDE'`; this expression is {t}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What a pivot column holds for one subject.
#[derive(Clone, Debug)]
enum Slot {
    Empty,
    /// The one record's value, and where it is.
    Value(Option<String>, (String, i64)),
    /// The record taken so far by order (`take`), and its order value.
    Taken(Option<String>, String),
    Count(u64),
}

/// `record` is at or before `limit`, two ISO 8601 texts compared on the precision both have (a date-time on a
/// date-only limit's day is at it).
fn at_or_before(record: &str, limit: &str) -> bool {
    let n = record.len().min(limit.len());
    record.as_bytes()[..n] <= limit.as_bytes()[..n]
}

/// One pivot's columns in a batch of the first pass.
struct PivotColumns<'a> {
    matched: BooleanArray,
    value: Option<&'a arrow::array::StringArray>,
    order: Option<&'a arrow::array::StringArray>,
}

/// The subject table's columns that pivots' `before` compare with, per subject id.
#[derive(Default)]
struct SubjectLimits {
    columns: Vec<String>,
    by_subject: HashMap<Vec<String>, Vec<Option<String>>>,
}

impl SubjectLimits {
    /// The subject's value of `column` among `row` (what [`SubjectLimits::row`] gave for it).
    fn get<'a>(&self, row: Option<&'a Vec<Option<String>>>, column: &str) -> Option<&'a str> {
        let i = self.columns.iter().position(|c| c == column)?;
        row?.get(i)?.as_deref()
    }

    fn row(&self, key: &[String]) -> Option<&Vec<Option<String>>> {
        self.by_subject.get(key)
    }
}

/// The pivot columns gathered by the first pass, and the records they found repeated.
#[derive(Default)]
pub struct Pivots {
    /// Every pivot of every table: (column, table, is a count).
    columns: Vec<(String, String, bool)>,
    /// Subject id texts → one slot per pivot column.
    by_subject: HashMap<Vec<String>, Vec<Slot>>,
    /// Per table, the records that repeat a subject's record for a value pivot (`repeated: first`):
    /// (source, line) → the pivot.
    repeats: BTreeMap<String, HashMap<(String, i64), String>>,
    /// Per pivot column: subjects with a matching record, and repeats.
    counts: Vec<(u64, u64)>,
    limits: SubjectLimits,
}

/// The batches of `df`, where a staging error (the file's own defect) wins over the SQL's.
struct Batches<'a> {
    stream: datafusion::physical_plan::SendableRecordBatchStream,
    tally: &'a Mutex<StagedTally>,
    what: &'a str,
}

impl<'a> Batches<'a> {
    async fn new(
        df: datafusion::dataframe::DataFrame,
        tally: &'a Mutex<StagedTally>,
        what: &'a str,
    ) -> Result<Self> {
        let stream = df.execute_stream().await.map_err(|e| internal(what, e))?;
        Ok(Self {
            stream,
            tally,
            what,
        })
    }

    fn staging_error(&self) -> Option<Error> {
        self.tally.lock().ok().and_then(|mut t| t.error.take())
    }

    async fn next(&mut self) -> Result<Option<RecordBatch>> {
        match self.stream.next().await {
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(self
                .staging_error()
                .unwrap_or_else(|| internal(self.what, e))),
            None => match self.staging_error() {
                Some(e) => Err(e),
                None => Ok(None),
            },
        }
    }
}

fn internal(what: &str, e: DataFusionError) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

fn texts(batch: &RecordBatch, i: usize) -> Result<&arrow::array::StringArray> {
    batch
        .column(i)
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::Internal(format!("record table column {i} is not text")))
}

fn stage_table(
    lake: &Storage,
    cfg: &Config,
    input: &TableInput<'_>,
    missing: &MissingValues,
) -> Result<(SessionContext, Arc<Mutex<StagedTally>>)> {
    let limits = stage::StageLimits {
        max_record_bytes: cfg.preprocessing.max_record_bytes,
    };
    let (staged, tally) = StagedSource::table(
        lake,
        &input.objects,
        &cfg.table_columns(input.table),
        limits,
        missing.clone(),
    )?;
    let ctx = session();
    ctx.register_table(RECORDS, Arc::new(staged))
        .map_err(Error::bug)?;
    Ok((ctx, tally))
}

impl Pivots {
    /// The first pass over every record table.
    pub async fn gather(
        cfg: &Config,
        lake: &Storage,
        subjects: &[CurrentObject],
        tables: &[TableInput<'_>],
        missing: &MissingValues,
    ) -> Result<Self> {
        let mut out = Pivots {
            limits: subject_limits(cfg, lake, subjects, missing).await?,
            ..Default::default()
        };
        for input in tables {
            out.gather_table(cfg, lake, input, missing).await?;
        }
        Ok(out)
    }

    async fn gather_table(
        &mut self,
        cfg: &Config,
        lake: &Storage,
        input: &TableInput<'_>,
        missing: &MissingValues,
    ) -> Result<()> {
        let first = self.columns.len();
        for (p, pivot) in &input.table.pivot {
            self.columns
                .push((p.clone(), input.name.to_string(), pivot.count));
            self.counts.push((0, 0));
        }
        let width = self.columns.len();
        for slots in self.by_subject.values_mut() {
            slots.resize(width, Slot::Empty);
        }
        let pivots: Vec<_> = input.table.pivot.iter().collect();
        let (ctx, tally) = stage_table(lake, cfg, input, missing)?;
        let df = ctx.sql(&pivot_sql(cfg, input.table)).await.map_err(|e| {
            Error::config(
                &cfg.source_file,
                format!("dataset.tables.{}.pivot", input.name),
                format!("the pivots' SQL does not run: {e}"),
            )
        })?;
        let ids = cfg.dataset.id.columns().len();
        let what = format!("record table `{}`", input.name);
        let mut batches = Batches::new(df, &tally, &what).await?;
        while let Some(batch) = batches.next().await? {
            let batch = &batch;
            let source = texts(batch, 0)?;
            let line = batch.column(1).as_primitive::<Int64Type>();
            let defect = batch.column(2);
            let id: Vec<_> = (0..ids)
                .map(|k| texts(batch, 3 + k))
                .collect::<Result<_>>()?;
            // Per pivot: its match column and, for a value pivot, its value (and order) column.
            let named = |name: String| -> Result<Option<&arrow::array::StringArray>> {
                match batch.schema().index_of(&name) {
                    Ok(i) => texts(batch, i).map(Some),
                    Err(_) => Ok(None),
                }
            };
            let mut cols = Vec::with_capacity(pivots.len());
            for i in 0..pivots.len() {
                let matched = batch
                    .column_by_name(&format!("_m{i}"))
                    .and_then(|c| c.as_boolean_opt())
                    .ok_or_else(|| Error::Internal(format!("pivot {i} has no match column")))?
                    .clone();
                cols.push(PivotColumns {
                    matched,
                    value: named(format!("_v{i}"))?,
                    order: named(format!("_o{i}"))?,
                });
            }
            for r in 0..batch.num_rows() {
                if defect.is_valid(r) || id.iter().any(|c| c.is_null(r)) {
                    continue; // quarantined by the second pass
                }
                let matched: Vec<usize> = (0..cols.len())
                    .filter(|&j| cols[j].matched.value(r))
                    .collect();
                if matched.is_empty() {
                    continue;
                }
                let key: Vec<String> = id.iter().map(|c| c.value(r).to_string()).collect();
                let here = (source.value(r).to_string(), line.value(r));
                let limits = &self.limits;
                let subject_limits = limits.row(&key);
                let slots = self
                    .by_subject
                    .entry(key)
                    .or_insert_with(|| vec![Slot::Empty; width]);
                for j in matched {
                    let (name, pivot) = pivots[j];
                    let g = first + j;
                    let text = |a: Option<&arrow::array::StringArray>| {
                        a.filter(|a| a.is_valid(r)).map(|a| a.value(r).to_string())
                    };
                    let order = text(cols[j].order);
                    if let (Some(limit), Some(o)) = (&pivot.before, &order)
                        && !limits
                            .get(subject_limits, limit)
                            .is_some_and(|l| at_or_before(o, l))
                    {
                        continue; // after the subject's limit, or the subject has none
                    }
                    let counts = &mut self.counts[g];
                    match (&mut slots[g], pivot.take, pivot.value.is_some()) {
                        (Slot::Count(n), _, _) => *n += 1,
                        (slot @ Slot::Empty, _, false) => {
                            *slot = Slot::Count(1);
                            counts.0 += 1;
                        }
                        (slot @ Slot::Empty, Some(_), true) => {
                            let Some(o) = order else { continue };
                            *slot = Slot::Taken(text(cols[j].value), o);
                            counts.0 += 1;
                        }
                        (Slot::Taken(value, so_far), Some(take), true) => {
                            let Some(o) = order else { continue };
                            // ties: the last record in file order for `last`, the first for `first`
                            let replace = match take {
                                Take::Last => o >= *so_far,
                                Take::First => o < *so_far,
                            };
                            if replace {
                                *value = text(cols[j].value);
                                *so_far = o;
                            }
                        }
                        (slot @ Slot::Empty, None, true) => {
                            *slot = Slot::Value(text(cols[j].value), here.clone());
                            counts.0 += 1;
                        }
                        (Slot::Value(_, earlier), None, true) => {
                            counts.1 += 1;
                            if pivot.repeated == RepeatedIds::Error {
                                return Err(Error::bad_data(
                                    format!(
                                        "{}:{} and {}:{}",
                                        earlier.0, earlier.1, here.0, here.1
                                    ),
                                    format!(
                                        "two records of one subject match pivot `{name}` of table `{}` \
                                         (`{}`): narrow its `where` to one record per subject (an analysis \
                                         flag such as ANL01FL = 'Y'), take the first or last by a column \
                                         (`order_by`, `take`), or set `repeated: first` to keep the first and \
                                         quarantine the others",
                                        input.name, pivot.condition
                                    ),
                                ));
                            }
                            self.repeats
                                .entry(input.name.to_string())
                                .or_default()
                                .entry(here.clone())
                                .or_insert_with(|| name.clone());
                        }
                        _ => return Err(Error::Internal("pivot slot kinds disagree".into())),
                    }
                }
            }
        }
        Ok(())
    }

    /// The pivots as a table: the id columns as `_pk<i>`, then each pivot column as text.
    fn table(&self, cfg: &Config) -> Result<MemTable> {
        let ids = cfg.dataset.id.columns().len();
        let mut fields: Vec<Field> = (0..ids)
            .map(|k| Field::new(format!("_pk{k}"), DataType::Utf8, false))
            .collect();
        fields.extend(
            self.columns
                .iter()
                .map(|(name, _, _)| Field::new(name, DataType::Utf8, true)),
        );
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let mut builders: Vec<StringBuilder> = (0..ids + self.columns.len())
            .map(|_| StringBuilder::new())
            .collect();
        for (key, slots) in &self.by_subject {
            for (k, part) in key.iter().enumerate() {
                builders[k].append_value(part);
            }
            for (g, slot) in slots.iter().enumerate() {
                let b = &mut builders[ids + g];
                match slot {
                    Slot::Empty => b.append_null(),
                    Slot::Value(v, _) | Slot::Taken(v, _) => b.append_option(v.as_deref()),
                    Slot::Count(n) => b.append_value(n.to_string()),
                }
            }
        }
        let arrays: Vec<ArrayRef> = builders
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(Error::bug)?;
        MemTable::try_new(schema, vec![vec![batch]]).map_err(Error::bug)
    }

    /// Registers `staged`: the subject rows of `subjects` (registered as [`SUBJECT_ROWS`]), each with its
    /// pivot columns (a count is 0 where a subject has no record). The pivots are the join's build side, the
    /// subject rows stream past them in their order.
    pub async fn register_staged(&self, cfg: &Config, ctx: &SessionContext) -> Result<()> {
        ctx.register_table(PIVOTS, Arc::new(self.table(cfg)?))
            .map_err(Error::bug)?;
        let on: Vec<String> = cfg
            .dataset
            .id
            .columns()
            .iter()
            .enumerate()
            .map(|(k, c)| format!("p.\"_pk{k}\" = s.{}", ident(c)))
            .collect();
        let pivots: Vec<String> = self
            .columns
            .iter()
            .map(|(name, _, count)| {
                if *count {
                    format!("coalesce(p.{0}, '0') AS {0}", ident(name))
                } else {
                    format!("p.{0} AS {0}", ident(name))
                }
            })
            .collect();
        let mut select = vec!["s.*".to_string()];
        select.extend(pivots);
        let sql = format!(
            "SELECT {} FROM {PIVOTS} p RIGHT JOIN {SUBJECT_ROWS} s ON {}",
            select.join(", "),
            on.join(" AND ")
        );
        let df = ctx
            .sql(&sql)
            .await
            .map_err(|e| Error::Internal(format!("the pivot join: {e}")))?;
        ctx.register_table("staged", df.into_view())
            .map_err(Error::bug)?;
        Ok(())
    }

    /// The repeated records of `table` (quarantined by the second pass).
    fn repeats_of(&self, table: &str) -> Option<&HashMap<(String, i64), String>> {
        self.repeats.get(table)
    }

    /// Per pivot column of `table`: subjects found and repeats.
    fn counts_of(&self, table: &str) -> Vec<PivotCount> {
        self.columns
            .iter()
            .zip(&self.counts)
            .filter(|((_, t, _), _)| t == table)
            .map(|((column, _, _), (subjects, repeats))| PivotCount {
                column: column.clone(),
                subjects: *subjects,
                repeats: *repeats,
            })
            .collect()
    }
}

/// The accepted subjects' keys, as the router keys them.
#[derive(Default)]
pub struct AcceptedSubjects(HashSet<u128>);

impl AcceptedSubjects {
    /// Adds the `subject_id` column of a batch written to the clean table.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let ids = batch
            .column_by_name("subject_id")
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| Error::Internal("the clean table has no text subject_id".into()))?;
        for id in ids.iter().flatten() {
            self.0.insert(router::subject_key(id));
        }
        Ok(())
    }

    fn contains(&self, id: &str) -> bool {
        self.0.contains(&router::subject_key(id))
    }
}

fn clean_schema(columns: &[String], flags: &[String]) -> SchemaRef {
    // nullable: the batch is built before the records without an id are filtered out
    let mut fields = vec![Field::new("subject_id", DataType::Utf8, true)];
    fields.extend(columns.iter().map(|c| Field::new(c, DataType::Utf8, true)));
    fields.extend(flags.iter().map(|f| {
        Field::new(
            trialflow_core::config::flag_column(f),
            DataType::Boolean,
            false,
        )
    }));
    fields.push(Field::new("_source", DataType::Utf8, false));
    fields.push(Field::new("_line", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The rule and reason of a quarantined record (never a value).
const NO_ID: (&str, &str) = ("required", "the record has no subject id");
const NO_SUBJECT: (&str, &str) = (
    "subject",
    "its subject is not in the clean subject table (absent from it, or quarantined or excluded there)",
);

/// What the second pass over the record tables needs from the first and from the subject table.
pub struct SecondPass<'a> {
    pub missing: &'a MissingValues,
    pub pivots: &'a Pivots,
    pub accepted: &'a AcceptedSubjects,
    /// The pseudonymization key.
    pub key: &'a [u8],
}

impl SecondPass<'_> {
    /// Routes every record table and adds its counts, and the pivots' labels, to the clean report.
    pub async fn run(
        &self,
        cfg: &Config,
        lake: &Storage,
        inputs: &[TableInput<'_>],
        report: &mut trialflow_core::contracts::CleanReport,
    ) -> Result<()> {
        for input in inputs {
            report.tables.push(route(cfg, lake, input, self).await?);
        }
        for (column, label) in pivot_labels(cfg) {
            report.labels.entry(column).or_insert(label);
        }
        Ok(())
    }
}

/// The second pass over one record table: each record to its clean file or its quarantine.
async fn route(
    cfg: &Config,
    lake: &Storage,
    input: &TableInput<'_>,
    pass: &SecondPass<'_>,
) -> Result<TableCounts> {
    let SecondPass {
        missing,
        pivots,
        accepted,
        key,
    } = pass;
    let (ctx, tally) = stage_table(lake, cfg, input, missing)?;
    ctx.register_udf(crate::udf::pseudonymize_udf(key.to_vec()));
    let kept: Vec<String> = input
        .table
        .columns
        .iter()
        .filter(|c| !cfg.dataset.id.columns().contains(c))
        .cloned()
        .collect();
    let mut cols = vec![
        format!(
            "{} AS subject_id",
            crate::sql::subject_expr(&cfg.dataset.id)
        ),
        "\"_source\"".into(),
        "\"_line\"".into(),
        "\"_defect\"".into(),
    ];
    cols.extend(kept.iter().map(|c| ident(c)));
    let flags: Vec<String> = input.table.flags.keys().cloned().collect();
    cols.extend(
        input
            .table
            .flags
            .values()
            .enumerate()
            .map(|(i, condition)| format!("(({condition}) IS TRUE) AS \"_f{i}\"")),
    );
    let sql = format!("SELECT {} FROM {RECORDS}", cols.join(", "));
    let df = ctx
        .sql(&sql)
        .await
        .map_err(|e| internal("record table", e))?;
    let schema = clean_schema(&kept, &flags);
    let mut clean = ParquetSink::create(lake, &lake::table_clean_file(input.name), schema.clone())?;
    let mut quarantine = ParquetSink::create(
        lake,
        &lake::table_quarantine_file(input.name),
        router::quarantine_schema(),
    )?;
    let no_repeats = HashMap::new();
    let repeats = pivots.repeats_of(input.name).unwrap_or(&no_repeats);
    let id_label = cfg.dataset.id.label();
    let mut counts = TableCounts {
        table: input.name.to_string(),
        pivots: pivots.counts_of(input.name),
        ..Default::default()
    };
    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    let mut batches = Batches::new(df, &tally, "record table").await?;
    while let Some(batch) = batches.next().await? {
        let batch = &batch;
        let subject = texts(batch, 0)?;
        let source = texts(batch, 1)?;
        let line = batch.column(2).as_primitive::<Int64Type>();
        let defect = texts(batch, 3)?;
        let mut q = QuarantineBuilder::default();
        let mut keep = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let subject_id = subject.is_valid(r).then(|| subject.value(r));
            let place = (source.value(r).to_string(), line.value(r));
            let (column, rule, reason): (&str, &str, String) = if defect.is_valid(r) {
                ("_record", "malformed", defect.value(r).to_string())
            } else if subject_id.is_none() {
                (&id_label, NO_ID.0, NO_ID.1.to_string())
            } else if !subject_id.is_some_and(|s| accepted.contains(s)) {
                (&id_label, NO_SUBJECT.0, NO_SUBJECT.1.to_string())
            } else if let Some(p) = repeats.get(&place) {
                (
                    p,
                    "repeated",
                    format!("a second record of its subject for pivot `{p}` (`repeated: first`)"),
                )
            } else {
                keep.push(true);
                continue;
            };
            keep.push(false);
            *rules.entry(rule.to_string()).or_default() += 1;
            q.push(&place.0, place.1, subject_id, column, rule, &reason);
        }
        let mask = BooleanArray::from(keep);
        let mut arrays: Vec<ArrayRef> = vec![batch.column(0).clone()];
        arrays.extend((0..kept.len() + flags.len()).map(|k| batch.column(4 + k).clone()));
        arrays.push(batch.column(1).clone());
        arrays.push(batch.column(2).clone());
        let all = RecordBatch::try_new(schema.clone(), arrays).map_err(Error::bug)?;
        let accepted = arrow::compute::filter_record_batch(&all, &mask).map_err(Error::bug)?;
        let quarantined = q.take()?;
        counts.accepted += accepted.num_rows() as u64;
        counts.quarantined += quarantined.num_rows() as u64;
        if accepted.num_rows() > 0 {
            clean.write(accepted).await?;
        }
        if quarantined.num_rows() > 0 {
            quarantine.write(quarantined).await?;
        }
    }
    clean.finish().await?;
    quarantine.finish().await?;
    let staged = std::mem::take(
        &mut *tally
            .lock()
            .map_err(|_| Error::Internal("staging tally".into()))?,
    );
    counts.rows_in = staged.rows_per_object.iter().map(|(_, n)| n).sum();
    counts.quarantine_rules = rules;
    if counts.rows_in != counts.accepted + counts.quarantined {
        return Err(Error::Internal(format!(
            "row accounting broke in record table `{}`: {} in, {} accepted, {} quarantined",
            input.name, counts.rows_in, counts.accepted, counts.quarantined
        )));
    }
    Ok(counts)
}

/// The subject table's `before` columns per subject id, read from its own sources (none without a `before`).
async fn subject_limits(
    cfg: &Config,
    lake: &Storage,
    subjects: &[CurrentObject],
    missing: &MissingValues,
) -> Result<SubjectLimits> {
    let mut columns: Vec<String> = Vec::new();
    for p in cfg.dataset.tables.values().flat_map(|t| t.pivot.values()) {
        if let Some(b) = &p.before
            && !columns.contains(b)
        {
            columns.push(b.clone());
        }
    }
    if columns.is_empty() {
        return Ok(SubjectLimits::default());
    }
    let id = cfg.dataset.id.columns();
    let mut read: Vec<String> = id.to_vec();
    read.extend(columns.iter().cloned());
    let limits = stage::StageLimits {
        max_record_bytes: cfg.preprocessing.max_record_bytes,
    };
    let (staged, tally) = StagedSource::table(lake, subjects, &read, limits, missing.clone())?;
    let ctx = session();
    ctx.register_table(RECORDS, Arc::new(staged))
        .map_err(Error::bug)?;
    let select: Vec<String> = read.iter().map(|c| ident(c)).collect();
    let df = ctx
        .sql(&format!("SELECT {} FROM {RECORDS}", select.join(", ")))
        .await
        .map_err(|e| internal("subject limits", e))?;
    let mut out = SubjectLimits {
        columns,
        ..Default::default()
    };
    let mut batches = Batches::new(df, &tally, "subject limits").await?;
    while let Some(batch) = batches.next().await? {
        let cols: Vec<_> = (0..read.len())
            .map(|i| texts(&batch, i))
            .collect::<Result<_>>()?;
        for r in 0..batch.num_rows() {
            if cols[..id.len()].iter().any(|c| c.is_null(r)) {
                continue;
            }
            let key = cols[..id.len()]
                .iter()
                .map(|c| c.value(r).to_string())
                .collect();
            let values = cols[id.len()..]
                .iter()
                .map(|c| c.is_valid(r).then(|| c.value(r).to_string()))
                .collect();
            // the first row of a subject, as the subject table keeps it
            out.by_subject.entry(key).or_insert(values);
        }
    }
    Ok(out)
}

/// Pivot column → label, for the report (from the contract's `label`).
fn pivot_labels(cfg: &Config) -> BTreeMap<String, String> {
    cfg.dataset
        .tables
        .values()
        .flat_map(|t| t.pivot.iter())
        .filter_map(|(name, p)| p.label.clone().map(|l| (name.clone(), l)))
        .collect()
}
