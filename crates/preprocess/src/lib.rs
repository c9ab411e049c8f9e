//! Preprocessing with DataFusion SQL: validation and quarantine, cleaning and pseudonymization (`clean`),
//! leakage-free splits and the feature spec (`features`), the quality report (`quality`).
//!
//! Invariants: no candle; subject ids leave `clean` only as keyed pseudonyms; input rows = accepted +
//! quarantined, checked on every run; messages name sources, lines, columns and rules, never values.

#[cfg(feature = "ballista")]
pub mod cluster;
pub mod engine;
mod layout;
pub mod router;
pub mod source;
mod spec;
pub mod split_stats;
pub mod sql;
pub use trialflow_core::stage;
pub mod tables;
mod task;
pub mod udf;
mod value_counts;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use futures::StreamExt;
use trialflow_core::config::{Config, population_column};
use trialflow_core::contracts;
use trialflow_core::lake::{self, Current};
use trialflow_core::table::ParquetSink;
use trialflow_core::{Error, Result, Storage};

use crate::engine::SqlEngine;

pub use task::TASKS;
pub use trialflow_core::contracts::{CleanReport, SourceCounts, ViolationCount};

fn df_err(step: &'static str, cfg: &Config, e: DataFusionError) -> Error {
    sql_err(&SqlStep::generated(cfg, step), e)
}

/// One preprocessing statement and where it came from: generated from the contract, or a file of
/// `preprocessing.sql_dir`.
#[derive(Debug, Clone)]
pub struct SqlStep {
    pub name: &'static str,
    pub text: String,
    /// The file that a person fixes when the statement does not run.
    pub origin: String,
    pub edited: bool,
}

impl SqlStep {
    fn generated(cfg: &Config, name: &'static str) -> Self {
        Self {
            name,
            text: String::new(),
            origin: cfg.source_file.clone(),
            edited: false,
        }
    }
}

fn sql_err(step: &SqlStep, e: DataFusionError) -> Error {
    // Planning and parse errors come from the SQL (the contract's expressions, or an edited file): the
    // parser's message carries the line and column.
    match e.find_root() {
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) | DataFusionError::SQL(..) => {
            if step.edited {
                Error::config(
                    &step.origin,
                    step.name,
                    format!("this SQL does not run: {e}"),
                )
            } else {
                Error::config(
                    &step.origin,
                    "dataset",
                    format!(
                        "the SQL generated for step `{}` does not run: {e}",
                        step.name
                    ),
                )
            }
        }
        root if matches!(root, DataFusionError::ObjectStore(_)) || unreachable_service(&e) => {
            Error::infra(
                format!("step `{}`", step.name),
                format!("the query could not reach a service it needs: {e}"),
            )
        }
        _ => Error::Internal(format!("step `{}`: {e}", step.name)),
    }
}

/// An object store or a Ballista process that did not answer, as a cluster reports it: the executor's
/// error comes back as the text of a failed job, not as a typed error.
fn unreachable_service(e: &DataFusionError) -> bool {
    let text = e.to_string();
    text.contains("Object Store error")
        || (text.contains("Job ") && text.contains(" failed"))
        || text.contains("transport error")
        || text.contains("tonic::transport")
        || text.contains("status: Unavailable")
}

/// The preprocessing SQL generated from the contract, in order: the clean views, then the split.
pub fn generated_sql(cfg: &Config) -> Vec<(&'static str, String)> {
    let mut steps = clean_steps(cfg);
    steps.push(("split", split_sql(cfg)));
    steps
}

const SQL_FILE_HEADER: &str = "-- trialflow preprocessing SQL, generated from";
/// The line that records which contract a file was generated from: the hash of the SQL the contract
/// generated for that view then. A file whose hash no longer matches was written for another contract.
const SQL_CONTRACT_LINE: &str = "-- contract: ";

fn contract_hash(generated: &str) -> String {
    trialflow_core::fingerprint::sha256_hex(generated.as_bytes())[..16].to_string()
}

/// The contract hash a file of `preprocessing.sql_dir` says it was generated from, if it says.
fn recorded_contract(text: &str) -> Option<&str> {
    text.lines()
        .take_while(|l| l.starts_with("--"))
        .find_map(|l| l.strip_prefix(SQL_CONTRACT_LINE))
        .and_then(|rest| rest.split_whitespace().next())
}

/// The files of `preprocessing.sql_dir` generated from another contract than the current one.
fn stale_sql_files(cfg: &Config, dir: &std::path::Path) -> Vec<String> {
    generated_sql(cfg)
        .into_iter()
        .filter_map(|(name, text)| {
            let path = dir.join(format!("{name}.sql"));
            let file = std::fs::read_to_string(&path).ok()?;
            (recorded_contract(&file) != Some(contract_hash(&text).as_str()))
                .then(|| path.display().to_string())
        })
        .collect()
}

