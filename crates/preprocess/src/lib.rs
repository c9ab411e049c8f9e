//! Preprocessing with DataFusion SQL: validation and quarantine, cleaning and pseudonymization (`clean`),
//! leakage-free splits and the feature spec (`features`), the quality report (`quality`).
//!
//! Invariants: no candle; subject ids leave `clean` only as keyed pseudonyms; input rows = accepted +
//! quarantined, checked on every run; messages name sources, lines, columns and rules, never values.

pub mod sql;
pub mod stage;
pub mod udf;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use trialflow_core::config::{Config, RuleAction};
use trialflow_core::features::{CategoricalFeature, FeatureSpec, NumericFeature, OnInvalid};
use trialflow_core::lake::{self, Current};
use trialflow_core::table::{read_parquet_prefix, write_parquet};
use trialflow_core::{Error, Result, Storage};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceCounts {
    pub source: String,
    pub rows_in: u64,
    pub accepted: u64,
    pub quarantined: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViolationCount {
    pub column: String,
    pub rule: String,
    pub action: String,
    pub rows: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CleanReport {
    pub rows_in: u64,
    pub accepted: u64,
    pub quarantined: u64,
    pub per_source: Vec<SourceCounts>,
    /// Every rule violation, including those whose action only nulled a value.
    pub violations: Vec<ViolationCount>,
    pub excluded_by_filter: u64,
    pub exact_duplicates: u64,
    pub repeated_ids: u64,
}

fn df_err(step: &str, cfg: &Config, e: DataFusionError) -> Error {
    // Planning errors come from the contract's SQL (a derived column, the filter, the outcome expression).
    match e.find_root() {
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) | DataFusionError::SQL(..) => {
            Error::config(
                &cfg.source_file,
                "dataset",
                format!("the SQL generated for step `{step}` does not run: {e}"),
            )
        }
        _ => Error::Internal(format!("step `{step}`: {e}")),
    }
}

async fn run_sql(
    ctx: &SessionContext,
    cfg: &Config,
    step: &str,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await.map_err(|e| df_err(step, cfg, e))?;
    df.collect().await.map_err(|e| df_err(step, cfg, e))
}

/// Runs `sql` and registers its result as table `name` (materialized once, reused by later steps).
async fn materialize(
    ctx: &SessionContext,
    cfg: &Config,
    name: &str,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await.map_err(|e| df_err(name, cfg, e))?;
    let planned = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(|e| df_err(name, cfg, e))?;
    // Execution may relax nullability relative to the plan; the batches' own schema is the truth.
    let schema = batches.first().map(|b| b.schema()).unwrap_or(planned);
    let table =
        MemTable::try_new(schema, vec![batches.clone()]).map_err(|e| df_err(name, cfg, e))?;
    ctx.register_table(name, Arc::new(table))
        .map_err(|e| df_err(name, cfg, e))?;
    Ok(batches)
}

fn register(ctx: &SessionContext, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
    let Some(first) = batches.first() else {
        return Err(Error::bad_data(name, "no rows"));
    };
    let table = MemTable::try_new(first.schema(), vec![batches])
        .map_err(|e| Error::Internal(e.to_string()))?;
    ctx.register_table(name, Arc::new(table))
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(())
}

fn count_rows(b: &[RecordBatch]) -> u64 {
    b.iter().map(|b| b.num_rows() as u64).sum()
}

fn column_strings(batches: &[RecordBatch], col: &str) -> Vec<Option<String>> {
    // Columns read here come from queries this module wrote: a missing one is a bug, caught by tests.
    trialflow_core::table::strings(batches, col).unwrap_or_default()
}

fn column_i64(batches: &[RecordBatch], col: &str) -> Vec<Option<i64>> {
    trialflow_core::table::ints(batches, col).unwrap_or_default()
}

fn column_f64(batches: &[RecordBatch], col: &str) -> Vec<Option<f64>> {
    trialflow_core::table::floats(batches, col).unwrap_or_default()
}

/// The pseudonymization key: from the configured environment variable, else the config's development key.
pub fn pseudonym_key(cfg: &Config) -> Result<Vec<u8>> {
    match std::env::var(&cfg.privacy.key_env) {
        Ok(k) if !k.is_empty() => Ok(k.into_bytes()),
        _ => match &cfg.privacy.dev_key {
            Some(k) => Ok(k.clone().into_bytes()),
            None => Err(Error::config(
                &cfg.source_file,
                "privacy.key_env",
                format!(
                    "environment variable {} is not set and no dev_key is configured",
                    cfg.privacy.key_env
                ),
            )),
        },
    }
}

/// Validates, cleans, deduplicates and pseudonymizes the current raw objects into `processed/clean/` and
/// `processed/quarantine/`.
pub async fn clean(cfg: &Config, lake: &Storage) -> Result<CleanReport> {
    let current: Current = lake.get_json(lake::RAW_CURRENT).await?;
    let columns = cfg.source_columns();
    let mut staged = Vec::new();
    let mut next_row = 0i64;
    for o in &current.objects {
        let bytes = lake.get(&o.object).await?;
        let batch = stage::stage_object(o, &bytes, &columns, next_row)?;
        next_row += batch.num_rows() as i64;
        staged.push(batch);
    }
    let ctx = SessionContext::new();
    ctx.register_udf(udf::pseudonymize_udf(pseudonym_key(cfg)?));
    let schema = stage::staged_schema(&columns);
    let table = MemTable::try_new(schema, vec![staged.clone()])
        .map_err(|e| Error::Internal(e.to_string()))?;
    ctx.register_table("staged", Arc::new(table))
        .map_err(|e| Error::Internal(e.to_string()))?;

    let steps = [
        ("typed", sql::typed(cfg)),
        ("violations", sql::violations(cfg)),
        ("accepted", sql::accepted(cfg)),
        ("derived", sql::derived(cfg)),
        ("ranked", sql::ranked(cfg)),
        ("excluded", sql::excluded(cfg)),
        ("clean", sql::clean(cfg)),
    ];
    let mut results: BTreeMap<&str, Vec<RecordBatch>> = BTreeMap::new();
    for (name, text) in &steps {
        results.insert(name, materialize(&ctx, cfg, name, text).await?);
        lake.put(
            &format!("{}{name}.sql", lake::SQL_CLEAN),
            format!("-- generated from {}\n{text};\n", cfg.source_file),
        )
        .await?;
    }
    let quarantine = run_sql(
        &ctx,
        cfg,
        "quarantine",
        "SELECT \"_source\" AS source, \"_line\" AS line, pseudonymize(\"subject\") AS subject_id, \
         \"column\", \"rule\", \"reason\" FROM excluded ORDER BY \"_row\", \"rule\", \"column\"",
    )
    .await?;
    let violation_counts = run_sql(
        &ctx,
        cfg,
        "violation_counts",
        "SELECT \"column\", \"rule\", \"action\", count(DISTINCT \"_row\") AS n FROM violations \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .await?;

    let clean_batches = &results["clean"];
    let excluded = &results["excluded"];
    let rows_in = next_row as u64;
    let accepted = count_rows(clean_batches);
    let mut quarantined_rows: Vec<i64> =
        column_i64(excluded, "_row").into_iter().flatten().collect();
    quarantined_rows.sort_unstable();
    quarantined_rows.dedup();
    let quarantined = quarantined_rows.len() as u64;
    if rows_in != accepted + quarantined {
        return Err(Error::Internal(format!(
            "row accounting broke: {rows_in} in, {accepted} accepted, {quarantined} quarantined"
        )));
    }

    let mut per_source: BTreeMap<String, SourceCounts> = BTreeMap::new();
    for o in &current.objects {
        per_source.insert(
            o.url.clone(),
            SourceCounts {
                source: o.url.clone(),
                ..Default::default()
            },
        );
    }
    for s in column_strings(&staged, "_source").into_iter().flatten() {
        per_source.entry(s.clone()).or_default().rows_in += 1;
    }
    for s in column_strings(clean_batches, "_source")
        .into_iter()
        .flatten()
    {
        per_source.entry(s).or_default().accepted += 1;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (row, src) in column_i64(excluded, "_row")
        .into_iter()
        .zip(column_strings(excluded, "_source"))
    {
        if let (Some(r), Some(s)) = (row, src)
            && seen.insert(r)
        {
            per_source.entry(s).or_default().quarantined += 1;
        }
    }
    let rules = column_strings(excluded, "rule");
    let reasons = column_strings(excluded, "reason");
    let excluded_by_filter = rules
        .iter()
        .filter(|r| r.as_deref() == Some("filter"))
        .count() as u64;
    let exact_duplicates = reasons
        .iter()
        .filter(|r| r.as_deref().is_some_and(|r| r.starts_with("exact")))
        .count() as u64;
    let repeated_ids = reasons
        .iter()
        .filter(|r| r.as_deref().is_some_and(|r| r.starts_with("repeated")))
        .count() as u64;
    let violations = column_strings(&violation_counts, "column")
        .into_iter()
        .zip(column_strings(&violation_counts, "rule"))
        .zip(column_strings(&violation_counts, "action"))
        .zip(column_i64(&violation_counts, "n"))
        .map(|(((c, r), a), n)| ViolationCount {
            column: c.unwrap_or_default(),
            rule: r.unwrap_or_default(),
            action: a.unwrap_or_default(),
            rows: n.unwrap_or_default() as u64,
        })
        .collect();

    let sources: Vec<&str> = current.objects.iter().map(|o| o.url.as_str()).collect();
    let clean_schema = clean_batches.first().map(|b| b.schema()).ok_or_else(|| {
        let why = if rows_in == 0 {
            "the sources hold no data rows (a header at most)".to_string()
        } else {
            format!("none of the {rows_in} rows passed validation; every one is in processed/quarantine/ with its reason")
        };
        Error::bad_data(sources.join(", "), why)
    });
    let q_schema = quarantine
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(quarantine_schema()));
    write_parquet(lake, lake::QUARANTINE_FILE, q_schema, &quarantine).await?;
    write_parquet(lake, lake::CLEAN_FILE, clean_schema?, clean_batches).await?;
    let report = CleanReport {
        rows_in,
        accepted,
        quarantined,
        per_source: per_source.into_values().collect(),
        violations,
        excluded_by_filter,
        exact_duplicates,
        repeated_ids,
    };
    lake.put_json(lake::CLEAN_REPORT, &report).await?;
    tracing::info!(rows_in, accepted, quarantined, "clean");
    Ok(report)
}

fn quarantine_schema() -> arrow::datatypes::Schema {
    use arrow::datatypes::Field;
    arrow::datatypes::Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("subject_id", DataType::Utf8, true),
        Field::new("column", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ])
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SplitCounts {
    pub split: String,
    pub rows: u64,
    pub outcome_events: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeaturesReport {
    pub splits: Vec<SplitCounts>,
    pub feature_columns: usize,
}

/// The split assignment: a position `_u` in [0, 1) per row, cut at the fractions. By default `_u` is the salted
/// hash of the pseudonymized id; `group_by` hashes the group's value instead (a whole group lands in one split);
/// `stratify` replaces `_u` by the row's rank within its outcome class, (rank − ½)/count, ordered by the hash, so
/// each class is cut at the same fractions.
fn split_sql(s: &trialflow_core::config::SplitConfig) -> String {
    let hashed = match &s.group_by {
        Some(g) => {
            let col = if g == "arm" || g == "site" {
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
    format!(
        "SELECT * EXCLUDE (\"_source\", \"_line\", \"_u\"), \
         CASE WHEN \"_u\" < {t} THEN 'train' WHEN \"_u\" < {tv} THEN 'val' ELSE 'test' END AS \"split\" \
         FROM (SELECT *, {unit} AS \"_u\" FROM clean)",
        t = s.train,
        tv = s.train + s.val
    )
}

/// Assigns splits by the salted hash of the pseudonymized id, writes `processed/features/split=…/` and the
/// feature spec computed from the train split only.
pub async fn features(cfg: &Config, lake: &Storage) -> Result<FeaturesReport> {
    let clean = read_parquet_prefix(lake, lake::CLEAN).await?;
    let ctx = SessionContext::new();
    let s = &cfg.preprocessing.split;
    ctx.register_udf(udf::split_unit_udf(s.salt.clone()));
    register(&ctx, "clean", clean)?;
    let split_sql = split_sql(s);
    materialize(&ctx, cfg, "features", &split_sql).await?;
    lake.put(
        &format!("{}split.sql", lake::SQL_FEATURES),
        format!("{split_sql};\n"),
    )
    .await?;
    let mut report = FeaturesReport::default();
    for split in lake::SPLITS {
        let q =
            format!("SELECT * FROM features WHERE \"split\" = '{split}' ORDER BY \"subject_id\"");
        let df = ctx.sql(&q).await.map_err(|e| df_err("features", cfg, e))?;
        let planned = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(|e| df_err("features", cfg, e))?;
        let schema = batches.first().map(|b| b.schema()).unwrap_or(planned);
        let events = column_i64(&batches, "outcome")
            .into_iter()
            .flatten()
            .sum::<i64>() as u64;
        report.splits.push(SplitCounts {
            split: split.into(),
            rows: count_rows(&batches),
            outcome_events: events,
        });
        write_parquet(lake, &lake::features_file(split), schema, &batches).await?;
    }
    let spec = feature_spec(cfg, &ctx).await?;
    report.feature_columns = spec.width();
    lake.put_json(lake::FEATURE_SPEC, &spec).await?;
    Ok(report)
}

async fn feature_spec(cfg: &Config, ctx: &SessionContext) -> Result<FeatureSpec> {
    let d = &cfg.dataset;
    let train = "FROM features WHERE \"split\" = 'train'";
    let train_rows =
        count_rows(&run_sql(ctx, cfg, "feature_spec", &format!("SELECT 1 {train}")).await?);
    if train_rows == 0 {
        return Err(Error::bad_data(
            "processed/features/split=train",
            "the train split is empty",
        ));
    }
    let mut numeric = Vec::new();
    for c in &d.numeric {
        let col = sql::ident(&sql::table_column(c));
        let q =
            format!("SELECT median({col}) AS m, avg({col}) AS a, stddev_pop({col}) AS s {train}");
        let b = run_sql(ctx, cfg, "feature_spec", &q).await?;
        let get = |n: &str| column_f64(&b, n).first().copied().flatten();
        let rule = d.rules.get(c);
        numeric.push(NumericFeature {
            name: c.clone(),
            impute: get("m").unwrap_or(0.0),
            mean: get("a").unwrap_or(0.0),
            std: get("s").filter(|s| *s > 0.0).unwrap_or(1.0),
            min: rule.and_then(|r| r.min),
            max: rule.and_then(|r| r.max),
            on_invalid: match rule.map(|r| r.action) {
                Some(RuleAction::Quarantine) => OnInvalid::Reject,
                _ => OnInvalid::Impute,
            },
            derived: d.derived.get(c).cloned(),
        });
    }
    let mut categorical = Vec::new();
    let arm = [(d.arm.column.clone(), "arm".to_string())];
    let cats = d
        .categorical
        .iter()
        .map(|c| (c.clone(), sql::table_column(c)));
    for (name, col) in arm.into_iter().chain(cats) {
        let rule = d.rules.get(&name);
        let q = format!(
            "SELECT DISTINCT {c} AS v {train} AND {c} IS NOT NULL ORDER BY 1",
            c = sql::ident(&col)
        );
        let b = run_sql(ctx, cfg, "feature_spec", &q).await?;
        categorical.push(CategoricalFeature {
            name,
            levels: column_strings(&b, "v").into_iter().flatten().collect(),
            canonical: sql::canonical_map(rule).into_iter().collect(),
        });
    }
    let columns = FeatureSpec::build_columns(&numeric, &categorical);
    Ok(FeatureSpec {
        numeric,
        categorical,
        columns,
        train_rows,
        arm_field: d.arm.column.clone(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NumericSummary {
    pub column: String,
    pub split: String,
    pub arm: String,
    pub count: u64,
    pub nulls: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelCount {
    pub column: String,
    pub split: String,
    pub arm: String,
    pub level: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityReport {
    pub clean: CleanReport,
    pub splits: Vec<SplitCounts>,
    pub numeric: Vec<NumericSummary>,
    pub categorical: Vec<LevelCount>,
}

/// Per-column statistics by split and arm, rule violations, duplicates and exclusions:
/// `processed/quality_report.json`.
pub async fn quality(cfg: &Config, lake: &Storage) -> Result<QualityReport> {
    let clean: CleanReport = lake.get_json(lake::CLEAN_REPORT).await?;
    let ctx = SessionContext::new();
    register(
        &ctx,
        "features",
        read_parquet_prefix(lake, lake::FEATURES).await?,
    )?;
    let d = &cfg.dataset;
    let mut numeric = Vec::new();
    for c in &d.numeric {
        let col = sql::ident(&sql::table_column(c));
        let q = format!(
            "SELECT \"split\", \"arm\", count({col}) AS n, count(*) - count({col}) AS nulls, min({col}) AS lo, \
             max({col}) AS hi, avg({col}) AS mean, stddev_pop({col}) AS sd FROM features GROUP BY 1, 2 ORDER BY 1, 2"
        );
        let b = run_sql(&ctx, cfg, "quality", &q).await?;
        let (splits, arms) = (column_strings(&b, "split"), column_strings(&b, "arm"));
        let (n, nulls) = (column_i64(&b, "n"), column_i64(&b, "nulls"));
        let (lo, hi, mean, sd) = (
            column_f64(&b, "lo"),
            column_f64(&b, "hi"),
            column_f64(&b, "mean"),
            column_f64(&b, "sd"),
        );
        for i in 0..splits.len() {
            numeric.push(NumericSummary {
                column: c.clone(),
                split: splits[i].clone().unwrap_or_default(),
                arm: arms[i].clone().unwrap_or_default(),
                count: n[i].unwrap_or_default() as u64,
                nulls: nulls[i].unwrap_or_default() as u64,
                min: lo[i],
                max: hi[i],
                mean: mean[i],
                std: sd[i],
            });
        }
    }
    let mut categorical = Vec::new();
    for c in &d.categorical {
        let col = sql::ident(&sql::table_column(c));
        let q = format!(
            "SELECT \"split\", \"arm\", {col} AS v, count(*) AS n FROM features GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        );
        let b = run_sql(&ctx, cfg, "quality", &q).await?;
        let (splits, arms, levels, n) = (
            column_strings(&b, "split"),
            column_strings(&b, "arm"),
            column_strings(&b, "v"),
            column_i64(&b, "n"),
        );
        for i in 0..splits.len() {
            categorical.push(LevelCount {
                column: c.clone(),
                split: splits[i].clone().unwrap_or_default(),
                arm: arms[i].clone().unwrap_or_default(),
                level: levels[i].clone(),
                count: n[i].unwrap_or_default() as u64,
            });
        }
    }
    let b = run_sql(
        &ctx,
        cfg,
        "quality",
        "SELECT \"split\", count(*) AS n, sum(\"outcome\") AS e FROM features GROUP BY 1 ORDER BY 1",
    )
    .await?;
    let splits = column_strings(&b, "split")
        .into_iter()
        .zip(column_i64(&b, "n"))
        .zip(column_i64(&b, "e"))
        .map(|((s, n), e)| SplitCounts {
            split: s.unwrap_or_default(),
            rows: n.unwrap_or_default() as u64,
            outcome_events: e.unwrap_or_default() as u64,
        })
        .collect();
    let report = QualityReport {
        clean,
        splits,
        numeric,
        categorical,
    };
    lake.put_json(lake::QUALITY_REPORT, &report).await?;
    Ok(report)
}