/// Writes the generated SQL as `<dir>/<step>.sql` (what `preprocessing.sql_dir` then runs); returns the
/// files written.
pub fn write_sql_dir(cfg: &Config, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::infra(dir.display().to_string(), format!("cannot create: {e}")))?;
    let mut written = Vec::new();
    for (name, text) in generated_sql(cfg) {
        let path = dir.join(format!("{name}.sql"));
        let body = format!(
            "{SQL_FILE_HEADER} {} (`trialflow sql`); edit freely, or delete a file to run the generated \
             view.\n{SQL_CONTRACT_LINE}{} (the contract's hash for this view: a contract change since is \
             an error)\n{text};\n",
            cfg.source_file,
            contract_hash(&text)
        );
        let tmp = dir.join(format!(".{name}.sql.tmp"));
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::infra(path.display().to_string(), format!("cannot write: {e}")))?;
        written.push(path);
    }
    Ok(written)
}

/// The statement for `name`: generated, or read from `preprocessing.sql_dir`.
pub fn sql_step(cfg: &Config, name: &'static str, generated: String) -> Result<SqlStep> {
    let Some(dir) = &cfg.preprocessing.sql_dir else {
        return Ok(SqlStep {
            text: generated,
            ..SqlStep::generated(cfg, name)
        });
    };
    let dir = std::path::Path::new(dir);
    if !dir.is_dir() {
        return Err(Error::config(
            &cfg.source_file,
            "preprocessing.sql_dir",
            format!(
                "{} is not a directory (write it with `trialflow sql`)",
                dir.display()
            ),
        ));
    }
    let path = dir.join(format!("{name}.sql"));
    let origin = path.display().to_string();
    // A view without a file runs as generated: a directory may override just the views it edits.
    if !path.exists() {
        return Ok(SqlStep {
            text: generated,
            ..SqlStep::generated(cfg, name)
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::config(
            &cfg.source_file,
            "preprocessing.sql_dir",
            format!("cannot read {origin}: {e} (write the directory with `trialflow sql`)"),
        )
    })?;
    if recorded_contract(&text) != Some(contract_hash(&generated).as_str()) {
        return Err(Error::config(
            &origin,
            name,
            format!(
                "this file was written for another contract than the config's now (its `{}` line does not \
                 match what the contract generates for `{name}`): regenerate the stale files with \
                 `trialflow sql --out {}` and re-apply their edits, or delete them to run the generated \
                 views. Stale: {}",
                SQL_CONTRACT_LINE.trim_start_matches("-- ").trim(),
                dir.display(),
                stale_sql_files(cfg, dir).join(", ")
            ),
        ));
    }
    // One statement per file: a trailing `;` is optional.
    let text = text.trim_end().trim_end_matches(';').to_string();
    Ok(SqlStep {
        name,
        text,
        origin,
        edited: true,
    })
}

/// What the clean and features tasks fingerprint beyond the config: the edited SQL files' text.
pub fn sql_fingerprint(cfg: &Config) -> Result<Option<Vec<String>>> {
    if cfg.preprocessing.sql_dir.is_none() {
        return Ok(None);
    }
    generated_sql(cfg)
        .into_iter()
        .map(|(name, text)| sql_step(cfg, name, text).map(|s| s.text))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn column_i64(batches: &[RecordBatch], col: &str) -> Vec<Option<i64>> {
    trialflow_core::table::ints(batches, col).unwrap_or_default()
}

/// Column `name` of a batch of `split.sql`'s result (from `origin`), cast to `to` for `purpose`; a missing or
/// uncastable column is a config error naming the file.
fn split_column(
    batch: &RecordBatch,
    name: &str,
    to: &arrow::datatypes::DataType,
    origin: &str,
    purpose: &str,
) -> Result<arrow::array::ArrayRef> {
    let a = batch.column_by_name(name).ok_or_else(|| {
        Error::config(
            origin,
            "split",
            format!("the result has no column `{name}` ({purpose} needs it)"),
        )
    })?;
    arrow::compute::cast(a, to).map_err(|_| {
        Error::config(
            origin,
            "split",
            format!("column `{name}` is {}; {purpose} needs {to}", a.data_type()),
        )
    })
}

/// The pseudonymization key: from the configured environment variable, else the config's development key.
pub fn pseudonym_key(cfg: &Config) -> Result<Vec<u8>> {
    cfg.pseudonym_key().map(|(key, _)| key)
}

/// SQL would read any number as a truth value (`CASE WHEN days + 1` is true for most rows): the outcome
/// expression must be a condition.
async fn check_outcome_expression(cfg: &Config, ctx: &SessionContext) -> Result<()> {
    let Some(expr) = &cfg.dataset.outcome.expression else {
        return Ok(());
    };
    let df = ctx
        .sql(&format!("SELECT ({expr}) AS o FROM typed"))
        .await
        .map_err(|e| df_err("typed", cfg, e))?;
    let t = df.schema().field(0).data_type().clone();
    if t != arrow::datatypes::DataType::Boolean && t != arrow::datatypes::DataType::Null {
        return Err(Error::config(
            &cfg.source_file,
            "dataset.outcome.expression",
            format!(
                "expected a condition (true = the outcome happened), e.g. `status = 'dead'` or `flag = 1`; \
                 this expression is {t}"
            ),
        ));
    }
    Ok(())
}

/// The clean steps in order, each registered as a view over the one before.
fn clean_steps(cfg: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("typed", sql::typed(cfg)),
        ("checked", sql::checked(cfg)),
        ("accepted", sql::accepted(cfg)),
        ("derived", sql::derived(cfg)),
        ("clean", sql::clean(cfg)),
    ]
}

/// Plans the clean stage's SQL (generated from the contract, or the files of `preprocessing.sql_dir`) over an
/// empty table of the contract's columns, as `clean` would over the data: a filter, outcome expression, rule or
/// derived column naming a column or function that does not exist, or comparing values of types that do not
/// compare, is an error naming the statement's file, line and column, before anything runs. `check-config`
/// runs it.
pub async fn check_sql(cfg: &Config) -> Result<()> {
    tables::check_conditions(cfg).await?;
    let ctx = SessionContext::new_with_config(engine::as_written(SessionConfig::new()));
    let schema = stage::staged_schema(&cfg.source_columns());
    let empty =
        datafusion::datasource::MemTable::try_new(schema, vec![vec![]]).map_err(Error::bug)?;
    ctx.register_table("staged", Arc::new(empty))
        .map_err(Error::bug)?;
    // planning needs the function, not the trial's key
    ctx.register_udf(udf::pseudonymize_udf(vec![0; 32]));
    let mut last = None;
    for (name, text) in clean_steps(cfg) {
        let step = sql_step(cfg, name, text)?;
        let df = ctx.sql(&step.text).await.map_err(|e| sql_err(&step, e))?;
        ctx.register_table(name, df.clone().into_view())
            .map_err(|e| sql_err(&step, e))?;
        if name == "typed" {
            check_outcome_expression(cfg, &ctx).await?;
        }
        last = Some((df, step));
    }
    if let Some((df, step)) = last {
        // Type coercion and constant folding happen as the plan is optimized: over no rows, any failure there
        // (a literal that cannot cast to its column's type) is the SQL's, not the data's.
        df.create_physical_plan()
            .await
            .map_err(|e| match sql_err(&step, e) {
                Error::Internal(m) => Error::config(
                    &step.origin,
                    if step.edited { step.name } else { "dataset" },
                    format!("the SQL does not plan: {m}"),
                ),
                other => other,
            })?;
    }
    Ok(())
}

/// Validates, cleans, deduplicates and pseudonymizes the current raw objects into `processed/clean/` and
/// `processed/quarantine/`, streaming: the raw objects are read, checked and written batch by batch.
pub async fn clean(cfg: &Config, lake: &Storage) -> Result<CleanReport> {
    if lake.head(lake::RAW_CURRENT).await?.is_none() {
        return Err(Error::bad_data(
            lake.display(lake::RAW_CURRENT),
            "nothing has been ingested into this lake: run `trialflow ingest` (or the data pipeline) first",
        ));
    }
    let current: Current = contracts::load(lake).await?;
    let (subject_objects, record_tables) = tables::split_objects(cfg, &current.objects);
    let current = Current {
        objects: subject_objects,
    };
    let missing = cfg.missing_values_by_source();
    let pivots = if record_tables.is_empty() {
        None
    } else {
        tables::check_conditions(cfg).await?;
        Some(tables::Pivots::gather(cfg, lake, &current.objects, &record_tables, &missing).await?)
    };
    let limits = stage::StageLimits {
        max_record_bytes: cfg.preprocessing.max_record_bytes,
    };
    let (staged, staging) = source::StagedSource::table(
        lake,
        &current.objects,
        &cfg.subject_columns(),
        limits,
        missing.clone(),
    )?;
    let local = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(stage::BATCH_ROWS);
    let (mut report, accepted) = if cfg.execution.ballista_scheduler().is_none() {
        // A killed cluster run may have left its staged table (raw ids) behind.
        lake.delete(lake::STAGED_FILE).await?;
        let engine = SqlEngine::local(lake, local)?;
        register_staged(cfg, &engine.ctx, staged, pivots.as_ref()).await?;
        clean_with(cfg, lake, &engine, &current, staging).await?
    } else {
        clean_on_cluster(cfg, lake, local, &current, staged, staging, pivots.as_ref()).await?
    };
    // A table the contract no longer has must not leave its records looking current.
    for old in lake.list(lake::TABLES).await? {
        let table = old
            .path
            .strip_prefix(lake::TABLES)
            .and_then(|r| r.split('/').next());
        if table.is_some_and(|t| !cfg.dataset.tables.contains_key(t)) {
            lake.delete(&old.path).await?;
        }
    }
    if let Some(pivots) = &pivots {
        let pass = tables::SecondPass {
            missing: &missing,
            pivots,
            accepted: &accepted,
            key: &pseudonym_key(cfg)?,
        };
        pass.run(cfg, lake, &record_tables, &mut report).await?;
    }
    contracts::save(lake, &report).await?;
    tracing::info!(
        rows_in = report.rows_in,
        accepted = report.accepted,
        quarantined = report.quarantined,
        "clean"
    );
    Ok(report)
}

/// Registers the subject rows as `staged`, joined to the record tables' pivots when there are any.
async fn register_staged(
    cfg: &Config,
    ctx: &SessionContext,
    staged: datafusion::catalog::streaming::StreamingTable,
    pivots: Option<&tables::Pivots>,
) -> Result<()> {
    match pivots {
        None => ctx
            .register_table("staged", Arc::new(staged))
            .map(|_| ())
            .map_err(Error::bug),
        Some(p) => {
            ctx.register_table(tables::SUBJECT_ROWS, Arc::new(staged))
                .map_err(Error::bug)?;
            p.register_staged(cfg, ctx).await
        }
    }
}

/// The clean views on a Ballista cluster, which cannot read this process's stream: the staged rows (with
/// their pivots) go to the lake first, as Parquet, and are removed when the task ends.
async fn clean_on_cluster(
    cfg: &Config,
    lake: &Storage,
    local: SessionConfig,
    current: &Current,
    staged: datafusion::catalog::streaming::StreamingTable,
    staging: Arc<std::sync::Mutex<source::StagedTally>>,
    pivots: Option<&tables::Pivots>,
) -> Result<(CleanReport, tables::AcceptedSubjects)> {
    // A cluster cannot read this process's stream: the staged rows go to the lake first, as Parquet.
    let engine = SqlEngine::new(
        cfg,
        lake,
        SessionConfig::new().with_batch_size(stage::BATCH_ROWS),
    )
    .await?;
    let staging_ctx = SessionContext::new_with_config(engine::as_written(local));
    register_staged(cfg, &staging_ctx, staged, pivots).await?;
    let result = async {
        stage_to_lake(&staging_ctx, lake, &staging).await?;
        engine
            .ctx
            .register_parquet(
                "staged",
                engine.table_url(lake::STAGED_FILE),
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .map_err(|e| Error::Internal(format!("staged table: {e}")))?;
        clean_with(cfg, lake, &engine, current, staging)
            .await
            .map_err(|e| match e {
                // name the lake and the cluster: the executors read the lake with their own credentials
                Error::Infra { location, message } => Error::infra(
                    format!(
                        "{} on the Ballista cluster {}",
                        lake.display(""),
                        engine.cluster.as_deref().unwrap_or_default()
                    ),
                    format!("{location}: {message}"),
                ),
                e => e,
            })
    }
    .await;
    // The staged table holds raw ids: it lives only as long as the task.
    if let Err(e) = lake.delete(lake::STAGED_FILE).await {
        tracing::warn!(error = %e, "could not remove the staged table");
    }
    result
}

/// Writes the `staged` stream to [`lake::STAGED_FILE`].
async fn stage_to_lake(
    ctx: &SessionContext,
    lake: &Storage,
    staging: &std::sync::Mutex<source::StagedTally>,
) -> Result<()> {
    let df = ctx.table("staged").await.map_err(Error::bug)?;
    let mut sink = ParquetSink::create(lake, lake::STAGED_FILE, df.schema().inner().clone())?;
    let mut stream = df.execute_stream().await.map_err(Error::bug)?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| {
            staging
                .lock()
                .ok()
                .and_then(|mut t| t.error.take())
                .unwrap_or_else(|| Error::Internal(format!("staging: {e}")))
        })?;
        sink.write(batch).await?;
    }
    sink.finish().await?;
    Ok(())
}

/// The clean views over the registered `staged` table, run on `engine`, routed and written.
async fn clean_with(
    cfg: &Config,
    lake: &Storage,
    engine: &SqlEngine,
    current: &Current,
    staging: Arc<std::sync::Mutex<source::StagedTally>>,
) -> Result<(CleanReport, tables::AcceptedSubjects)> {
    let ctx = &engine.ctx;
    let mut subjects = tables::AcceptedSubjects::default();
    let keep_subjects = !cfg.dataset.tables.is_empty();
    ctx.register_udf(udf::pseudonymize_udf(pseudonym_key(cfg)?));
    let steps = clean_steps(cfg);
    for old in lake.list(lake::SQL_CLEAN).await? {
        let name = old.path.rsplit('/').next().unwrap_or_default();
        if !steps.iter().any(|(s, _)| format!("{s}.sql") == name) {
            lake.delete(&old.path).await?;
        }
    }
    let mut last = None;
    for (name, text) in steps.iter().cloned() {
        let step = sql_step(cfg, name, text)?;
        let df = ctx.sql(&step.text).await.map_err(|e| sql_err(&step, e))?;
        ctx.register_table(name, df.clone().into_view())
            .map_err(|e| sql_err(&step, e))?;
        if name == "typed" {
            check_outcome_expression(cfg, ctx).await?;
        }
        lake.put(
            &format!("{}{name}.sql", lake::SQL_CLEAN),
            format!("-- from {}\n{};\n", step.origin, step.text),
        )
        .await?;
        last = Some((df, step));
    }
    let Some((df, clean_step)) = last else {
        return Err(Error::Internal("no clean steps".into()));
    };
    let expected_rows: u64 = current.objects.iter().map(|o| o.rows).sum();
    let schema = df.schema().as_arrow().clone();
    // A cluster runs the scan in parallel: the rows come back in input order only when asked to.
    let df = if engine.cluster.is_some() {
        df.sort(vec![col("_row").sort(true, false)])
            .map_err(|e| sql_err(&clean_step, e))?
    } else {
        df
    };
    let stream = df
        .execute_stream()
        .await
        .map_err(|e| sql_err(&clean_step, e))?;
    let mut batches = Ahead::spawn(stream);
    // Built while the first batch is staged: its subject table is faulted in then.
    let mut router = router::Router::new(
        &schema,
        &cfg.dataset.id.label(),
        cfg.dataset.repeated_ids,
        expected_rows.min(1 << 28) as usize,
    )?;
    let mut quarantine =
        ParquetSink::create(lake, lake::QUARANTINE_FILE, router::quarantine_schema())?;
    let mut clean_sink: Option<ParquetSink> = None;
    let mut layout = layout::SplitLayout::new(cfg, &router.clean_schema());
    while let Some(batch) = batches.next().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                let staged_error = staging.lock().ok().and_then(|mut t| t.error.take());
                return Err(staged_error.unwrap_or_else(|| sql_err(&clean_step, e)));
            }
        };
        let (rows, accept) = router.route_rows(&batch)?;
        if router.pending_quarantine() >= stage::BATCH_ROWS {
            quarantine.write(router.take_quarantine()?).await?;
        }
        if accept.true_count() > 0 {
            let sink = match &mut clean_sink {
                Some(s) => s,
                None => clean_sink.insert(ParquetSink::create(
                    lake,
                    lake::CLEAN_FILE,
                    router.clean_schema(),
                )?),
            };
            match &mut layout {
                // The layout copies each split's accepted rows out of the batch itself: one copy, not two.
                Some(layout) if !keep_subjects => layout.add(&rows, Some(&accept))?,
                _ => {
                    let accepted =
                        arrow::compute::filter_record_batch(&rows, &accept).map_err(Error::bug)?;
                    if keep_subjects {
                        subjects.add(&accepted)?;
                    }
                    match &mut layout {
                        Some(layout) => layout.add(&accepted, None)?,
                        None => sink.write(accepted).await?,
                    }
                }
            }
            if let Some(layout) = &mut layout {
                while let Some(split) = layout.full() {
                    layout.write(split, sink).await?;
                }
            }
        }
    }
    quarantine.write(router.take_quarantine()?).await?;
    quarantine.finish().await?;

    let staged = std::mem::take(
        &mut *staging
            .lock()
            .map_err(|_| Error::Internal("staging tally".into()))?,
    );
    if let Some(e) = staged.error {
        return Err(e);
    }
    let t = router.tally;
    let rows_in: u64 = staged.rows_per_object.iter().map(|(_, n)| n).sum();
    if rows_in != t.accepted + t.quarantined || rows_in != t.rows {
        return Err(Error::Internal(format!(
            "row accounting broke: {rows_in} in, {} out of clean.sql, {} accepted, {} quarantined",
            t.rows, t.accepted, t.quarantined
        )));
    }
    let mut per_source: BTreeMap<String, SourceCounts> = BTreeMap::new();
    for (url, n) in &staged.rows_per_object {
        let e = per_source
            .entry(url.clone())
            .or_insert_with(|| SourceCounts {
                source: url.clone(),
                ..Default::default()
            });
        e.rows_in += n;
    }
    for (url, (acc, quar)) in &t.per_source {
        let e = per_source.entry(url.clone()).or_default();
        e.accepted += acc;
        e.quarantined += quar;
    }
    let sources: Vec<&str> = current.objects.iter().map(|o| o.url.as_str()).collect();
    let Some(mut clean_sink) = clean_sink else {
        let why = if rows_in == 0 {
            "the sources hold no data rows (a header at most)".to_string()
        } else {
            format!(
                "none of the {rows_in} rows passed validation; every one is in processed/quarantine/ with its \
                 reason. {}",
                quarantine_summary(&t)
            )
        };
        return Err(Error::bad_data(sources.join(", "), why));
    };
    check_dropped_share(cfg, &t, rows_in, &sources)?;
    let footer = match layout {
        Some(layout) => vec![layout.finish(&mut clean_sink).await?],
        None => Vec::new(),
    };
    clean_sink.finish_with(footer).await?;
    let report = CleanReport {
        rows_in,
        accepted: t.accepted,
        quarantined: t.quarantined,
        per_source: per_source.into_values().collect(),
        violations: t
            .violations
            .into_iter()
            .map(|((column, rule, action), rows)| ViolationCount {
                column,
                rule,
                action,
                rows,
            })
            .collect(),
        excluded_by_filter: t.excluded_by_filter,
        exact_duplicates: t.exact_duplicates,
        repeated_ids: t.repeated_ids,
        normalized_values: staged.normalized,
        key_source: cfg.pseudonym_key()?.1.to_string(),
        labels: staged.labels,
        tables: Vec::new(),
    };
    Ok((report, subjects))
}

/// A plan's batches computed on a task of their own, at most two ahead of the consumer. The clean task's plan
/// (the SQL views over the staged rows) and its routing, or the features task's scan and split hash and its
/// statistics, would otherwise take turns on the thread that polls the plan; here they run side by side.
struct Ahead {
    rx: tokio::sync::mpsc::Receiver<std::result::Result<RecordBatch, DataFusionError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Ahead {
    fn spawn(mut stream: datafusion::execution::SendableRecordBatchStream) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let task = tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Self { rx, task }
    }

    async fn next(&mut self) -> Option<std::result::Result<RecordBatch, DataFusionError>> {
        self.rx.recv().await
    }
}

impl Drop for Ahead {
    /// A consumer that stops early (an error) stops the plan too, and with it the staging.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Rows per quarantine rule (most first) and the first quarantined rows, by file, line, column and rule.
fn quarantine_summary(t: &router::Tally) -> String {
    let mut per_rule: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for ((column, rule, action), n) in &t.violations {
        if action == "quarantine" {
            *per_rule.entry((column, rule)).or_default() += n;
        }
    }
    if t.repeated_ids > 0 {
        per_rule.insert(("<id>", "repeated id"), t.repeated_ids);
    }
    if t.excluded_by_filter > 0 {
        per_rule.insert(("", "filter"), t.excluded_by_filter);
    }
    let mut counts: Vec<_> = per_rule.into_iter().collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let counts: Vec<String> = counts
        .iter()
        .take(8)
        .map(|((column, rule), n)| match column.is_empty() {
            true => format!("{rule}: {n}"),
            false => format!("{column} {rule}: {n}"),
        })
        .collect();
    let first: Vec<String> = t
        .first_quarantined
        .iter()
        .map(|(src, line, column, rule)| format!("{src}:{line} {column} ({rule})"))
        .collect();
    format!(
        "Rows per rule: {}. First: {}.",
        counts.join(", "),
        if first.is_empty() {
            "-".to_string()
        } else {
            first.join("; ")
        }
    )
}

/// Fails the clean task when more rows than `preprocessing.max_dropped_share` were dropped for a reason the
/// contract does not state: the accepted rows would then be another population than the one described.
fn check_dropped_share(
    cfg: &Config,
    t: &router::Tally,
    rows_in: u64,
    sources: &[&str],
) -> Result<()> {
    let limit = cfg.preprocessing.max_dropped_share;
    if rows_in == 0 || (t.unstated as f64) <= limit * rows_in as f64 {
        return Ok(());
    }
    let mut causes = Vec::new();
    let repeats = t.repeated_ids + t.exact_duplicates;
    if repeats > 0 {
        causes.push(format!(
            "{repeats} rows repeat an accepted id ({} of them identical to its first row in every column the \
             contract reads): if the file has several rows per patient (per eye, visit, episode), `dataset.id` \
             does not identify a row; give a composite id (`id: [{}, eye]`) with `dataset.cluster`, or \
             `id: null` for a file with one row per patient and no id. A file exported twice is what \
             `max_dropped_share` is for",
            t.exact_duplicates,
            cfg.dataset.id.label()
        ));
    }
    let mut unstated: Vec<(&(String, String, String), &u64)> = t
        .violations
        .iter()
        .filter(|((_, rule, action), _)| {
            action == "quarantine" && router::UNSTATED_RULES.contains(&rule.as_str())
        })
        .collect();
    unstated.sort_by(|a, b| b.1.cmp(a.1));
    for ((column, rule, _), n) in unstated.into_iter().take(4) {
        let hint = match rule.as_str() {
            "missing_token" => "declare the token in `dataset.missing_values`",
            "parse" => {
                "a column of text listed in `dataset.numeric`, or a missing-value token to declare"
            }
            "event" => {
                "list the codes in `time_to_event.event_values`/`censor_values`/`competing_values`"
            }
            "outcome" => "list the codes in `outcome.positive`/`negative`",
            _ => "see processed/quarantine/",
        };
        causes.push(format!("{n} rows break `{rule}` on `{column}` ({hint})"));
    }
    Err(Error::bad_data(
        sources.join(", "),
        format!(
            "{} of the {rows_in} rows ({:.1}%) were dropped for reasons the contract does not state, more than \
             `preprocessing.max_dropped_share` ({}%) allows: {}. {}",
            t.unstated,
            100.0 * t.unstated as f64 / rows_in as f64,
            100.0 * limit,
            causes.join("; "),
            quarantine_summary(t)
        ),
    ))
}

pub use trialflow_core::contracts::{FeaturesReport, SplitCounts};

/// The split assignment: a position `_u` in [0, 1) per row, cut at the fractions. By default `_u` is the salted
/// hash of the pseudonymized id; `group_by` (or `dataset.cluster`, which implies it) hashes the group's value instead
/// (a whole group lands in one split);
/// `stratify` replaces `_u` by the row's rank within its outcome class, (rank − ½)/count, ordered by the hash, so
/// each class is cut at the same fractions. Rows without the outcome (described in the analysis) are in no split.
fn split_sql(cfg: &Config) -> String {
    let s = &cfg.preprocessing.split;
    // Records clustered within a patient stay together: a patient in two splits leaks into the test metrics.
    let group = match &cfg.dataset.cluster {
        Some(_) => Some("cluster".to_string()),
        None => s.group_by.clone(),
    };
    let hashed = match &group {
        Some(g) => {
            let col = if g == "arm" || g == "site" || g == "cluster" {
                g.clone()
            } else {
                trialflow_core::features::table_column(g)
            };
            format!(
                "split_unit(coalesce(CAST({} AS VARCHAR), ''))",
                sql::ident(&col)
            )
        }
        None => "split_unit(\"subject_id\")".to_string(),
    };
    let unit = if s.stratify {
        format!(
            "(CAST(row_number() OVER (PARTITION BY \"outcome\" ORDER BY {hashed}, \"subject_id\") AS DOUBLE) - 0.5) \
             / CAST(count(*) OVER (PARTITION BY \"outcome\") AS DOUBLE)"
        )
    } else {
        hashed
    };
    // The models' population, if they have one: its rows alone are split (and the population columns are
    // no model input).
    let population = cfg
        .training
        .population
        .as_deref()
        .map(|p| format!(" AND {}", sql::ident(&population_column(p))))
        .unwrap_or_default();
    let mut excluded = vec![
        "\"_source\"".to_string(),
        "\"_line\"".into(),
        "\"_u\"".into(),
    ];
    excluded.extend(
        cfg.dataset
            .populations
            .keys()
            .map(|p| sql::ident(&population_column(p))),
    );
    let targets = cfg.target_columns();
    for name in cfg.dataset.secondary_time_to_event.keys() {
        let (t, e) = sql::secondary_columns(name);
        // the endpoint's own pair stays: the models are trained on it
        excluded.extend(
            [t, e]
                .into_iter()
                .filter(|c| !targets.contains(c))
                .map(|c| sql::ident(&c)),
        );
    }
    // a row without the endpoint's values is no training example (the quality report counts it)
    let has_targets = targets
        .iter()
        .map(|c| format!("{} IS NOT NULL", sql::ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "SELECT * EXCLUDE ({}), \
         CASE WHEN \"_u\" < {t} THEN 'train' WHEN \"_u\" < {tv} THEN 'val' ELSE 'test' END AS \"split\" \
         FROM (SELECT *, {unit} AS \"_u\" FROM clean WHERE {has_targets}{population})",
        excluded.join(", "),
        t = s.train,
        tv = s.train + s.val
    )
}

/// Assigns splits by the salted hash of the pseudonymized id, streams `processed/features/split=…/` (rows in
/// the clean table's order) and computes the feature spec from the train rows alone, as they are written.
pub async fn features(cfg: &Config, lake: &Storage) -> Result<FeaturesReport> {
    // One partition: the split files keep the clean table's row order, the same on every machine (and on a
    // cluster, where this makes the split one task).
    let engine = SqlEngine::new(
        cfg,
        lake,
        SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(stage::BATCH_ROWS),
    )
    .await?;
    let ctx = &engine.ctx;
    let s = &cfg.preprocessing.split;
    ctx.register_udf(udf::split_unit_udf(s.salt.clone()));
    engine
        .register_lake_table(lake, "clean", lake::CLEAN)
        .await?;
    let step = sql_step(cfg, "split", split_sql(cfg))?;
    lake.put(
        &format!("{}split.sql", lake::SQL_FEATURES),
        format!("-- from {}\n{};\n", step.origin, step.text),
    )
    .await?;
    let df = ctx.sql(&step.text).await.map_err(|e| sql_err(&step, e))?;
    let schema = trialflow_core::table::nullable(df.schema().as_arrow());
    let started = std::time::Instant::now();
    let mut events = [0u64; 3];
    let train = spec::TrainStats::new(cfg, &step.origin);
    let mut stats = split_stats::SplitStats::new(cfg, &step.origin);
    // The columns the statistics read: all the copy of the split files decodes.
    let read: std::collections::BTreeSet<String> = train
        .columns()
        .chain(stats.columns())
        .chain(["outcome"])
        .map(str::to_string)
        .collect();
    let mut train = train.spawn()?;
    let mut observe = |seen: Option<(usize, &RecordBatch)>| -> Result<()> {
        // The train statistics' error, if any, before a split file is published.
        let Some((i, part)) = seen else {
            return train.drain();
        };
        events[i] += column_i64(std::slice::from_ref(part), "outcome")
            .into_iter()
            .flatten()
            .sum::<i64>() as u64;
        if lake::SPLITS[i] == "train" {
            train.observe(part)?;
        }
        stats.observe(lake::SPLITS[i], part)
    };
    let rows = match layout::LaidOut::open(cfg, lake, &step, &schema, &read).await? {
        Some(laid_out) => {
            tracing::debug!("split files copied from the clean table's row groups");
            laid_out.copy(lake, &mut observe).await?
        }
        None => split_by_sql(df, &step, lake, &schema, &mut observe).await?,
    };
    let mut report = FeaturesReport::default();
    for ((split, rows), outcome_events) in lake::SPLITS.iter().zip(rows).zip(events) {
        report.splits.push(SplitCounts {
            split: split.to_string(),
            rows,
            outcome_events,
        });
    }
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "split tables written"
    );
    let spec = train.finish()?.finish(cfg)?;
    contracts::save(lake, &stats.finish(&report.splits)).await?;
    report.feature_columns = spec.width();
    contracts::save(lake, &spec).await?;
    Ok(report)
}

/// `split.sql`'s result streamed into the split files, each batch seen by `observe(Some((split, rows)))`
/// first and `observe(None)` after the last, before any split file is published; the rows written per split.
async fn split_by_sql(
    df: datafusion::dataframe::DataFrame,
    step: &SqlStep,
    lake: &Storage,
    schema: &arrow::datatypes::SchemaRef,
    observe: &mut impl FnMut(Option<(usize, &RecordBatch)>) -> Result<()>,
) -> Result<[u64; 3]> {
    let mut sinks = Vec::new();
    for split in lake::SPLITS {
        sinks.push(ParquetSink::create(
            lake,
            &lake::features_file(split),
            schema.clone(),
        )?);
    }
    let stream = df.execute_stream().await.map_err(|e| sql_err(step, e))?;
    let mut batches = Ahead::spawn(stream);
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| sql_err(step, e))?;
        let split_col = batch.column_by_name("split").ok_or_else(|| {
            Error::config(&step.origin, "split", "the result has no `split` column")
        })?;
        for (i, split) in lake::SPLITS.iter().enumerate() {
            let mask = arrow::compute::kernels::cmp::eq(
                split_col,
                &arrow::array::StringArray::new_scalar(*split),
            )
            .map_err(Error::bug)?;
            let part = arrow::compute::filter_record_batch(&batch, &mask).map_err(Error::bug)?;
            observe(Some((i, &part)))?;
            sinks[i].write(part).await?;
        }
    }
    observe(None)?;
    let mut rows = [0u64; 3];
    for (r, sink) in rows.iter_mut().zip(sinks) {
        *r = sink.finish().await?;
    }
    Ok(rows)
}

pub use trialflow_core::contracts::{
    LevelCount, NumericSummary, QualityReport, QualitySummary, SplitSummary,
};

/// Per-column statistics by split and arm, rule violations, duplicates and exclusions:
/// `processed/quality_report.json`, from the clean report and the split statistics that `features` gathered.
pub async fn quality(lake: &Storage) -> Result<QualityReport> {
    let clean: CleanReport = contracts::load(lake).await?;
    let s: SplitSummary = contracts::load(lake).await?;
    let report = QualityReport {
        clean,
        splits: s.splits,
        numeric: s.numeric,
        categorical: s.categorical,
    };
    contracts::save(lake, &report).await?;
    Ok(report)
}
