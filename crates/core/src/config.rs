//! The typed configuration: storage roots, the dataset contract and one section per stage.
//!
//! Loading is two steps: YAML (plus `TRIALFLOW_SECTION__KEY` environment overrides) into these types with
//! unknown keys rejected, then [`Config::validate`] for what types cannot say (columns that must exist, SQL
//! that must parse, fractions that must add up). Every error names the file, the key path and what was expected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::error::{Error, Result};

/// The config compiled into the binary, used when no `--config` is given and `config/config.yaml` is absent.
pub const EMBEDDED_CONFIG: &str = include_str!("../../../config/config.yaml");
pub const EMBEDDED_CONFIG_NAME: &str = "<embedded config/config.yaml>";
/// Environment variables with this prefix and a `__` override config keys: `TRIALFLOW_STORAGE__LAKE=s3://…`.
pub const ENV_PREFIX: &str = "TRIALFLOW_";

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub storage: StorageConfig,
    pub dataset: DatasetConfig,
    pub privacy: PrivacyConfig,
    pub preprocessing: PreprocessingConfig,
    pub models: BTreeMap<String, ModelConfig>,
    pub training: TrainingConfig,
    pub serving: ServingConfig,
    #[serde(default)]
    pub deployment: DeploymentConfig,
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    #[serde(default)]
    pub tracking: TrackingConfig,
    #[serde(default)]
    pub analysis: AnalysisConfig,
    #[serde(default)]
    pub dag: DagConfig,
    #[serde(default)]
    pub execution: ExecutionConfig,
    /// Clustering of the baseline phenotypes (exploratory): the `cluster` task, when set.
    #[serde(default)]
    pub clustering: Option<ClusteringConfig>,
    /// Where this config came from, for messages; not a config key.
    #[serde(skip)]
    pub source_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Root of the data lake, e.g. `file://data/lake` or `s3://bucket/lake`.
    pub lake: String,
    /// Root of the model repository (TF Serving layout: `<model>/<version>/`).
    pub models: String,
    /// Timeouts and retries for object-store requests (sources, lake and models on s3/gs/az/http).
    #[serde(default)]
    pub client: StorageClientConfig,
}

/// How object-store requests wait and retry. Retries (with exponential backoff) cover connection errors,
/// timeouts and 5xx answers; a 4xx (missing bucket, denied) fails at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StorageClientConfig {
    pub timeout_seconds: u64,
    pub connect_timeout_seconds: u64,
    pub retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout_seconds: u64,
    /// Every upload to S3 carries its SHA-256 (`x-amz-checksum-sha256`, per part of a multipart upload),
    /// which the server checks before it stores the bytes, as the AWS SDKs send a checksum by default.
    /// `false` for an S3-compatible server that rejects the header.
    pub s3_checksum_sha256: bool,
}

impl Default for StorageClientConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: 60,
            connect_timeout_seconds: 5,
            retries: 5,
            retry_timeout_seconds: 120,
            s3_checksum_sha256: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Short name; raw copies land under `raw/<name>/`.
    pub name: String,
    /// URL with an optional glob in the last path segments, e.g. `file://data/raw/*.csv`.
    pub url: String,
    /// `auto` (by extension: .csv, .csv.gz/.gz, .csv.zst/.zst, .parquet, .ndjson/.jsonl/.json) or one of
    /// `csv`, `csv.gz`, `csv.zst`, `parquet`, `ndjson`.
    #[serde(default)]
    pub format: FormatChoice,
    /// CSV field delimiter (one ASCII character).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// CSV quote character (one ASCII character).
    #[serde(default = "default_quote")]
    pub quote: char,
    /// Field texts that mean "no value" in this source (after trimming; an empty field always does), e.g.
    /// `["NA"]` for R's `write.csv`, `["."]` for SAS. Replaces `dataset.missing_values` for this source.
    #[serde(default, deserialize_with = "crate::codes::opt_codes")]
    #[schemars(with = "Option<Vec<crate::codes::Scalar>>")]
    pub missing_values: Option<Vec<String>>,
}

fn default_delimiter() -> char {
    ','
}

fn default_quote() -> char {
    '"'
}

/// A source's format as configured: `auto` (by the file name) or one format for every file of the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FormatChoice {
    #[default]
    Auto,
    Fixed(crate::lake::SourceFormat),
}

impl FormatChoice {
    /// The format of `path` under this choice.
    pub fn resolve(self, path: &str) -> std::result::Result<crate::lake::SourceFormat, String> {
        match self {
            FormatChoice::Fixed(f) => Ok(f),
            FormatChoice::Auto => crate::lake::SourceFormat::from_name(path).ok_or_else(|| {
                format!(
                    "cannot tell the format of `{path}` from its name; set `format` to one of {:?}",
                    crate::lake::SourceFormat::NAMES
                )
            }),
        }
    }
}

impl Serialize for FormatChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            FormatChoice::Auto => "auto",
            FormatChoice::Fixed(f) => f.name(),
        })
    }
}

impl schemars::JsonSchema for FormatChoice {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FormatChoice".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut names = vec!["auto"];
        names.extend(crate::lake::SourceFormat::NAMES);
        schemars::json_schema!({"type": "string", "enum": names})
    }
}

impl<'de> Deserialize<'de> for FormatChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "auto" {
            return Ok(FormatChoice::Auto);
        }
        crate::lake::SourceFormat::parse(&text)
            .map(FormatChoice::Fixed)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected `auto` or one of {:?}",
                    crate::lake::SourceFormat::NAMES
                ))
            })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    pub column: String,
    /// The control level every other arm is compared with (after synonym mapping).
    #[serde(deserialize_with = "crate::codes::code")]
    #[schemars(with = "crate::codes::Scalar")]
    pub reference: String,
}

/// The binary outcome: exactly one of `column` (values 0/1, true/false, yes/no), `column` with
/// `positive` (and optionally `negative`) levels, or a SQL `expression` over the typed columns.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeConfig {
    pub column: Option<String>,
    #[serde(default, deserialize_with = "crate::codes::opt_codes")]
    #[schemars(with = "Option<Vec<crate::codes::Scalar>>")]
    pub positive: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::codes::opt_codes")]
    #[schemars(with = "Option<Vec<crate::codes::Scalar>>")]
    pub negative: Option<Vec<String>>,
    pub expression: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventConvention {
    /// 1 (or one of `event_values`) means the event happened (R survival, lifelines).
    Event,
    /// CDISC ADaM ADTTE: `CNSR` = 1 means censored, 0 means the event happened.
    CdiscCnsr,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeToEventConfig {
    pub time: String,
    pub event: String,
    #[serde(default = "default_convention")]
    pub convention: EventConvention,
    /// Codes of `event` that mean "event" under the `event` convention (default `[1]`), e.g. `[2]` for R's
    /// 1 = censored / 2 = dead coding. Codes compare as numbers when both parse (`1.0` is `1`).
    #[serde(default, deserialize_with = "crate::codes::opt_codes")]
    #[schemars(with = "Option<Vec<crate::codes::Scalar>>")]
    pub event_values: Option<Vec<String>>,
    /// Codes that mean "censored" (default `[0]`; with `event_values: [2]`, `[1]`).
    #[serde(default, deserialize_with = "crate::codes::opt_codes")]
    #[schemars(with = "Option<Vec<crate::codes::Scalar>>")]
    pub censor_values: Option<Vec<String>>,
    /// Codes of a competing event (e.g. transplant before death): kept as state 2 in the clean table's
    /// `event_state`, and handled in the Kaplan–Meier and Cox analyses as `competing_as` says.
    #[serde(default, deserialize_with = "crate::codes::codes")]
    #[schemars(with = "Vec<crate::codes::Scalar>")]
    pub competing_values: Vec<String>,
    #[serde(default)]
    pub competing_as: CompetingAs,
    /// The unit of `time` (`days`, `months`): printed in every label of the report.
    #[serde(default)]
    pub unit: Option<String>,
}

/// How the Kaplan–Meier and Cox analyses of the event count a competing event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CompetingAs {
    /// Censored at its time (the cause-specific hazard; the report says so).
    #[default]
    Censored,
    /// An event (a composite endpoint such as "transplant or death").
    Event,
}

fn default_convention() -> EventConvention {
    EventConvention::Event
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// The whole row goes to quarantine with the rule and reason.
    Quarantine,
    /// The value becomes null (imputed later); the violation is counted in the quality report.
    Null,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Canonical levels; values are matched case-insensitively after trimming, and numerically when both
    /// are numbers (`1.0` is level `1`).
    #[serde(default, deserialize_with = "crate::codes::opt_codes")]
    #[schemars(with = "Option<Vec<crate::codes::Scalar>>")]
    pub allowed: Option<Vec<String>>,
    /// Extra spellings (case-insensitive) mapped to a canonical level.
    #[serde(default, deserialize_with = "crate::codes::code_map")]
    #[schemars(with = "BTreeMap<String, crate::codes::Scalar>")]
    pub synonyms: BTreeMap<String, String>,
    #[serde(default = "default_action")]
    pub action: RuleAction,
}

fn default_action() -> RuleAction {
    RuleAction::Quarantine
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Number,
    String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub name: String,
    pub sources: Vec<SourceConfig>,
    /// Field texts that mean "no value" in every source that does not set its own (after trimming; an empty
    /// field always does): `["NA"]` for R exports, `["."]` for SAS.
    #[serde(default, deserialize_with = "crate::codes::codes")]
    #[schemars(with = "Vec<crate::codes::Scalar>")]
    pub missing_values: Vec<String>,
    /// Who a row belongs to: a column (`id: USUBJID`), several (`id: [patient, eye]`, one row per eye), or
    /// `null` for a file with one row per patient and no id (the row's file and line are its id).
    /// Pseudonymized before anything leaves the clean stage.
    pub id: SubjectId,
    /// The patient when rows are clustered within one (one row per eye, lesion, episode): the clean table's
    /// `cluster`, kept whole in one split, and the cluster of the robust (sandwich) standard errors.
    #[serde(default)]
    pub cluster: Option<String>,
    /// A second row with an id already accepted: `first` keeps the first and quarantines the rest (counted,
    /// and bounded by `preprocessing.max_dropped_share`); `error` fails the run naming the file and line.
    #[serde(default)]
    pub repeated_ids: RepeatedIds,
    pub arm: ArmConfig,
    pub site: Option<String>,
    pub outcome: OutcomeConfig,
    pub time_to_event: Option<TimeToEventConfig>,
    /// Further time-to-event endpoints (e.g. one per ADTTE parameter): name → its time and event, each
    /// analysed by arm as `time_to_event` is (Kaplan–Meier, log-rank, Cox) over the survival analysis's
    /// population, and kept in the clean table as `time_<name>`, `event_<name>`. A row whose time or event for
    /// one of them is missing or invalid stays (the primary endpoint decides that) and is left out of that
    /// endpoint's analysis, counted.
    #[serde(default)]
    pub secondary_time_to_event: BTreeMap<String, TimeToEventConfig>,
    /// Numeric covariates (source columns or `derived` names).
    #[serde(default)]
    pub numeric: Vec<String>,
    /// Categorical covariates.
    #[serde(default)]
    pub categorical: Vec<String>,
    /// Model inputs, when not every covariate is one: `numeric` and `categorical` are what Table 1, the
    /// subgroups and the adjusted analyses describe; `features` (default: all of them) what the models see. A
    /// feature that is, or is derived from, the outcome, time or event column is refused.
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// The reference level of a categorical covariate in the adjusted analyses (default: the first level in
    /// sort order), e.g. `{sex: M, stage: "1"}`.
    #[serde(default, deserialize_with = "crate::codes::code_map")]
    #[schemars(with = "BTreeMap<String, crate::codes::Scalar>")]
    pub reference_levels: BTreeMap<String, String>,
    /// Derived numeric columns: name → SQL expression over typed source columns (e.g. BMI).
    #[serde(default)]
    pub derived: BTreeMap<String, String>,
    /// Derived text columns for the id, cluster, arm or site: name → SQL expression over typed source columns,
    /// e.g. `{arm_label: "CASE WHEN trtcd = 1 THEN 'active' ELSE 'placebo' END"}` or `{center: "substr(usubjid,
    /// 1, 3)"}`. Computed before the checks; not model inputs (serving could not compute them).
    #[serde(default)]
    pub derived_text: BTreeMap<String, String>,
    /// Other source columns the filter or the outcome expression use, with their type.
    #[serde(default)]
    pub extra: BTreeMap<String, ColumnType>,
    /// Value rules per source column.
    #[serde(default)]
    pub rules: BTreeMap<String, Rule>,
    /// SQL row filter over typed columns; rows it rejects are counted as excluded, never dropped silently.
    pub filter: Option<String>,
    /// Record tables: sources with any number of records per subject (ADaM's ADTTE, BDS datasets such as
    /// ADQS/ADLB/ADVS, ADAE; SDTM domains), joined to the subject table on the subject id. Each is cleaned into
    /// its own table (`processed/tables/<name>/`), and its `pivot` columns become columns of the subject table.
    #[serde(default)]
    pub tables: BTreeMap<String, RecordTable>,
    /// Analysis populations: name → SQL condition over the typed columns, e.g. `{safety: "SAFFL = 'Y'",
    /// efficacy: "EFFFL = 'Y'"}`. Unlike `filter`, no row leaves the clean table for one: each becomes a boolean
    /// column `population_<name>` of it, the flow counts each, and each analysis (`analysis.population`,
    /// `analysis.populations`) and the models (`training.population`) name theirs.
    #[serde(default)]
    pub populations: BTreeMap<String, String>,
}

/// The clean table's column that says whether a row is in population `name`.
pub fn population_column(name: &str) -> String {
    format!("population_{name}")
}

/// A table of records keyed by the subject id (the subject table's id columns, under the same names).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordTable {
    /// Names of `dataset.sources` that hold this table's records (a source feeds one table).
    pub sources: Vec<String>,
    /// Columns kept in the table's clean table, as text, and those its pivots' conditions read.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Columns of the subject table taken from this table's records: name → which records and what of them.
    #[serde(default)]
    pub pivot: BTreeMap<String, Pivot>,
    /// Boolean columns of the table's clean records, each a SQL condition over its columns, e.g.
    /// `{teae: "TRTEMFL = 'Y'", serious: "AESER = 'Y'"}`; written as `flag_<name>` (false where the condition
    /// is NULL). The safety tables count records by them.
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
}

/// The column of a record table's clean records that holds flag `name`.
pub fn flag_column(name: &str) -> String {
    format!("flag_{name}")
}

/// One column of the subject table from a record table: the `value` of the one record per subject that
/// `where` selects (a second such record is quarantined as a repeat; no record gives NULL), or with
/// `count: true` the number of such records (0 for a subject without any).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pivot {
    /// SQL condition over the table's columns (text, NULL where empty), e.g. `PARAMCD = 'TTDE'` or
    /// `PARAMCD = 'ACTOT' AND AVISIT = 'Week 24' AND ANL01FL = 'Y'`.
    #[serde(rename = "where")]
    pub condition: String,
    pub value: Option<String>,
    #[serde(default)]
    pub count: bool,
    /// How the report names the column (e.g. `ADAS-Cog(11) change from baseline at week 24`).
    pub label: Option<String>,
    /// A subject with a second record that `where` selects, for a `value` pivot: `error` (the default) fails
    /// the run naming both records' files and lines, since the condition does not pick one record; `first`
    /// keeps the first and quarantines the others.
    #[serde(default = "default_pivot_repeats")]
    pub repeated: RepeatedIds,
    /// With `take`: the record column (an ISO 8601 date or date-time, or any text that sorts) that orders a
    /// subject's matching records, e.g. `VSDTC`. A record without it is not taken.
    pub order_by: Option<String>,
    /// `first` or `last` by `order_by`: the one record taken among a subject's matching records (the others
    /// stay accepted records of the table, not repeats), e.g. the last value before the first dose.
    pub take: Option<Take>,
    /// With `order_by`: only records at or before the subject's value of this subject-table column, e.g.
    /// `RFXSTDTC` (SDTM DM's first dose). ISO 8601 values compare on the precision both have: a date-time on
    /// the day of a date-only first dose counts as before it.
    pub before: Option<String>,
}

/// Which of a subject's ordered matching records a pivot takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Take {
    First,
    Last,
}

fn default_pivot_repeats() -> RepeatedIds {
    RepeatedIds::Error
}

/// The subject id of a row: one column, a composite of several, or none (the row itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectId {
    Column(String),
    Composite(Vec<String>),
    /// One row per patient and no id column: the row's source and line identify it.
    Row,
}

impl SubjectId {
    /// The source columns the id is made of.
    pub fn columns(&self) -> &[String] {
        match self {
            SubjectId::Column(c) => std::slice::from_ref(c),
            SubjectId::Composite(v) => v,
            SubjectId::Row => &[],
        }
    }

    /// How errors and the quarantine name the id: `USUBJID`, `patient+eye`, `<row>`.
    pub fn label(&self) -> String {
        match self {
            SubjectId::Row => "<row>".into(),
            other => other.columns().join("+"),
        }
    }
}

impl Serialize for SubjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            SubjectId::Column(c) => s.serialize_str(c),
            SubjectId::Composite(v) => v.serialize(s),
            SubjectId::Row => s.serialize_none(),
        }
    }
}

/// How `dataset.id` is written: one column, several, or `null` (each row its own subject).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum SubjectIdForm {
    One(String),
    Many(Vec<String>),
}

impl schemars::JsonSchema for SubjectId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SubjectId".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Option<SubjectIdForm>>::json_schema(g)
    }
}

impl<'de> Deserialize<'de> for SubjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use SubjectIdForm as Form;
        Ok(match Option::<Form>::deserialize(d)? {
            None => SubjectId::Row,
            Some(Form::One(c)) => SubjectId::Column(c),
            Some(Form::Many(v)) if v.len() == 1 => SubjectId::Column(v[0].clone()),
            Some(Form::Many(v)) => SubjectId::Composite(v),
        })
    }
}

/// What the clean stage does with a second row of an id it accepted already.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RepeatedIds {
    /// Keep the first row, quarantine the others (counted; bounded by `preprocessing.max_dropped_share`).
    #[default]
    First,
    /// Fail the run at the first repeat, naming its file and line.
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Environment variable holding the pseudonymization key (at least 32 bytes).
    pub key_env: String,
    /// A development key for the bundled sample and public example data only; real trials must set `key_env`.
    pub dev_key: Option<String>,
    /// Whether `dev_key` may be used when `key_env` is unset. Pseudonyms made with a published key reverse, so
    /// a config copied from an example refuses to run without the real key unless it says so.
    #[serde(default)]
    pub allow_dev_key: bool,
}

/// The fixed columns of the clean table (see ARCHITECTURE.md).
const CLEAN_TABLE_COLUMNS: [&str; 8] = [
    "subject_id",
    "cluster",
    "arm",
    "site",
    "outcome",
    "time",
    "event",
    "event_state",
];

/// The widest hidden layer and the deepest network a config may ask for: beyond them training would not finish
/// on any machine this runs on, so the config is refused instead of hanging.
pub const MAX_LAYER_WIDTH: usize = 16_384;
pub const MAX_HIDDEN_LAYERS: usize = 32;

/// The shortest pseudonymization key accepted (HMAC-SHA256's block is 64 bytes; a key below 32 bytes is guessable).
pub const MIN_KEY_BYTES: usize = 32;

/// Environment variables that hold something else: never a key.
const NOT_KEY_VARIABLES: [&str; 12] = [
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "HOSTNAME", "LANG", "TERM",
    "TMPDIR", "TZ",
];

/// Where the pseudonymization key came from, for the run summary (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Environment(String),
    DevKey,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Environment(v) => write!(f, "environment variable {v}"),
            KeySource::DevKey => {
                f.write_str("privacy.dev_key (a development key: not for real trials)")
            }
        }
    }
}

impl Config {
    /// The JSON Schema of a config file, derived from the types the file is read into: every key, its type,
    /// its documentation, and no unknown keys (`additionalProperties: false`, as reading refuses them).
    /// What only [`Config::validate`] checks (columns that exist, SQL that parses) is beyond a schema.
    pub fn json_schema() -> serde_json::Value {
        let mut schema = schemars::schema_for!(Config).to_value();
        if let Some(o) = schema.as_object_mut() {
            o.insert("title".into(), "trialflow config".into());
        }
        schema
    }

    /// The pseudonymization key and where it came from: the variable `privacy.key_env` (at least
    /// [`MIN_KEY_BYTES`], not blank), else `privacy.dev_key` when `privacy.allow_dev_key` says it may be used.
    pub fn pseudonym_key(&self) -> Result<(Vec<u8>, KeySource)> {
        self.key_from(std::env::var(&self.privacy.key_env).ok())
    }

    /// [`Config::pseudonym_key`] with the variable's value given.
    fn key_from(&self, env_value: Option<String>) -> Result<(Vec<u8>, KeySource)> {
        let p = &self.privacy;
        match env_value {
            Some(k) if !k.is_empty() => {
                if k.trim().is_empty() || k.len() < MIN_KEY_BYTES {
                    return Err(self.err(
                        "privacy.key_env",
                        format!(
                            "the key in {} is {} bytes{}; expected at least {MIN_KEY_BYTES} bytes of secret",
                            p.key_env,
                            k.len(),
                            if k.trim().is_empty() { " of blanks" } else { "" }
                        ),
                    ));
                }
                Ok((k.into_bytes(), KeySource::Environment(p.key_env.clone())))
            }
            _ => match (&p.dev_key, p.allow_dev_key) {
                (Some(k), true) => Ok((k.clone().into_bytes(), KeySource::DevKey)),
                (Some(_), false) => Err(self.err(
                    "privacy.key_env",
                    format!(
                        "environment variable {} is not set; the config's dev_key is used only with \
                         `privacy.allow_dev_key: true` (public or sample data: pseudonyms made with a published \
                         key can be reversed)",
                        p.key_env
                    ),
                )),
                (None, _) => Err(self.err(
                    "privacy.key_env",
                    format!(
                        "environment variable {} is not set and no dev_key is configured",
                        p.key_env
                    ),
                )),
            },
        }
    }

    /// `privacy`: a key variable that can hold a key.
    fn check_privacy(&self) -> Result<()> {
        let v = &self.privacy.key_env;
        if v.is_empty() || NOT_KEY_VARIABLES.contains(&v.as_str()) {
            return Err(self.err(
                "privacy.key_env",
                format!("`{v}` holds something else; name the variable that holds the pseudonymization key"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    pub train: f64,
    pub val: f64,
    pub test: f64,
    /// Salt of the id hash that assigns splits; change it to draw a new split.
    pub salt: String,
    /// Stratify on the outcome: within each outcome class subjects are ordered by their salted hash and cut at
    /// the fractions, so every split carries the trial's event rate (to one subject per class).
    #[serde(default)]
    pub stratify: bool,
    /// Keep every subject of a group in one split (a clean-table column, e.g. `site`): the salted hash of the
    /// group's value assigns the whole group, so fractions hold only approximately with few groups.
    #[serde(default)]
    pub group_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreprocessingConfig {
    pub split: SplitConfig,
    /// A directory of the preprocessing SQL (`typed.sql` … `clean.sql`, `split.sql`), run instead of the SQL
    /// generated from the contract: write it with `trialflow sql`, then edit it. Relative to the working
    /// directory, as local sources are.
    #[serde(default)]
    pub sql_dir: Option<String>,
    /// A categorical level the train split never had, at encoding time (val/test rows, serving, batch
    /// scoring): `zeros` (default: encoded as missing) or `error` (the record is refused, naming the field).
    #[serde(default)]
    pub unseen_level: crate::features::UnseenLevel,
    /// The longest record (a CSV record, an NDJSON line, a Parquet row group's average row) the cleaning path
    /// reads; a longer one is an error naming its file and line, so that memory stays bounded whatever a
    /// file holds.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// The largest share of input rows the clean task may drop for a reason the contract did not state (a
    /// repeated id, an unparseable number, a missing-value look-alike, an unknown outcome or event code, a
    /// malformed record) before it fails with exit 3 naming the likely cause, instead of analysing a
    /// population other than the one described. Range and level rules, the filter and exact duplicate rows
    /// are the contract's own and do not count.
    #[serde(default = "default_max_dropped_share")]
    pub max_dropped_share: f64,
}

fn default_max_dropped_share() -> f64 {
    0.01
}

fn default_max_record_bytes() -> usize {
    16 << 20
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
}

/// A feed-forward network: `hidden` widths, each followed by `activation` and its `dropout`, then one logit.
/// No hidden layers is logistic regression.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Dropout after each hidden layer (same length as `hidden`, or empty for none).
    #[serde(default)]
    pub dropout: Vec<f32>,
    #[serde(default = "default_activation")]
    pub activation: Activation,
}

fn default_activation() -> Activation {
    Activation::Relu
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Epochs without validation-loss improvement before stopping; the best epoch's weights are kept.
    pub patience: usize,
    /// Keep the best validation epoch's weights (Keras' `restore_best_weights`); false keeps the last epoch's.
    #[serde(default = "default_true")]
    pub restore_best: bool,
    #[serde(default = "default_device")]
    pub device: DeviceChoice,
    /// Probability at or above which a prediction is positive (accuracy, sensitivity, specificity).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Bootstrap resamples for the metrics' 95% intervals (seeded by `seed`); 0 turns intervals off.
    #[serde(default = "default_resamples")]
    pub bootstrap_resamples: usize,
    /// Columns of the processed table the test metrics are sliced by, besides the arm and the site.
    #[serde(default)]
    pub slices: Vec<String>,
    /// What early stopping watches on the validation split (patience epochs without improvement).
    #[serde(default)]
    pub monitor: Monitor,
    /// Weight of the positive class in the loss (PyTorch's `pos_weight`), e.g. negatives/positives for a rare
    /// outcome; unset = 1.
    #[serde(default)]
    pub pos_weight: Option<f64>,
    /// Permutation feature importance on the test split: repeats per feature (0 turns it off).
    #[serde(default = "default_importance_repeats")]
    pub importance_repeats: usize,
    /// Above this encoded size (rows × model inputs × 4 bytes) the train and validation splits are streamed
    /// from the lake in blocks instead of held in memory (CPU training; the test split is always held, its
    /// rows are needed together for the bootstrap, slices and importance).
    #[serde(default = "default_max_in_memory_mib")]
    pub max_in_memory_mib: u64,
    /// Rows per block when streaming: the unit of shuffling within an epoch (row groups are shuffled too).
    #[serde(default = "default_stream_block_rows")]
    pub stream_block_rows: usize,
    /// The population (of `dataset.populations`) the models are trained and evaluated on: the feature splits
    /// hold its rows only. Default: every accepted row with the outcome.
    #[serde(default)]
    pub population: Option<String>,
    /// What the models predict: the binary `outcome` (default), a `continuous` value or a `time_to_event`.
    /// One endpoint per configuration, so that every candidate is scored, gated and served alike.
    #[serde(default)]
    pub endpoint: Endpoint,
    /// The endpoint's column: for `continuous`, a numeric covariate of the clean table that no model reads
    /// (e.g. a pivot's change from baseline); for `time_to_event`, a `dataset.secondary_time_to_event` name
    /// (default: `dataset.time_to_event`).
    #[serde(default)]
    pub target: Option<String>,
    /// The loss of a `continuous` endpoint.
    #[serde(default)]
    pub loss: RegressionLoss,
    /// Huber's δ, in standard deviations of the train split's target (`loss: huber`).
    #[serde(default = "default_huber_delta")]
    pub huber_delta: f64,
    /// How tied event times enter the Cox partial likelihood of a `time_to_event` endpoint.
    #[serde(default)]
    pub ties: CoxTies,
    /// Times (the endpoint's unit) at which a `time_to_event` model is evaluated (time-dependent AUC, Brier
    /// score, integrated Brier score, calibration at the last) and, by default, at which serving reports
    /// survival probabilities.
    #[serde(default)]
    pub horizons: Vec<f64>,
}

/// Clusters of patients by their standardized baseline features (the model inputs but the arm) on the train
/// split: the number chosen over a range, its stability by bootstrap, each cluster's profile and outcome by arm.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusteringConfig {
    #[serde(default)]
    pub method: ClusterMethod,
    /// The numbers of clusters tried, `[from, to]` inclusive: the best silhouette (k-means) or the lowest BIC
    /// (Gaussian mixture) wins.
    pub k: [usize; 2],
    /// Bootstrap resamples of the train split for stability (the adjusted Rand index of each refit against the
    /// chosen clustering); 0 turns it off.
    #[serde(default = "default_cluster_bootstrap")]
    pub bootstrap: usize,
    /// Silhouettes are computed over at most this many train rows (seeded sample; scikit-learn's
    /// `silhouette_score(sample_size=…)`): the exact score costs rows² distances.
    #[serde(default = "default_silhouette_rows")]
    pub silhouette_rows: usize,
}

fn default_cluster_bootstrap() -> usize {
    20
}

fn default_silhouette_rows() -> usize {
    2000
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMethod {
    /// k-means with k-means++ seeding (scikit-learn's `KMeans`), chosen by silhouette.
    #[default]
    Kmeans,
    /// A Gaussian mixture with full covariances fitted by EM from the k-means clusters (scikit-learn's
    /// `GaussianMixture`), chosen by BIC.
    Gmm,
}

/// What a model predicts.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// The dataset's 0/1 `outcome`: a sigmoid head and binary cross-entropy.
    #[default]
    Binary,
    /// A numeric column: an identity head and the squared error (or Huber's loss).
    Continuous,
    /// Time and event: a linear risk score and the Cox negative log partial likelihood (DeepSurv), with a
    /// Breslow baseline hazard for survival curves.
    TimeToEvent,
}

impl Endpoint {
    /// Target values per row: the outcome or the value; the time and the event.
    pub fn target_width(self) -> usize {
        match self {
            Endpoint::TimeToEvent => 2,
            _ => 1,
        }
    }
}

/// The loss of a continuous endpoint.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RegressionLoss {
    #[default]
    Mse,
    Huber,
}

fn default_huber_delta() -> f64 {
    1.0
}

fn default_max_in_memory_mib() -> u64 {
    2048
}

fn default_stream_block_rows() -> usize {
    262_144
}

fn default_importance_repeats() -> usize {
    5
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Lowest validation loss (binary cross-entropy).
    #[default]
    ValLoss,
    /// Highest validation ROC AUC.
    ValAuc,
}

fn default_threshold() -> f64 {
    0.5
}

fn default_resamples() -> usize {
    1000
}

fn default_device() -> DeviceChoice {
    DeviceChoice::Cpu
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServingConfig {
    pub host: String,
    pub port: u16,
    /// Name under which the promoted model is served (`/v1/models/<name>`).
    pub model_name: String,
    /// How often the model repository is checked for new versions.
    pub poll_seconds: u64,
    /// Largest request body; larger ones are refused with 413 before they are read in full.
    pub max_body_bytes: usize,
    /// Most rows (instances) one predict/infer request may carry.
    pub max_rows: usize,
    /// A request still running after this long is answered 503 (its work is abandoned).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests handled at once; one more is refused with 503 at once rather than queued.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    /// Connections open at once; one more is answered 503 and closed, so idle or slow clients cannot take
    /// every file descriptor the process has.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The longest wait for a request's headers to arrive in full, from the connection opening or the
    /// previous response: it closes both a client that trickles its headers and an idle keep-alive connection.
    #[serde(default = "default_io_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// The longest a request body may take to arrive once its headers have (408 after it).
    #[serde(default = "default_io_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// The longest a response write may wait on a client that does not read; the connection is then closed.
    #[serde(default = "default_io_timeout_ms")]
    pub write_timeout_ms: u64,
    /// A numeric input this many training standard deviations from the training mean is scored but
    /// counted (`trialflow_inputs_out_of_range_total`) and named in the `Trialflow-Warning` header.
    #[serde(default = "default_out_of_range_sd")]
    pub out_of_range_sd: f64,
    /// Name of an environment variable holding a bearer token; when set, model endpoints require
    /// `Authorization: Bearer <token>` (health and metrics stay open for probes and scrapers).
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// Which blessed versions are loaded, for every model in the repository.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Version labels per model (`labels: {cv_outcome: {stable: 1, canary: 2}}`), as TF Serving's
    /// `/labels/{label}` routes use them.
    #[serde(default)]
    pub labels: BTreeMap<String, BTreeMap<String, u64>>,
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn default_max_concurrent() -> usize {
    256
}

fn default_max_connections() -> usize {
    512
}

fn default_io_timeout_ms() -> u64 {
    10_000
}

fn default_out_of_range_sd() -> f64 {
    10.0
}

/// TF Serving's model version policy: `latest` (the newest blessed version only; an older one stays until the
/// new one has loaded), `all`, or `{specific: [1, 2]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionPolicy {
    #[default]
    Latest,
    All,
    Specific(Vec<u64>),
}

impl VersionPolicy {
    /// The versions to serve out of the blessed ones (sorted ascending).
    pub fn select(&self, blessed: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::Latest => blessed.iter().max().map(|v| vec![*v]).unwrap_or_default(),
            VersionPolicy::All => blessed.to_vec(),
            VersionPolicy::Specific(want) => blessed
                .iter()
                .copied()
                .filter(|v| want.contains(v))
                .collect(),
        }
    }
}

impl ServingConfig {
    /// Checks what the types cannot; `file` names the config in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |k: &str, m: &str| Err(Error::config(file, format!("serving.{k}"), m));
        if self.max_rows == 0 {
            return err("max_rows", "expected at least 1");
        }
        if self.max_body_bytes == 0 {
            return err("max_body_bytes", "expected at least 1");
        }
        if self.max_concurrent_requests == 0 {
            return err("max_concurrent_requests", "expected at least 1");
        }
        if self.request_timeout_ms == 0 {
            return err("request_timeout_ms", "expected at least 1");
        }
        if self.max_connections < self.max_concurrent_requests {
            return err(
                "max_connections",
                "expected at least serving.max_concurrent_requests",
            );
        }
        for (k, v) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
        ] {
            if v == 0 {
                return err(k, "expected at least 1");
            }
        }
        if !(self.out_of_range_sd.is_finite() && self.out_of_range_sd > 0.0) {
            return err("out_of_range_sd", "expected a positive number");
        }
        if !is_model_name(&self.model_name) {
            return err(
                "model_name",
                "expected letters, digits, `_`, `-` or `.` (not a path)",
            );
        }
        if let Some(var) = &self.auth_token_env
            && (var.is_empty() || var.contains('='))
        {
            return err(
                "auth_token_env",
                "expected the name of an environment variable",
            );
        }
        if let VersionPolicy::Specific(v) = &self.version_policy
            && v.is_empty()
        {
            return err("version_policy.specific", "expected at least one version");
        }
        for (model, labels) in &self.labels {
            for label in labels.keys() {
                if !is_model_name(label) || label.parse::<u64>().is_ok() {
                    return Err(Error::config(
                        file,
                        format!("serving.labels.{model}.{label}"),
                        "expected a label of letters, digits, `_` or `-` that is not a number",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Model names and labels double as path segments: no separators, no `.`/`..`.
pub fn is_model_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// The quality gate. Metric names are those of `metrics.json` (`roc_auc`, `pr_auc`, `brier`, `log_loss`,
/// `accuracy`, `sensitivity`, `specificity`, `ece`, each also with `_ci_lower` / `_ci_upper`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Bounds on the candidate's test metrics.
    #[serde(default)]
    pub checks: Vec<MetricCheck>,
    /// Bounds every slice (arm, site, `training.slices`) with at least `min_rows` rows must meet.
    #[serde(default)]
    pub slice_checks: Vec<SliceCheck>,
    /// No regression beyond a margin against the version now served, both scored on this test split.
    #[serde(default)]
    pub regression: Option<RegressionCheck>,
    /// A promotion lock older than this is taken to be left by a killed run and is broken.
    #[serde(default = "default_lock_stale")]
    pub lock_stale_seconds: u64,
}

fn default_lock_stale() -> u64 {
    600
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricCheck {
    pub metric: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SliceCheck {
    pub metric: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// Smaller slices are reported but not checked (too few rows for the metric to mean anything).
    #[serde(default = "default_slice_rows")]
    pub min_rows: usize,
}

fn default_slice_rows() -> usize {
    30
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegressionCheck {
    pub metric: String,
    /// How much worse than the served version the candidate may be (lower for AUCs and rates, higher for
    /// Brier, log loss and ECE).
    pub margin: f64,
}

/// Experiment tracking. Every training run is recorded in the lake (`candidates/<model>/metrics.json` and the
/// run record); with `mlflow_uri` it is also logged to that MLflow tracking server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// e.g. `http://mlflow:5000`.
    #[serde(default)]
    pub mlflow_uri: Option<String>,
    /// Experiment name (default: `dataset.name`).
    #[serde(default)]
    pub experiment: Option<String>,
    /// Fail the training task when MLflow cannot be reached (default: warn and record the failure).
    #[serde(default)]
    pub required: bool,
}

/// Operations: where batch runs report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Prometheus Pushgateway base URL (e.g. `http://pushgateway:9091`); pipeline runs push their summary
    /// metrics there. Unset: nothing is pushed.
    #[serde(default)]
    pub pushgateway_url: Option<String>,
    /// The `job` grouping key (default `trialflow_pipeline`).
    #[serde(default)]
    pub pushgateway_job: Option<String>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CoxTies {
    /// R survival's and lifelines' default.
    #[default]
    Efron,
    /// SAS PHREG's usual choice.
    Breslow,
}

/// A subgroup for the forest plot: a categorical column (or the site), or a numeric one cut at `bands`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubgroupConfig {
    pub column: String,
    /// Cut points for a numeric column: `[65]` gives `< 65` and `>= 65`.
    #[serde(default)]
    pub bands: Vec<f64>,
    /// Pre-specified in the protocol (true) or exploratory (false); the report marks which.
    #[serde(default = "default_true")]
    pub prespecified: bool,
}

fn default_true() -> bool {
    true
}

/// The trial analysis (section optional: without it, no survival times, Efron ties, no adjustment or subgroups).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Times (unit of the time column) at which survival and numbers at risk are reported.
    #[serde(default)]
    pub survival_times: Vec<f64>,
    #[serde(default = "default_ties")]
    pub ties: CoxTies,
    /// Covariates of the adjusted Cox model (complete cases).
    #[serde(default)]
    pub adjust: Vec<String>,
    #[serde(default)]
    pub subgroups: Vec<SubgroupConfig>,
    /// Newton–Raphson iterations allowed for Cox and logistic fits; a fit that needs more is reported as not
    /// converged, with the count.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: usize,
    /// A subgroup column with more levels than this is not analysed (one Cox or logistic fit per level and
    /// arm, and an interaction model as wide): the report says it was skipped and why.
    #[serde(default = "default_max_subgroup_levels")]
    pub max_subgroup_levels: usize,
    /// Draw each Kaplan–Meier curve's 95% confidence band in the report.
    #[serde(default)]
    pub km_ci_bands: bool,
    /// The population (of `dataset.populations`) of every analysis that `populations` does not name; default:
    /// every accepted row.
    #[serde(default)]
    pub population: Option<String>,
    /// The population of one analysis: `table1`, `outcome` (the binary outcome's comparisons and clustered
    /// model), `survival` or `subgroups`.
    #[serde(default)]
    pub populations: AnalysisPopulations,
    /// Continuous endpoints (e.g. a change from baseline): each described by arm and compared by ANCOVA.
    #[serde(default)]
    pub continuous: Vec<ContinuousEndpoint>,
    /// The adverse-event tables, from a record table such as ADAE.
    #[serde(default)]
    pub safety: Option<SafetyConfig>,
    /// Categorical columns (or the site) whose levels stratify the log-rank test and a Cox model of the arm
    /// (R: `strata()`), e.g. the randomization's stratification factors.
    #[serde(default)]
    pub strata: Vec<String>,
    /// The horizon (unit of the time column) of the restricted mean survival time per arm and its differences.
    #[serde(default)]
    pub rmst_horizon: Option<f64>,
    /// The disposition table: completed and discontinued subjects with the reasons, by arm.
    #[serde(default)]
    pub disposition: Option<DispositionConfig>,
    /// Lab shift tables from a BDS record table such as ADLBC.
    #[serde(default)]
    pub lab_shifts: Option<LabShiftConfig>,
}

/// Lab shifts: per parameter, each subject's baseline reference-range indicator against the worst indicator
/// among its post-baseline records, by arm, over the subjects of `population`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabShiftConfig {
    /// A record table of `dataset.tables` (e.g. `adlbc`).
    pub table: String,
    pub population: Option<String>,
    /// The flag (`dataset.tables.<table>.flags`) of the post-baseline records; default: every record.
    pub records: Option<String>,
    /// The table's columns of the parameter (`PARAMCD`), the baseline indicator (`BNRIND`) and the record's
    /// indicator (`ANRIND`).
    pub parameter: String,
    pub baseline: String,
    pub value: String,
    /// The indicator's levels from normal to worst (e.g. `[N, L, H]`): the worst post-baseline level is the
    /// last of these among a subject's records; a shift from the first level to any other is a new abnormality.
    pub levels: Vec<String>,
}

/// Subject-table text columns (`dataset.extra` or `categorical`) of each subject's end-of-study status and
/// reason, e.g. ADSL's `EOSSTT` and `DCSREAS`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DispositionConfig {
    pub status: String,
    pub reason: Option<String>,
    /// The status values of a subject who completed (e.g. `[COMPLETED]`); every other value is a
    /// discontinuation, with its reason.
    pub completed: Vec<String>,
    /// Default: every accepted row (the randomized subjects).
    pub population: Option<String>,
}

/// The safety tables: subjects and events by arm from the records of `table`, over the subjects of
/// `population` (default: `analysis.population`); arms are the subject table's.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// A record table of `dataset.tables` (e.g. `adae`).
    pub table: String,
    pub population: Option<String>,
    /// The flag (`dataset.tables.<table>.flags`) of the records counted, e.g. `teae` for treatment-emergent
    /// events; default: every record of the table.
    pub events: Option<String>,
    /// Rows of the overview after "any event": flags of the table (e.g. `serious`, `related`,
    /// `discontinued`, `fatal`), each counted among the counted records.
    #[serde(default)]
    pub overview: Vec<String>,
    /// The table's column of the system organ class (e.g. `AEBODSYS`) and of the preferred term (`AEDECOD`).
    pub soc: String,
    pub term: String,
    /// Severity or grade: its column and its levels from mildest to worst (e.g. `AESEV`,
    /// `[MILD, MODERATE, SEVERE]`); each subject counted once, at the worst level among its counted records.
    pub severity: Option<SeverityConfig>,
    /// A numeric subject-table column of each subject's exposure (e.g. `TRTDURD`), for exposure-adjusted
    /// incidence rates.
    pub exposure: Option<String>,
    /// The exposure column's unit: `days` (default), `weeks`, `months` or `years`.
    #[serde(default = "default_exposure_unit")]
    pub exposure_unit: String,
}

fn default_exposure_unit() -> String {
    "days".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeverityConfig {
    pub column: String,
    pub levels: Vec<String>,
}

/// A continuous endpoint: a numeric covariate of the contract (e.g. a pivot of a BDS dataset's CHG at one
/// visit), compared across arms by least squares (ANCOVA) adjusted for `adjust` (e.g. its baseline), over its
/// population's complete cases.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContinuousEndpoint {
    pub column: String,
    #[serde(default)]
    pub adjust: Vec<String>,
    /// Default: `analysis.population`.
    pub population: Option<String>,
    /// How the arms' differences against the reference are adjusted for multiplicity: p-values and CIs.
    #[serde(default)]
    pub multiplicity: Multiplicity,
    /// A dose score per arm (e.g. the dose in mg): a linear trend across the arms' least-squares means is
    /// tested with the centred scores as the contrast (R: `emmeans::contrast(emm, list(trend = …))`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<BTreeMap<String, f64>>,
}

/// The multiplicity adjustment of several arms compared with one reference.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Multiplicity {
    #[default]
    None,
    /// Each p-value times the number of comparisons; CIs at 1 - 0.05/k.
    Bonferroni,
    /// Dunnett's many-to-one: the joint multivariate t of the comparisons (R: `emmeans` `adjust = "mvt"`).
    Dunnett,
}

impl Multiplicity {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bonferroni => "bonferroni",
            Self::Dunnett => "dunnett",
        }
    }
}

/// The population each analysis of the report is computed over (unset: `analysis.population`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisPopulations {
    pub table1: Option<String>,
    pub outcome: Option<String>,
    pub survival: Option<String>,
    pub subgroups: Option<String>,
}

impl AnalysisConfig {
    /// The population of analysis `section` (`table1`, `outcome`, `survival`, `subgroups`), if it has one.
    pub fn population_of(&self, section: &str) -> Option<&str> {
        let p = &self.populations;
        let own = match section {
            "table1" => &p.table1,
            "outcome" => &p.outcome,
            "survival" => &p.survival,
            "subgroups" => &p.subgroups,
            _ => &None,
        };
        own.as_deref().or(self.population.as_deref())
    }
}

fn default_max_iterations() -> usize {
    50
}

fn default_max_subgroup_levels() -> usize {
    50
}

fn default_ties() -> CoxTies {
    CoxTies::Efron
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            survival_times: Vec::new(),
            ties: CoxTies::Efron,
            adjust: Vec::new(),
            subgroups: Vec::new(),
            max_iterations: default_max_iterations(),
            max_subgroup_levels: default_max_subgroup_levels(),
            km_ci_bands: false,
            population: None,
            populations: AnalysisPopulations::default(),
            continuous: Vec::new(),
            safety: None,
            strata: Vec::new(),
            rmst_horizon: None,
            disposition: None,
            lab_shifts: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DagConfig {
    /// Tasks run at once at most.
    pub max_parallel: usize,
    /// Extra attempts for infrastructure failures (never for bad data).
    pub retries: u32,
    pub backoff_ms: u64,
    /// A lake on object storage: how often the run's lock object is rewritten, and how long without a
    /// rewrite before another run takes the lock as abandoned (a killed or frozen holder).
    #[serde(default = "default_lock_heartbeat")]
    pub lock_heartbeat_seconds: u64,
    #[serde(default = "default_run_lock_stale")]
    pub lock_stale_seconds: u64,
}

fn default_lock_heartbeat() -> u64 {
    15
}

fn default_run_lock_stale() -> u64 {
    120
}

/// Where the preprocessing SQL runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionConfig {
    /// `local` (DataFusion in this process) or `df://host:port`, a Ballista scheduler (a build with the
    /// `ballista` cargo feature): the same SQL then runs on the cluster.
    #[serde(default)]
    pub engine: Engine,
}

/// The SQL engine, parsed and checked when the config is read: `local` or `df://host:port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    #[default]
    Local,
    /// A Ballista scheduler at `host:port`.
    Ballista(String),
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "local" {
            return Ok(Engine::Local);
        }
        let Some(addr) = s.strip_prefix("df://") else {
            return Err("expected `local` or `df://host:port` (a Ballista scheduler)".into());
        };
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok || addr.contains('/') {
            return Err("expected `df://host:port`, e.g. `df://127.0.0.1:50050`".into());
        }
        Ok(Engine::Ballista(addr.to_string()))
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Local => f.write_str("local"),
            Engine::Ballista(addr) => write!(f, "df://{addr}"),
        }
    }
}

impl Serialize for Engine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for Engine {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Engine".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "`local`, or `df://host:port`: a Ballista scheduler",
            "pattern": "^(local|df://.+:[0-9]+)$"
        })
    }
}

impl<'de> Deserialize<'de> for Engine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl ExecutionConfig {
    /// The scheduler's `host:port` when the engine is a Ballista cluster.
    pub fn ballista_scheduler(&self) -> Option<&str> {
        match &self.engine {
            Engine::Local => None,
            Engine::Ballista(addr) => Some(addr),
        }
    }
}

impl Default for DagConfig {
    fn default() -> Self {
        Self {
            max_parallel: 2,
            retries: 2,
            backoff_ms: 500,
            lock_heartbeat_seconds: default_lock_heartbeat(),
            lock_stale_seconds: default_run_lock_stale(),
        }
    }
}

impl Config {
    /// Columns a split may be grouped by (`preprocessing.split.group_by`), as the contract names them: the arm,
    /// the site, categorical and extra columns.
    pub fn split_group_columns(&self) -> Vec<&str> {
        let d = &self.dataset;
        let mut v = vec!["arm"];
        if d.site.is_some() {
            v.push("site");
        }
        v.extend(d.categorical.iter().map(String::as_str));
        v.extend(d.extra.keys().map(String::as_str));
        v
    }

    /// Loads `path`, or the embedded default when `path` is `None` and `config/config.yaml` does not exist.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        Self::load_with(path, &[])
    }

    /// [`Config::load`] with `overrides` (`TRIALFLOW_A__B`, value) applied after the environment's, e.g. a
    /// command-line flag: the result is validated like any other value, never patched in after the fact.
    pub fn load_with(path: Option<&Path>, overrides: &[(String, String)]) -> Result<Self> {
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        env.extend(overrides.iter().cloned());
        match path {
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::config(&name, "<file>", format!("cannot read the config file: {e}"))
                })?;
                Self::from_yaml(&text, &name, &env)
            }
            None => {
                let default = Path::new("config/config.yaml");
                if default.exists() {
                    Self::load_with(Some(default), overrides)
                } else {
                    Self::from_yaml(EMBEDDED_CONFIG, EMBEDDED_CONFIG_NAME, &env)
                }
            }
        }
    }

    /// Parses and validates YAML text; `env` supplies `TRIALFLOW_A__B` overrides.
    pub fn from_yaml(text: &str, file: &str, env: &[(String, String)]) -> Result<Self> {
        let cfg = Self::parse(text, file, env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads a config for the model server alone: the serving section is validated, the dataset's
    /// source files need not exist (a server pod does not have them).
    pub fn load_for_serving(path: Option<&Path>) -> Result<Self> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let (text, name) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| {
                    Error::config(
                        p.display().to_string(),
                        "<file>",
                        format!("cannot read the config file: {e}"),
                    )
                })?,
                p.display().to_string(),
            ),
            None if Path::new("config/config.yaml").exists() => {
                return Self::load_for_serving(Some(Path::new("config/config.yaml")));
            }
            None => (
                EMBEDDED_CONFIG.to_string(),
                EMBEDDED_CONFIG_NAME.to_string(),
            ),
        };
        let cfg = Self::parse(&text, &name, &env)?;
        cfg.serving.validate(&name)?;
        Ok(cfg)
    }

    fn parse(text: &str, file: &str, env: &[(String, String)]) -> Result<Self> {
        let mut value: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| Error::config(file, "<document>", format!("not valid YAML: {e}")))?;
        apply_env_overrides(&mut value, env, file)?;
        let mut cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            Error::config(
                file,
                if key == "." { "<root>".into() } else { key },
                e.into_inner().to_string(),
            )
        })?;
        cfg.source_file = file.to_string();
        Ok(cfg)
    }

    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::config(&self.source_file, key, message)
    }

    /// Source columns the contract reads (id, arm, site, outcome, time, event, covariates, extras),
    /// in a stable order and without duplicates.
    pub fn source_columns(&self) -> Vec<String> {
        let d = &self.dataset;
        let mut out: Vec<String> = Vec::new();
        let mut push = |c: &str| {
            if !out.iter().any(|o| o == c) {
                out.push(c.to_string());
            }
        };
        let text = |c: &String| d.derived_text.contains_key(c);
        for c in d.id.columns().iter().filter(|c| !text(c)) {
            push(c);
        }
        if let Some(c) = d.cluster.as_ref().filter(|c| !text(c)) {
            push(c);
        }
        if !text(&d.arm.column) {
            push(&d.arm.column);
        }
        if let Some(s) = d.site.as_ref().filter(|c| !text(c)) {
            push(s);
        }
        // A derived role column is computed from source columns, not read from one.
        let read = |c: &String| !d.derived.contains_key(c);
        if let Some(c) = d.outcome.column.as_ref().filter(|c| read(c)) {
            push(c);
        }
        if let Some(t) = &d.time_to_event {
            for c in [&t.time, &t.event].into_iter().filter(|c| read(c)) {
                push(c);
            }
        }
        for t in d.secondary_time_to_event.values() {
            for c in [&t.time, &t.event].into_iter().filter(|c| read(c)) {
                push(c);
            }
        }
        for c in d.numeric.iter().filter(|c| !d.derived.contains_key(*c)) {
            push(c);
        }
        for c in &d.categorical {
            push(c);
        }
        for c in d.extra.keys() {
            push(c);
        }
        out
    }

    /// The subject table's columns read from its own sources: [`Config::source_columns`] less the pivot columns
    /// that record tables supply.
    pub fn subject_columns(&self) -> Vec<String> {
        let pivots = self.pivot_columns();
        self.source_columns()
            .into_iter()
            .filter(|c| !pivots.contains_key(c))
            .collect()
    }

    /// Pivot column → its table's name.
    pub fn pivot_columns(&self) -> BTreeMap<String, String> {
        self.dataset
            .tables
            .iter()
            .flat_map(|(t, table)| table.pivot.keys().map(move |p| (p.clone(), t.clone())))
            .collect()
    }

    /// The table whose records a source holds, if it holds records.
    pub fn table_of_source(&self, source: &str) -> Option<&str> {
        self.dataset
            .tables
            .iter()
            .find(|(_, t)| t.sources.iter().any(|s| s == source))
            .map(|(name, _)| name.as_str())
    }

    /// The columns a record table reads from its sources: the subject id's, then `columns`, then the pivots'
    /// values, without duplicates.
    pub fn table_columns(&self, table: &RecordTable) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let wanted = self
            .dataset
            .id
            .columns()
            .iter()
            .chain(&table.columns)
            .chain(table.pivot.values().filter_map(|p| p.value.as_ref()))
            .chain(table.pivot.values().filter_map(|p| p.order_by.as_ref()));
        for c in wanted {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }

    /// The columns every file of `source` must have: its record table's, or the subject table's.
    pub fn required_columns(&self, source: &str) -> Vec<String> {
        match self
            .table_of_source(source)
            .and_then(|t| self.dataset.tables.get(t))
        {
            Some(table) => self.table_columns(table),
            None => self.subject_columns(),
        }
    }

    /// Columns typed as numbers (source covariates, time, and numeric extras).
    pub fn numeric_source_columns(&self) -> BTreeSet<String> {
        let d = &self.dataset;
        let mut s: BTreeSet<String> = d
            .numeric
            .iter()
            .filter(|c| !d.derived.contains_key(*c))
            .cloned()
            .collect();
        if let Some(t) = d
            .time_to_event
            .as_ref()
            .filter(|t| !d.derived.contains_key(&t.time))
        {
            s.insert(t.time.clone());
        }
        s.extend(
            d.extra
                .iter()
                .filter(|(_, t)| **t == ColumnType::Number)
                .map(|(k, _)| k.clone()),
        );
        s.extend(
            d.secondary_time_to_event
                .values()
                .filter(|t| !d.derived.contains_key(&t.time))
                .map(|t| t.time.clone()),
        );
        s
    }

    /// This config with `t` as its time-to-event endpoint: a secondary endpoint is checked, coded and analysed
    /// by the primary's code.
    pub fn with_time_to_event(&self, t: &TimeToEventConfig) -> Config {
        let mut c = self.clone();
        c.dataset.time_to_event = Some(t.clone());
        c
    }

    /// Every check of every section, in the order a reader meets the sections; what the types cannot say:
    /// referenced columns, parseable SQL, expressions serving can evaluate, consistent levels and fractions,
    /// metric names the gate knows. `check-config` runs exactly this, so a config that passes it does not fail
    /// later for a config reason.
    pub fn validate(&self) -> Result<()> {
        self.check_sources()?;
        self.check_tables()?;
        self.check_privacy()?;
        self.check_outcome()?;
        self.check_identity()?;
        self.check_events()?;
        self.check_derived()?;
        self.check_features()?;
        self.check_filter_and_types()?;
        self.check_rules()?;
        self.check_split()?;
        self.check_models()?;
        self.check_training()?;
        self.check_deployment()?;
        self.check_urls()?;
        self.check_analysis()?;
        self.serving.validate(&self.source_file)?;
        if self.dag.max_parallel == 0 {
            return Err(self.err("dag.max_parallel", "expected at least 1"));
        }
        if self.dag.lock_heartbeat_seconds == 0
            || self.dag.lock_stale_seconds < 2 * self.dag.lock_heartbeat_seconds
        {
            return Err(self.err(
                "dag.lock_stale_seconds",
                "expected a heartbeat of at least 1 s and a stale limit of at least two heartbeats",
            ));
        }
        self.check_engine()?;
        self.check_local_sources()
    }

    /// `dataset.tables`: sources that exist and feed one table each, a subject table left with a source,
    /// pivots with one of `value` and `count` whose names no other column has.
    fn check_tables(&self) -> Result<()> {
        let d = &self.dataset;
        if d.tables.is_empty() {
            return Ok(());
        }
        if d.id == SubjectId::Row {
            return Err(self.err(
                "dataset.tables",
                "record tables join on the subject id: set `dataset.id` to the id column(s)",
            ));
        }
        let mut fed = BTreeSet::new();
        let mut pivots: BTreeMap<&String, &String> = BTreeMap::new();
        for (name, t) in &d.tables {
            let key = format!("dataset.tables.{name}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(key, "expected a table name of letters, digits or '_'"));
            }
            if t.sources.is_empty() {
                return Err(self.err(
                    format!("{key}.sources"),
                    "expected at least one source name",
                ));
            }
            for (i, s) in t.sources.iter().enumerate() {
                if !d.sources.iter().any(|src| &src.name == s) {
                    return Err(self.err(
                        format!("{key}.sources[{i}]"),
                        format!("no source in `dataset.sources` is named `{s}`"),
                    ));
                }
                if !fed.insert(s) {
                    return Err(self.err(
                        format!("{key}.sources[{i}]"),
                        format!("source `{s}` already feeds another table"),
                    ));
                }
            }
            for (f, condition) in &t.flags {
                let fkey = format!("{key}.flags.{f}");
                if f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(self.err(fkey, "expected a flag name of letters, digits or '_'"));
                }
                check_sql_expr(condition).map_err(|m| self.err(fkey, m))?;
            }
            for (p, pivot) in &t.pivot {
                let pkey = format!("{key}.pivot.{p}");
                if pivot.value.is_some() == pivot.count {
                    return Err(self.err(
                        pkey,
                        "expected exactly one of `value: <column>` and `count: true`",
                    ));
                }
                if pivot.condition.trim().is_empty() {
                    return Err(self.err(format!("{pkey}.where"), "expected a SQL condition"));
                }
                if pivot.take.is_some() != pivot.order_by.is_some() {
                    return Err(self.err(
                        pkey,
                        "`take` and `order_by` go together: the order picks the first or last record",
                    ));
                }
                if pivot.take.is_some() && pivot.count {
                    return Err(self.err(pkey, "a `count` counts every record: no `take`"));
                }
                if let Some(b) = &pivot.before {
                    if pivot.order_by.is_none() {
                        return Err(self.err(
                            format!("{pkey}.before"),
                            "`before` compares `order_by` with the subject's column: set `order_by`",
                        ));
                    }
                    if !self.subject_columns().contains(b) {
                        return Err(self.err(
                            format!("{pkey}.before"),
                            format!(
                                "`{b}` is no column the subject table reads: list it in `dataset.extra` \
                                 (e.g. `{b}: string`)"
                            ),
                        ));
                    }
                }
                if let Some(other) = pivots.insert(p, name) {
                    return Err(self.err(
                        pkey,
                        format!("table `{other}` has a pivot of this name already"),
                    ));
                }
                // Covariates, the outcome, the time, the event and extras may come from a pivot; the columns
                // that say whose row it is and which arm cannot.
                let roles =
                    d.id.columns()
                        .iter()
                        .chain(d.cluster.as_ref())
                        .chain(std::iter::once(&d.arm.column));
                if roles.clone().any(|c| c == p)
                    || d.derived.contains_key(p)
                    || d.derived_text.contains_key(p)
                {
                    return Err(self.err(
                        pkey,
                        "the id, cluster or arm column, or a derived column, has this name: pick another",
                    ));
                }
            }
        }
        if d.sources.iter().all(|s| fed.contains(&s.name)) {
            return Err(self.err(
                "dataset.tables",
                "every source feeds a record table: at least one must hold the subject table (one row per \
                 subject: ADSL, DM or a flat export)",
            ));
        }
        Ok(())
    }

    /// `dataset.sources`: unique names, one-character dialects, known formats.
    fn check_sources(&self) -> Result<()> {
        let d = &self.dataset;
        if d.sources.is_empty() {
            return Err(self.err("dataset.sources", "expected at least one source"));
        }
        let mut names = BTreeSet::new();
        for (i, s) in d.sources.iter().enumerate() {
            if !names.insert(&s.name) {
                return Err(self.err(
                    format!("dataset.sources[{i}].name"),
                    "source names must be unique",
                ));
            }
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.err(
                    format!("dataset.sources[{i}].name"),
                    "expected a non-empty name of letters, digits, '_' or '-'",
                ));
            }
            for (key, c) in [("delimiter", s.delimiter), ("quote", s.quote)] {
                if !c.is_ascii() || c == '\n' || c == '\r' {
                    return Err(self.err(
                        format!("dataset.sources[{i}].{key}"),
                        "expected one ASCII character other than a line break",
                    ));
                }
            }
            if s.delimiter == s.quote {
                return Err(self.err(
                    format!("dataset.sources[{i}].quote"),
                    "expected a character other than the delimiter",
                ));
            }
        }
        Ok(())
    }

    /// `dataset.outcome`: a column (with an optional value mapping) or an expression.
    fn check_outcome(&self) -> Result<()> {
        let d = &self.dataset;
        let o = &d.outcome;
        match (&o.column, &o.expression) {
            (Some(_), None) => {}
            (None, Some(expr)) => {
                if o.positive.is_some() || o.negative.is_some() {
                    return Err(self.err(
                        "dataset.outcome",
                        "`positive`/`negative` need `column`, not `expression`",
                    ));
                }
                check_sql_expr(expr).map_err(|m| self.err("dataset.outcome.expression", m))?;
            }
            _ => {
                return Err(self.err(
                    "dataset.outcome",
                    "expected exactly one of `column` (optionally with `positive`/`negative`) or `expression`",
                ));
            }
        }
        if o.negative.is_some() && o.positive.is_none() {
            return Err(self.err("dataset.outcome.negative", "`negative` needs `positive`"));
        }
        Ok(())
    }

    /// `dataset.id`, `cluster`, `preprocessing.max_dropped_share`: an id made of distinct columns, a cluster
    /// that is not the id itself, splits that keep a cluster whole.
    fn check_identity(&self) -> Result<()> {
        let d = &self.dataset;
        let ids = d.id.columns();
        let categorical_roles = ids
            .iter()
            .map(|c| ("dataset.id", c))
            .chain(d.cluster.iter().map(|c| ("dataset.cluster", c)))
            .chain([("dataset.arm.column", &d.arm.column)])
            .chain(d.site.iter().map(|c| ("dataset.site", c)));
        let mut text_roles = BTreeSet::new();
        for (key, c) in categorical_roles {
            if d.derived.contains_key(c) {
                return Err(self.err(
                    key,
                    format!(
                        "`{c}` is a derived column, and those are numbers: a derived id, cluster, arm or site is \
                         a text expression in `dataset.derived_text` (a composite id takes several columns, \
                         `id: [a, b]`)"
                    ),
                ));
            }
            text_roles.insert(c);
        }
        let inputs = self.source_columns();
        for (name, expr) in &d.derived_text {
            let key = format!("dataset.derived_text.{name}");
            if !text_roles.contains(name) {
                return Err(self.err(
                    key,
                    "a derived text column is the id, the cluster, the arm or the site (a model input must be \
                     one serving can compute: a `derived` number or a source column)",
                ));
            }
            if name.starts_with('_')
                || CLEAN_TABLE_COLUMNS.contains(&name.as_str())
                || inputs.contains(name)
                || d.derived.contains_key(name)
            {
                return Err(self.err(
                    key,
                    "this name is taken (a column of the source or the clean table, a derived column, or a \
                     `_` name of the clean stage's own); choose another",
                ));
            }
            check_sql_expr(expr).map_err(|m| self.err(&key, m))?;
            if let Some(c) = sql_columns(expr).into_iter().find(|c| !inputs.contains(c)) {
                return Err(self.err(
                    key,
                    format!(
                        "`{c}` is not a contract column: list the columns the expression reads in `dataset.extra`"
                    ),
                ));
            }
        }
        if ids.iter().any(|c| c.trim().is_empty()) {
            return Err(self.err("dataset.id", "expected column names, not an empty one"));
        }
        if ids.iter().collect::<BTreeSet<_>>().len() != ids.len() {
            return Err(self.err("dataset.id", "a composite id names each column once"));
        }
        if let Some(c) = &d.cluster {
            if d.id == SubjectId::Column(c.clone()) {
                return Err(self.err(
                    "dataset.cluster",
                    format!(
                        "the cluster is the id itself, so each cluster has one row; for several rows per \
                         patient make the id the row's key within the patient, e.g. `id: [{c}, eye]`"
                    ),
                ));
            }
            if self
                .preprocessing
                .split
                .group_by
                .as_deref()
                .is_some_and(|g| g != "cluster")
            {
                return Err(self.err(
                    "preprocessing.split.group_by",
                    "with `dataset.cluster` the splits keep each cluster whole: leave group_by unset \
                     (or `cluster`)",
                ));
            }
            if self.preprocessing.split.stratify {
                return Err(self.err(
                    "preprocessing.split.stratify",
                    "with `dataset.cluster` the splits keep each cluster whole and cannot stratify rows",
                ));
            }
        }
        let share = self.preprocessing.max_dropped_share;
        if !(0.0..=1.0).contains(&share) {
            return Err(self.err(
                "preprocessing.max_dropped_share",
                "expected a share in [0, 1]",
            ));
        }
        Ok(())
    }

    /// `dataset.time_to_event`: event, censor and competing codes that do not overlap; CDISC's `CNSR` has
    /// its own codes.
    fn check_events(&self) -> Result<()> {
        for (name, t) in &self.dataset.secondary_time_to_event {
            let key = format!("dataset.secondary_time_to_event.{name}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(key, "expected a name of letters, digits or '_'"));
            }
            if !t.competing_values.is_empty() {
                return Err(self.err(
                    format!("{key}.competing_values"),
                    "competing events are analysed for the primary `time_to_event` only",
                ));
            }
            self.with_time_to_event(t).check_event_codes(&key)?;
        }
        self.check_event_codes("dataset.time_to_event")
    }

    /// The primary endpoint's event, censor and competing codes: one meaning per code, the convention's own.
    fn check_event_codes(&self, key: &str) -> Result<()> {
        let Some(t) = &self.dataset.time_to_event else {
            return Ok(());
        };
        if t.convention == EventConvention::CdiscCnsr
            && (t.event_values.is_some() || t.censor_values.is_some())
        {
            return Err(self.err(
                key,
                "`convention: cdisc_cnsr` fixes the codes (CNSR 0 = event, a positive integer = censored); \
                 drop `event_values`/`censor_values`",
            ));
        }
        let (events, censored) = self.event_codes();
        let lists = [
            ("event_values", &events),
            ("censor_values", &censored),
            ("competing_values", &t.competing_values),
        ];
        for (i, (a, la)) in lists.iter().enumerate() {
            if la.is_empty() && *a != "competing_values" && t.convention == EventConvention::Event {
                return Err(self.err(format!("{key}.{a}"), "expected at least one code"));
            }
            for (b, lb) in &lists[i + 1..] {
                if let Some(c) = la
                    .iter()
                    .find(|x| lb.iter().any(|y| crate::codes::same(x, y)))
                {
                    return Err(self.err(
                        format!("{key}.{b}"),
                        format!("the code `{c}` is also in `{a}`: a code has one meaning"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The event and censor codes under the `event` convention: as configured, else events `[1]` and
    /// censored `[0]` (or `[1]` for R's 1 = censored / 2 = event coding, `event_values: [2]`). Empty under
    /// `cdisc_cnsr`, whose codes are fixed.
    pub fn event_codes(&self) -> (Vec<String>, Vec<String>) {
        let Some(t) = &self.dataset.time_to_event else {
            return (Vec::new(), Vec::new());
        };
        if t.convention == EventConvention::CdiscCnsr {
            return (Vec::new(), Vec::new());
        }
        let events = t.event_values.clone().unwrap_or_else(|| vec!["1".into()]);
        let censored = t.censor_values.clone().unwrap_or_else(|| {
            if events.len() == 1 && crate::codes::same(&events[0], "2") {
                vec!["1".into()]
            } else {
                vec!["0".into()]
            }
        });
        (events, censored)
    }

    /// Derived columns that are the time, the event or the outcome column: computed before the checks.
    pub fn derived_roles(&self) -> Vec<String> {
        let d = &self.dataset;
        let mut roles: Vec<&String> = d.outcome.column.iter().collect();
        if let Some(t) = &d.time_to_event {
            roles.push(&t.time);
            roles.push(&t.event);
        }
        let mut out: Vec<String> = roles
            .into_iter()
            .filter(|c| d.derived.contains_key(*c))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Source name → the field texts read as missing in it (its own `missing_values`, else the dataset's).
    pub fn missing_values_by_source(&self) -> BTreeMap<String, Vec<String>> {
        let d = &self.dataset;
        d.sources
            .iter()
            .map(|s| {
                let tokens = s.missing_values.as_ref().unwrap_or(&d.missing_values);
                (s.name.clone(), tokens.clone())
            })
            .collect()
    }

    /// The model inputs: `dataset.features`, else every covariate.
    pub fn feature_columns(&self) -> Vec<String> {
        let d = &self.dataset;
        match &d.features {
            Some(f) => f.clone(),
            None => d.numeric.iter().chain(&d.categorical).cloned().collect(),
        }
    }

    /// `dataset.features` and `reference_levels`: covariates only, and no feature that is or is computed from
    /// the outcome, time or event (a model given its own label scores perfectly and would be promoted).
    fn check_features(&self) -> Result<()> {
        let d = &self.dataset;
        let covariates: Vec<&String> = d.numeric.iter().chain(&d.categorical).collect();
        if let Some(f) = &d.features {
            for (i, c) in f.iter().enumerate() {
                if !covariates.contains(&c) {
                    return Err(self.err(
                        format!("dataset.features[{i}]"),
                        format!("`{c}` is not a covariate: features are chosen from `numeric` and `categorical`"),
                    ));
                }
            }
        }
        let mut label: Vec<(String, &str)> = Vec::new();
        if let Some(c) = &d.outcome.column {
            label.push((c.clone(), "the outcome"));
        }
        if let Some(e) = &d.outcome.expression {
            for c in sql_columns(e) {
                label.push((c, "a column of the outcome expression"));
            }
        }
        for t in d
            .time_to_event
            .iter()
            .chain(d.secondary_time_to_event.values())
        {
            label.push((t.time.clone(), "the time to event"));
            label.push((t.event.clone(), "the event"));
        }
        // a label that is itself derived leaks through the columns it is computed from, too
        let derived_labels: Vec<(String, &str)> = label
            .iter()
            .filter_map(|(c, what)| d.derived.get(c).map(|e| (e, *what)))
            .flat_map(|(e, what)| sql_columns(e).into_iter().map(move |c| (c, what)))
            .collect();
        label.extend(derived_labels);
        let sources = |c: &str| -> Vec<String> {
            match d.derived.get(c) {
                Some(expr) => sql_columns(expr),
                None => vec![c.to_string()],
            }
        };
        for (i, c) in self.feature_columns().iter().enumerate() {
            for s in sources(c) {
                if let Some((_, what)) = label.iter().find(|(l, _)| *l == s) {
                    let via = if s == *c {
                        String::new()
                    } else {
                        format!(" (through `{s}`)")
                    };
                    let key = match &d.features {
                        Some(_) => format!("dataset.features[{i}]"),
                        None => "dataset.features".to_string(),
                    };
                    return Err(self.err(
                        key,
                        format!(
                            "the model input `{c}` is {what}{via}: a model given its own label would score \
                             perfectly; list `features` without it (it can still be described in Table 1)"
                        ),
                    ));
                }
            }
        }
        for (c, level) in &d.reference_levels {
            let key = format!("dataset.reference_levels.{c}");
            if !d.categorical.contains(c) {
                return Err(self.err(key, "reference levels are for categorical covariates"));
            }
            if let Some(allowed) = d.rules.get(c).and_then(|r| r.allowed.as_ref())
                && !allowed.iter().any(|a| crate::codes::same(a, level))
            {
                return Err(self.err(
                    key,
                    format!("expected one of the allowed levels {allowed:?}"),
                ));
            }
        }
        Ok(())
    }

    /// `dataset.derived`: each expression is one serving can evaluate, over the contract's columns.
    fn check_derived(&self) -> Result<()> {
        let d = &self.dataset;
        let inputs = self.source_columns();
        for (name, expr) in &d.derived {
            let key = format!("dataset.derived.{name}");
            // `_`-names are the clean stage's own (`_row`, `_keep`, `_check_N`); the fixed columns of the clean
            // table and the contract's source columns would be shadowed
            if name.starts_with('_')
                || CLEAN_TABLE_COLUMNS.contains(&name.as_str())
                || inputs.contains(name)
            {
                return Err(self.err(
                    key,
                    "this name is taken (a column of the source or the clean table, or a `_` name of the \
                     clean stage's own); choose another",
                ));
            }
            check_sql_expr(expr).map_err(|m| self.err(&key, m))?;
            let role = self.derived_roles().contains(name);
            if !d.numeric.contains(name) && !role {
                return Err(self.err(
                    key,
                    "a derived column must also be listed in `dataset.numeric` (or be the time, the event or \
                     the outcome column)",
                ));
            }
            if role && d.numeric.contains(name) {
                return Err(self.err(
                    key,
                    "this derived column is the time, the event or the outcome: it cannot also be a covariate",
                ));
            }
            // Serving computes derived columns from a request with `core::expr`, a subset of SQL: an expression
            // the clean stage's SQL accepts but serving cannot evaluate would fail only after training.
            let known = |c: &str| inputs.iter().any(|i| i == c) && !d.derived.contains_key(c);
            crate::expr::check_numeric(expr, &known).map_err(|m| {
                self.err(
                    key,
                    format!("{m} (derived columns use numbers, contract columns, + - * / and parentheses)"),
                )
            })?;
        }
        Ok(())
    }

    /// `dataset.filter` parses; no column is both numeric and categorical.
    fn check_filter_and_types(&self) -> Result<()> {
        let d = &self.dataset;
        if let Some(f) = &d.filter {
            check_sql_expr(f).map_err(|m| self.err("dataset.filter", m))?;
        }
        self.check_populations()?;
        for (i, c) in d.categorical.iter().enumerate() {
            if d.numeric.contains(c) {
                return Err(self.err(
                    format!("dataset.categorical[{i}]"),
                    "a column cannot be numeric and categorical",
                ));
            }
        }
        Ok(())
    }

    /// `dataset.populations`: names of letters, digits and '_', conditions that parse; every population an
    /// analysis or the training names is one of them.
    fn check_populations(&self) -> Result<()> {
        let pops = &self.dataset.populations;
        for (name, condition) in pops {
            let key = format!("dataset.populations.{name}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(key, "expected a name of letters, digits or '_'"));
            }
            check_sql_expr(condition).map_err(|m| self.err(key, m))?;
        }
        let a = &self.analysis;
        let named = [
            ("analysis.population", &a.population),
            ("analysis.populations.table1", &a.populations.table1),
            ("analysis.populations.outcome", &a.populations.outcome),
            ("analysis.populations.survival", &a.populations.survival),
            ("analysis.populations.subgroups", &a.populations.subgroups),
            ("training.population", &self.training.population),
        ];
        let endpoints: Vec<(String, &Option<String>)> = a
            .continuous
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    format!("analysis.continuous[{i}].population"),
                    &c.population,
                )
            })
            .collect();
        let safety = a
            .safety
            .iter()
            .map(|s| ("analysis.safety.population".to_string(), &s.population))
            .chain(
                a.disposition
                    .iter()
                    .map(|d| ("analysis.disposition.population".to_string(), &d.population)),
            )
            .chain(
                a.lab_shifts
                    .iter()
                    .map(|l| ("analysis.lab_shifts.population".to_string(), &l.population)),
            );
        let named = named
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .chain(endpoints)
            .chain(safety);
        for (key, name) in named {
            if let Some(n) = name
                && !pops.contains_key(n)
            {
                return Err(self.err(
                    key,
                    format!(
                        "no population `{n}` in `dataset.populations` (it has: {})",
                        pops.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `dataset.rules`: on contract columns, of the column's type, with consistent bounds and levels.
    fn check_rules(&self) -> Result<()> {
        let d = &self.dataset;
        let columns = self.source_columns();
        for (col, rule) in &d.rules {
            let key = format!("dataset.rules.{col}");
            if !columns.contains(col) {
                return Err(self.err(
                    key,
                    "rules apply to contract columns (id, arm, site, covariates, extra)",
                ));
            }
            let numeric = self.numeric_source_columns().contains(col);
            if numeric && (rule.allowed.is_some() || !rule.synonyms.is_empty()) {
                return Err(self.err(
                    key,
                    "`allowed`/`synonyms` apply to categorical columns, not numbers",
                ));
            }
            if !numeric && (rule.min.is_some() || rule.max.is_some()) {
                return Err(self.err(key, "`min`/`max` apply to numeric columns"));
            }
            if [rule.min, rule.max]
                .iter()
                .flatten()
                .any(|b| !b.is_finite())
            {
                return Err(self.err(key, "expected finite `min`/`max`"));
            }
            if let (Some(lo), Some(hi)) = (rule.min, rule.max)
                && lo > hi
            {
                return Err(self.err(key, "expected min <= max"));
            }
            if let Some(allowed) = &rule.allowed {
                for (k, v) in &rule.synonyms {
                    if !allowed.contains(v) {
                        return Err(self.err(
                            format!("{key}.synonyms.{k}"),
                            format!(
                                "maps to `{v}`, expected one of the allowed levels {allowed:?}"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(allowed) = d.rules.get(&d.arm.column).and_then(|r| r.allowed.as_ref())
            && !allowed.contains(&d.arm.reference)
        {
            return Err(self.err(
                "dataset.arm.reference",
                format!("expected one of the allowed arm levels {allowed:?}"),
            ));
        }
        Ok(())
    }

    /// `preprocessing.split`: fractions that add up, stratification or grouping on a real column; a record
    /// bound that fits a record at all.
    fn check_split(&self) -> Result<()> {
        if self.preprocessing.max_record_bytes < 1024 {
            return Err(self.err(
                "preprocessing.max_record_bytes",
                "expected at least 1024 bytes",
            ));
        }
        let s = &self.preprocessing.split;
        for (k, v) in [("train", s.train), ("val", s.val), ("test", s.test)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(self.err(
                    format!("preprocessing.split.{k}"),
                    "expected a fraction in [0, 1]",
                ));
            }
        }
        if (s.train + s.val + s.test - 1.0).abs() > 1e-9 || s.train == 0.0 || s.test == 0.0 {
            return Err(self.err(
                "preprocessing.split",
                "expected train + val + test = 1 with non-empty train and test",
            ));
        }
        if s.stratify && s.group_by.is_some() {
            return Err(self.err(
                "preprocessing.split",
                "expected either stratify or group_by: stratifying whole groups is not supported",
            ));
        }
        if let Some(g) = &s.group_by
            && !self.split_group_columns().contains(&g.as_str())
        {
            return Err(self.err(
                "preprocessing.split.group_by",
                format!(
                    "expected a column of the clean table: one of {:?}",
                    self.split_group_columns()
                ),
            ));
        }
        Ok(())
    }

    /// `models`: at least one, with positive widths and one dropout rate per hidden layer.
    fn check_models(&self) -> Result<()> {
        if self.models.is_empty() {
            return Err(self.err("models", "expected at least one model"));
        }
        for (name, m) in &self.models {
            if !m.dropout.is_empty() && m.dropout.len() != m.hidden.len() {
                return Err(self.err(
                    format!("models.{name}.dropout"),
                    "expected one rate per hidden layer",
                ));
            }
            if m.dropout.iter().any(|p| !(0.0..1.0).contains(p)) {
                return Err(self.err(format!("models.{name}.dropout"), "expected rates in [0, 1)"));
            }
            if m.hidden.contains(&0) {
                return Err(self.err(format!("models.{name}.hidden"), "expected widths > 0"));
            }
            if m.hidden.iter().any(|w| *w > MAX_LAYER_WIDTH) || m.hidden.len() > MAX_HIDDEN_LAYERS {
                return Err(self.err(
                    format!("models.{name}.hidden"),
                    format!(
                        "expected at most {MAX_HIDDEN_LAYERS} layers of at most {MAX_LAYER_WIDTH} units"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `training`: positive sizes and rates, a threshold that is a probability.
    fn check_training(&self) -> Result<()> {
        let t = &self.training;
        if t.batch_size == 0 || t.epochs == 0 {
            return Err(self.err("training", "expected batch_size > 0 and epochs > 0"));
        }
        if t.stream_block_rows < t.batch_size {
            return Err(self.err(
                "training.stream_block_rows",
                "expected at least training.batch_size rows (a block holds whole batches)",
            ));
        }
        if t.learning_rate.is_nan() || t.learning_rate <= 0.0 {
            return Err(self.err("training.learning_rate", "expected a positive number"));
        }
        if t.pos_weight.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
            return Err(self.err("training.pos_weight", "expected a positive number"));
        }
        if !(t.threshold > 0.0 && t.threshold < 1.0) {
            return Err(self.err("training.threshold", "expected a probability in (0, 1)"));
        }
        self.check_endpoint()?;
        self.check_clustering()
    }

    /// `clustering`: a range of at least two clusters.
    fn check_clustering(&self) -> Result<()> {
        if let Some(c) = &self.clustering
            && (c.k[0] < 2 || c.k[0] > c.k[1])
        {
            return Err(self.err(
                "clustering.k",
                "expected [from, to] with 2 ≤ from ≤ to clusters",
            ));
        }
        Ok(())
    }

    /// `training.endpoint`: the column it names exists and is no model input; a time-to-event endpoint has
    /// horizons.
    fn check_endpoint(&self) -> Result<()> {
        let t = &self.training;
        let d = &self.dataset;
        match t.endpoint {
            Endpoint::Binary => {
                if t.target.is_some() {
                    return Err(self.err(
                        "training.target",
                        "a binary endpoint is `dataset.outcome`; `target` is for continuous and time_to_event",
                    ));
                }
            }
            Endpoint::Continuous => {
                let Some(target) = &t.target else {
                    return Err(self.err(
                        "training.target",
                        "a continuous endpoint needs the numeric column it predicts",
                    ));
                };
                if !d.numeric.contains(target) {
                    return Err(self.err(
                        "training.target",
                        format!("`{target}` is not a numeric covariate (dataset.numeric)"),
                    ));
                }
                if self.feature_columns().contains(target) {
                    return Err(self.err(
                        "training.target",
                        format!("`{target}` is a model input; list dataset.features without it"),
                    ));
                }
                if !(t.huber_delta.is_finite() && t.huber_delta > 0.0) {
                    return Err(self.err("training.huber_delta", "expected a positive number"));
                }
            }
            Endpoint::TimeToEvent => {
                match &t.target {
                    Some(name) if !d.secondary_time_to_event.contains_key(name) => {
                        return Err(self.err(
                            "training.target",
                            format!("no `{name}` in dataset.secondary_time_to_event"),
                        ));
                    }
                    None if d.time_to_event.is_none() => {
                        return Err(self.err(
                            "training.endpoint",
                            "time_to_event needs dataset.time_to_event (or a training.target naming a \
                             dataset.secondary_time_to_event)",
                        ));
                    }
                    _ => {}
                }
                if t.horizons.is_empty()
                    || t.horizons.iter().any(|h| !(h.is_finite() && *h > 0.0))
                    || t.horizons.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(self.err(
                        "training.horizons",
                        "a time_to_event endpoint needs increasing positive evaluation times",
                    ));
                }
                if t.monitor == Monitor::ValAuc {
                    return Err(self.err(
                        "training.monitor",
                        "val_auc is for binary endpoints; time_to_event stops on the validation loss",
                    ));
                }
            }
        }
        if t.endpoint == Endpoint::Continuous && t.monitor == Monitor::ValAuc {
            return Err(self.err(
                "training.monitor",
                "val_auc is for binary endpoints; continuous stops on the validation loss",
            ));
        }
        Ok(())
    }

    /// The clean-table columns of the endpoint's targets, in the order a split's targets hold them.
    pub fn target_columns(&self) -> Vec<String> {
        match self.training.endpoint {
            Endpoint::Binary => vec!["outcome".into()],
            Endpoint::Continuous => self
                .training
                .target
                .iter()
                .map(|t| crate::features::table_column(t))
                .collect(),
            Endpoint::TimeToEvent => match &self.training.target {
                Some(name) => {
                    vec![format!("time_{name}"), format!("event_{name}")]
                }
                None => vec!["time".into(), "event".into()],
            },
        }
    }

    /// `deployment`: every gate check bounded, on a metric the gate computes.
    fn check_deployment(&self) -> Result<()> {
        self.check_gate_metrics()?;
        let bounds = self
            .deployment
            .checks
            .iter()
            .map(|c| (c.min, c.max))
            .chain(self.deployment.slice_checks.iter().map(|c| (c.min, c.max)));
        for (i, (min, max)) in bounds.enumerate() {
            if min.is_none() && max.is_none() {
                let n = self.deployment.checks.len();
                let key = if i < n {
                    format!("deployment.checks[{i}]")
                } else {
                    format!("deployment.slice_checks[{}]", i - n)
                };
                return Err(self.err(key, "expected `min`, `max` or both"));
            }
        }
        Ok(())
    }

    /// Gate checks name metrics the gate computes (`metrics.json`'s names); a regression compares point
    /// estimates, since the served version is re-scored without a bootstrap.
    fn check_gate_metrics(&self) -> Result<()> {
        let d = &self.deployment;
        let named = d
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("deployment.checks[{i}].metric"), &c.metric))
            .chain(
                d.slice_checks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("deployment.slice_checks[{i}].metric"), &c.metric)),
            )
            .chain(
                d.regression
                    .iter()
                    .map(|r| ("deployment.regression.metric".to_string(), &r.metric)),
            );
        let known = crate::contracts::ModelMetrics::names(self.training.endpoint);
        for (key, metric) in named {
            if !known.contains(metric) {
                return Err(self.err(
                    key,
                    format!(
                        "no metric `{metric}`; expected one of: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        if let Some(r) = &d.regression
            && (r.metric.ends_with("_ci_lower") || r.metric.ends_with("_ci_upper"))
        {
            return Err(self.err(
                "deployment.regression.metric",
                "compare point estimates (e.g. `roc_auc`): the served version is scored without a bootstrap",
            ));
        }
        Ok(())
    }

    /// `tracking` and `monitoring`: HTTP URLs.
    fn check_urls(&self) -> Result<()> {
        if let Some(url) = &self.tracking.mlflow_uri
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(self.err("tracking.mlflow_uri", "expected an http:// or https:// URL"));
        }
        if let Some(url) = &self.monitoring.pushgateway_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(self.err(
                "monitoring.pushgateway_url",
                "expected an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    /// An analysis of record table `table` (its config key `section`): the table exists, has the `flags` and
    /// keeps the `columns` it reads, each given with its own config key.
    fn check_table_reads<'a>(
        &self,
        section: &str,
        table: &str,
        flags: impl IntoIterator<Item = (String, &'a String)>,
        columns: impl IntoIterator<Item = (&'static str, &'a String)>,
    ) -> Result<()> {
        let Some(t) = self.dataset.tables.get(table) else {
            return Err(self.err(
                format!("{section}.table"),
                format!("no record table `{table}` in `dataset.tables`"),
            ));
        };
        for (key, f) in flags {
            if !t.flags.contains_key(f) {
                return Err(self.err(
                    key,
                    format!("no flag `{f}` in `dataset.tables.{table}.flags`"),
                ));
            }
        }
        for (key, c) in columns {
            if !t.columns.contains(c) {
                return Err(self.err(
                    key,
                    format!("`{c}` is not among `dataset.tables.{table}.columns`"),
                ));
            }
        }
        Ok(())
    }

    /// `analysis.lab_shifts`: a record table that keeps the columns and the flag it names, two levels or more.
    fn check_lab_shifts(&self) -> Result<()> {
        let Some(l) = &self.analysis.lab_shifts else {
            return Ok(());
        };
        self.check_table_reads(
            "analysis.lab_shifts",
            &l.table,
            l.records
                .iter()
                .map(|f| ("analysis.lab_shifts.records".to_string(), f)),
            [
                ("analysis.lab_shifts.parameter", &l.parameter),
                ("analysis.lab_shifts.baseline", &l.baseline),
                ("analysis.lab_shifts.value", &l.value),
            ],
        )?;
        if l.levels.len() < 2 {
            return Err(self.err(
                "analysis.lab_shifts.levels",
                "expected the levels from normal to worst, two or more",
            ));
        }
        Ok(())
    }

    /// `analysis.safety`: a record table that keeps the columns and flags it names, a numeric exposure.
    fn check_safety(&self) -> Result<()> {
        let Some(s) = &self.analysis.safety else {
            return Ok(());
        };
        let flags = s
            .events
            .iter()
            .map(|f| ("analysis.safety.events".to_string(), f))
            .chain(
                s.overview
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (format!("analysis.safety.overview[{i}]"), f)),
            );
        let columns = [
            ("analysis.safety.soc", &s.soc),
            ("analysis.safety.term", &s.term),
        ]
        .into_iter()
        .chain(
            s.severity
                .as_ref()
                .map(|v| ("analysis.safety.severity.column", &v.column)),
        );
        self.check_table_reads("analysis.safety", &s.table, flags, columns)?;
        if let Some(v) = &s.severity
            && v.levels.is_empty()
        {
            return Err(self.err(
                "analysis.safety.severity.levels",
                "expected the levels from mildest to worst",
            ));
        }
        if let Some(e) = &s.exposure
            && !self.dataset.numeric.contains(e)
        {
            return Err(self.err(
                "analysis.safety.exposure",
                "expected a numeric covariate (`dataset.numeric`) of the subject table",
            ));
        }
        if !matches!(
            s.exposure_unit.as_str(),
            "days" | "weeks" | "months" | "years"
        ) {
            return Err(self.err(
                "analysis.safety.exposure_unit",
                "expected days, weeks, months or years",
            ));
        }
        Ok(())
    }

    /// `analysis`: adjustment and subgroup columns that are covariates, increasing bands, valid times.
    fn check_analysis(&self) -> Result<()> {
        let d = &self.dataset;
        let covariates: Vec<&String> = d.numeric.iter().chain(&d.categorical).collect();
        for (i, c) in self.analysis.continuous.iter().enumerate() {
            if !d.numeric.contains(&c.column) {
                return Err(self.err(
                    format!("analysis.continuous[{i}].column"),
                    "expected a numeric covariate (`dataset.numeric`)",
                ));
            }
            for (j, a) in c.adjust.iter().enumerate() {
                let is_site = d.site.as_ref() == Some(a);
                if !(covariates.contains(&a) || is_site) || a == &c.column {
                    return Err(self.err(
                        format!("analysis.continuous[{i}].adjust[{j}]"),
                        "expected a numeric or categorical covariate or the site, other than the endpoint",
                    ));
                }
            }
            let allowed_arms = d.rules.get(&d.arm.column).and_then(|r| r.allowed.as_ref());
            if let (Some(trend), Some(arms)) = (&c.trend, allowed_arms) {
                for arm in trend.keys() {
                    if !arms.iter().any(|a| crate::codes::same(a, arm)) {
                        return Err(self.err(
                            format!("analysis.continuous[{i}].trend.{arm}"),
                            "expected an arm allowed by the arm column's rule",
                        ));
                    }
                }
            }
        }
        self.check_safety()?;
        self.check_lab_shifts()?;
        if let Some(dp) = &self.analysis.disposition {
            let text_columns = |c: &String| d.categorical.contains(c) || d.extra.contains_key(c);
            for (key, c) in std::iter::once(("analysis.disposition.status", &dp.status))
                .chain(dp.reason.iter().map(|r| ("analysis.disposition.reason", r)))
            {
                if !text_columns(c) {
                    return Err(self.err(
                        key,
                        format!("`{c}` is no text column of the subject table: list it in `dataset.extra` (e.g. `{c}: string`)"),
                    ));
                }
            }
            if dp.completed.is_empty() {
                return Err(self.err(
                    "analysis.disposition.completed",
                    "expected the status values of a subject who completed",
                ));
            }
        }
        for (i, c) in self.analysis.strata.iter().enumerate() {
            if !(d.categorical.contains(c) || d.site.as_ref() == Some(c)) {
                return Err(self.err(
                    format!("analysis.strata[{i}]"),
                    "expected a categorical covariate or the site",
                ));
            }
        }
        if let Some(h) = self.analysis.rmst_horizon
            && !(h.is_finite() && h > 0.0)
        {
            return Err(self.err("analysis.rmst_horizon", "expected a positive time"));
        }
        if (self.analysis.rmst_horizon.is_some() || !self.analysis.strata.is_empty())
            && d.time_to_event.is_none()
        {
            return Err(self.err(
                if self.analysis.strata.is_empty() {
                    "analysis.rmst_horizon"
                } else {
                    "analysis.strata"
                },
                "needs a time to event (`dataset.time_to_event`)",
            ));
        }
        for (i, c) in self.analysis.adjust.iter().enumerate() {
            if !covariates.contains(&c) {
                return Err(self.err(
                    format!("analysis.adjust[{i}]"),
                    "expected a numeric or categorical covariate",
                ));
            }
        }
        for (i, s) in self.analysis.subgroups.iter().enumerate() {
            let is_site = d.site.as_ref() == Some(&s.column);
            if !is_site && !covariates.contains(&&s.column) {
                return Err(self.err(
                    format!("analysis.subgroups[{i}].column"),
                    "expected a covariate or the site column",
                ));
            }
            if !s.bands.is_empty() && !d.numeric.contains(&s.column) {
                return Err(self.err(
                    format!("analysis.subgroups[{i}].bands"),
                    "bands apply to numeric columns",
                ));
            }
            if s.bands.windows(2).any(|w| w[0] >= w[1]) {
                return Err(self.err(
                    format!("analysis.subgroups[{i}].bands"),
                    "expected increasing cut points",
                ));
            }
        }
        if self
            .analysis
            .survival_times
            .iter()
            .any(|t| !(t.is_finite() && *t >= 0.0))
        {
            return Err(self.err("analysis.survival_times", "expected non-negative times"));
        }
        Ok(())
    }

    fn check_engine(&self) -> Result<()> {
        // Executors read the lake's tables by path: they need the same files, on a shared filesystem.
        let lake_scheme = self
            .storage
            .lake
            .split_once("://")
            .map(|(s, _)| s)
            .unwrap_or("file");
        if self.execution.engine != Engine::Local
            && crate::storage::local_path_of(&self.storage.lake).is_none()
            && !matches!(lake_scheme, "s3" | "s3a" | "gs" | "az" | "abfs" | "azure")
        {
            return Err(self.err(
                "storage.lake",
                "a Ballista engine reads the lake from every executor: expected a file:// lake on a \
                 filesystem the executors share, or a lake in a bucket (s3://, gs://, az://)",
            ));
        }
        Ok(())
    }

    /// A local source whose pattern matches no file is a missing file, reported at load time.
    fn check_local_sources(&self) -> Result<()> {
        for (i, s) in self.dataset.sources.iter().enumerate() {
            let Some(path) = crate::storage::local_path_of(&s.url) else {
                continue;
            };
            let (dir, pattern) = crate::storage::split_glob(&path.display().to_string());
            let found = match pattern {
                None => Path::new(&dir).is_file(),
                Some(p) => crate::storage::glob_local(Path::new(&dir), &p)
                    .map(|v| !v.is_empty())
                    .unwrap_or(false),
            };
            if !found {
                return Err(self.err(
                    format!("dataset.sources[{i}].url"),
                    format!("no file matches `{}`", path.display()),
                ));
            }
        }
        Ok(())
    }

    /// The config section a task depends on, as canonical JSON (part of its fingerprint).
    pub fn section_json(&self, section: &str) -> serde_json::Value {
        let all = serde_json::to_value(self).unwrap_or_default();
        all.get(section).cloned().unwrap_or(serde_json::Value::Null)
    }
}

/// Functions that produce rows rather than values: in a row expression they multiply rows or spin.
const TABLE_FUNCTIONS: [&str; 4] = ["generate_series", "range", "unnest", "generate_subscripts"];

/// Parses `expr` as one SQL expression (the generic dialect DataFusion's parser extends) that the clean stage can
/// splice into its statements: no comment (a trailing `--` would cut the SQL around it), no subquery and no
/// table function (a value per row, not rows).
/// The column names an SQL expression reads (none when it does not parse: `validate` reports that).
pub fn sql_columns(expr: &str) -> Vec<String> {
    let dialect = sqlparser::dialect::GenericDialect {};
    let Ok(parsed) = sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(expr)
        .and_then(|mut p| p.parse_expr())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let _ = sqlparser::ast::visit_expressions(&parsed, |e| {
        use sqlparser::ast::Expr;
        match e {
            Expr::Identifier(i) => out.push(i.value.clone()),
            Expr::CompoundIdentifier(parts) => {
                out.extend(parts.last().map(|i| i.value.clone()));
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

pub fn check_sql_expr(expr: &str) -> std::result::Result<(), String> {
    use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
    let dialect = sqlparser::dialect::GenericDialect {};
    let tokens = Tokenizer::new(&dialect, expr)
        .tokenize()
        .map_err(|e| format!("not a valid SQL expression: {e}"))?;
    if tokens.iter().any(|t| {
        matches!(
            t,
            Token::Whitespace(
                Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)
            )
        )
    }) {
        return Err(
            "a comment is not allowed in an expression (it would cut the SQL it is placed in)"
                .into(),
        );
    }
    let mut parser = sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(expr)
        .map_err(|e| format!("not a valid SQL expression: {e}"))?;
    let parsed = parser
        .parse_expr()
        .map_err(|e| format!("not a valid SQL expression: {e}"))?;
    if parser.peek_token().token != Token::EOF {
        return Err(format!(
            "not a valid SQL expression: unexpected `{}` after the expression",
            parser.peek_token()
        ));
    }
    let refused = sqlparser::ast::visit_expressions(&parsed, |e| {
        use sqlparser::ast::Expr;
        match e {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                std::ops::ControlFlow::Break("a subquery".to_string())
            }
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                if TABLE_FUNCTIONS.contains(&name.as_str()) {
                    std::ops::ControlFlow::Break(format!("the table function `{name}`"))
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            }
            _ => std::ops::ControlFlow::Continue(()),
        }
    });
    if let std::ops::ControlFlow::Break(what) = refused {
        return Err(format!(
            "{what} is not allowed here: an expression gives one value per row"
        ));
    }
    Ok(())
}

fn apply_env_overrides(root: &mut Value, env: &[(String, String)], file: &str) -> Result<()> {
    for (k, v) in env {
        let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue; // e.g. TRIALFLOW_PSEUDONYM_KEY, TRIALFLOW_LOG: not config keys
        }
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let parsed: Value = serde_yaml_ng::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
        let mut node = &mut *root;
        for (i, p) in parts.iter().enumerate() {
            let Value::Mapping(map) = node else {
                return Err(Error::config(
                    file,
                    parts[..i].join("."),
                    format!(
                        "environment variable {k} overrides a key inside a value that is not a mapping"
                    ),
                ));
            };
            let key = Value::String(p.clone());
            if i + 1 == parts.len() {
                map.insert(key, parsed.clone());
                break;
            }
            node = map
                .entry(key)
                .or_insert_with(|| Value::Mapping(Default::default()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config> {
        Config::from_yaml(text, "test.yaml", &[])
    }

    fn sample_with(key: &str, value: &str) -> Result<Config> {
        Config::from_yaml(
            EMBEDDED_CONFIG,
            "test.yaml",
            &[(format!("TRIALFLOW_{key}"), value.to_string())],
        )
    }

    /// The sample config with `from` replaced by `to` (which must occur).
    fn sample_edited(from: &str, to: &str) -> Result<Config> {
        sample_edits(&[(from, to)])
    }

    fn sample_edits(edits: &[(&str, &str)]) -> Result<Config> {
        // tests run in the crate's folder: the sample's files are two levels up
        let mut text = EMBEDDED_CONFIG.replacen("file://data/raw/", "file://../../data/raw/", 1);
        for (from, to) in edits {
            assert!(text.contains(from), "the sample has no `{from}`");
            text = text.replacen(from, to, 1);
        }
        load(&text)
    }

    fn config_error(r: Result<Config>) -> String {
        match r {
            Err(e @ Error::Config { .. }) => e.to_string(),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_model_input_that_is_or_comes_from_the_label_is_refused() {
        // the event column among the covariates (it defines the outcome here): refused by default
        let e = config_error(sample_edited(
            "categorical: [sex, smoker, diabetic]",
            "categorical: [sex, smoker, diabetic, event]",
        ));
        assert!(
            e.contains("dataset.features") && e.contains("`event` is the outcome"),
            "{e}"
        );
        // described in Table 1 but not a model input: accepted, and the feature list says so
        let c = sample_edited(
            "categorical: [sex, smoker, diabetic]",
            "categorical: [sex, smoker, diabetic, event]\n  features: [age, sex]",
        )
        .unwrap();
        assert_eq!(c.feature_columns(), ["age", "sex"]);
        // derived from the time to event
        let e = config_error(sample_edits(&[
            ("  numeric: [age,", "  numeric: [fu_years, age,"),
            (
                "    bmi: weight_kg",
                "    fu_years: followup_days / 365.25\n    bmi: weight_kg",
            ),
        ]));
        assert!(e.contains("through `followup_days`"), "{e}");
        let e = config_error(sample_edited(
            "categorical: [sex, smoker, diabetic]",
            "categorical: [sex, smoker, diabetic]\n  features: [age, site]",
        ));
        assert!(
            e.contains("dataset.features[1]") && e.contains("not a covariate"),
            "{e}"
        );
    }

    #[test]
    fn ids_codes_and_events_read_in_every_form_an_export_needs() {
        let c = sample_edited("  id: subject_id\n", "  id: [subject_id, site]\n").unwrap();
        assert_eq!(
            c.dataset.id,
            SubjectId::Composite(vec!["subject_id".into(), "site".into()])
        );
        assert_eq!(c.dataset.id.label(), "subject_id+site");
        let c = sample_edited("  id: subject_id\n", "  id: null\n").unwrap();
        assert_eq!(c.dataset.id, SubjectId::Row);
        assert!(!c.source_columns().contains(&"subject_id".to_string()));
        let e = config_error(sample_edited("  id: subject_id\n", "  id: [site, site]\n"));
        assert!(e.contains("dataset.id"), "{e}");
        let e = config_error(sample_edited(
            "  id: subject_id\n",
            "  id: subject_id\n  cluster: subject_id\n",
        ));
        assert!(
            e.contains("dataset.cluster") && e.contains("[subject_id, eye]"),
            "{e}"
        );
        // codes as YAML numbers; R's 1/2 status coding censors 1
        let c = sample_edited(
            "    convention: event ",
            "    event_values: [2]\n    competing_values: [3.0]\n    convention: event ",
        )
        .unwrap();
        assert_eq!(c.event_codes(), (vec!["2".into()], vec!["1".into()]));
        assert_eq!(
            c.dataset.time_to_event.as_ref().unwrap().competing_values,
            ["3"]
        );
        let e = config_error(sample_edited(
            "    convention: event ",
            "    event_values: [1]\n    competing_values: [1.0]\n    convention: event ",
        ));
        assert!(e.contains("competing_values") && e.contains("`1`"), "{e}");
        let e = config_error(sample_edited(
            "    convention: event ",
            "    event_values: [1]\n    convention: cdisc_cnsr ",
        ));
        assert!(e.contains("cdisc_cnsr"), "{e}");
        let c = sample_edited("      allowed: [F, M]", "      allowed: [F, M, 1]").unwrap();
        assert_eq!(
            c.dataset.rules["sex"].allowed.as_deref(),
            Some(&["F".to_string(), "M".into(), "1".into()][..])
        );
        let e = config_error(sample_edited(
            "  categorical: [sex, smoker, diabetic]",
            "  categorical: [sex, smoker, diabetic]\n  reference_levels: {sex: X}",
        ));
        assert!(e.contains("dataset.reference_levels.sex"), "{e}");
        let c = sample_edited(
            "  missing_values: [\"n/a\", \"unknown\", \"?\"]",
            "  missing_values: [NA, 999]",
        )
        .unwrap();
        assert_eq!(c.missing_values_by_source()["trial"], ["NA", "999"]);
    }

    #[test]
    fn a_derived_column_serving_cannot_compute_is_a_config_error() {
        for (expr, why) in [
            ("ln(weight_kg)", "unsupported expression"),
            (
                "weight_kg / no_such_column",
                "unknown column `no_such_column`",
            ),
            ("weight_kg % 7", "unsupported operator"),
        ] {
            let e = sample_with("DATASET__DERIVED", &format!("{{bmi: '{expr}'}}"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with("test.yaml: dataset.derived.bmi: ") && e.contains(why),
                "{expr}: {e}"
            );
        }
        // what serving evaluates passes this check (the sample's own files may be elsewhere: any later error
        // is about them, not the expression)
        let e = sample_with(
            "DATASET__DERIVED",
            "{bmi: 'weight_kg / ((height_cm / 100.0) * (height_cm / 100.0))'}",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(!e.contains("dataset.derived"), "{e}");
    }

    #[test]
    fn a_key_must_be_long_and_a_development_key_allowed() {
        let cfg = |allow: &str| {
            Config::parse(
                EMBEDDED_CONFIG,
                "test.yaml",
                &[("TRIALFLOW_PRIVACY__ALLOW_DEV_KEY".into(), allow.into())],
            )
            .unwrap()
        };
        let allowed = cfg("true");
        let long = "k".repeat(MIN_KEY_BYTES);
        let (key, source) = allowed.key_from(Some(long.clone())).unwrap();
        assert_eq!(key, long.as_bytes());
        assert_eq!(
            source,
            KeySource::Environment("TRIALFLOW_PSEUDONYM_KEY".into())
        );
        for short in ["   ", "k", &"k".repeat(MIN_KEY_BYTES - 1), &" ".repeat(40)] {
            let e = allowed
                .key_from(Some(short.to_string()))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("privacy.key_env: the key in TRIALFLOW_PSEUDONYM_KEY is"),
                "{e}"
            );
            assert!(
                !e.contains(short.trim()) || short.trim().is_empty() || short.len() < 2,
                "{e}"
            );
        }
        // unset or empty: the development key only where the config allows it, and said so
        for unset in [None, Some(String::new())] {
            let (_, source) = allowed.key_from(unset.clone()).unwrap();
            assert_eq!(source, KeySource::DevKey);
            let e = cfg("false").key_from(unset).unwrap_err().to_string();
            assert!(e.contains("allow_dev_key: true"), "{e}");
        }
    }

    #[test]
    fn a_key_variable_that_holds_something_else_is_a_config_error() {
        let e = sample_with("PRIVACY__KEY_ENV", "PATH")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("test.yaml: privacy.key_env: `PATH` holds something else"),
            "{e}"
        );
    }

    #[test]
    fn a_misspelt_gate_metric_is_a_config_error() {
        let e = sample_with("DEPLOYMENT__CHECKS", "[{metric: auroc_lower, min: 0.6}]")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("test.yaml: deployment.checks[0].metric: no metric `auroc_lower`"),
            "{e}"
        );
        let e = sample_with(
            "DEPLOYMENT__REGRESSION",
            "{metric: roc_auc_ci_lower, margin: 0.1}",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("deployment.regression.metric"), "{e}");
    }

    #[test]
    fn expressions_that_would_break_or_spin_the_clean_sql_are_refused() {
        for (expr, why) in [
            ("followup_days > 0 --", "a comment"),
            ("followup_days > 0 /* x */", "a comment"),
            ("age > (SELECT max(age) FROM typed)", "a subquery"),
            ("EXISTS (SELECT 1)", "a subquery"),
            ("age IN (SELECT age FROM typed)", "a subquery"),
            (
                "age < (SELECT count(*) FROM generate_series(1, 100000000000))",
                "a subquery",
            ),
            (
                "generate_series(1, 1e11) > 0",
                "table function `generate_series`",
            ),
            ("UNNEST(make_array(1, 2)) > 0", "table function `unnest`"),
        ] {
            let e = check_sql_expr(expr).unwrap_err();
            assert!(e.contains(why), "{expr}: {e}");
        }
        assert!(check_sql_expr("age >= 18 AND sex = 'F' AND abs(weight_kg) > 0").is_ok());
    }

    #[test]
    fn reserved_derived_names_unbounded_layers_and_nan_bounds_are_config_errors() {
        for (key, value, expect) in [
            (
                "DATASET__DERIVED",
                "{_keep: 'age * 2'}",
                "dataset.derived._keep: this name is taken",
            ),
            (
                "DATASET__DERIVED",
                "{_check_1: 'age * 2'}",
                "dataset.derived._check_1: this name is taken",
            ),
            (
                "DATASET__DERIVED",
                "{subject_id: 'age * 2'}",
                // the sample's id column: refused as the id before as a name
                "dataset.id: `subject_id` is a derived column",
            ),
            (
                "DATASET__DERIVED",
                "{_row: 'age * 2'}",
                "dataset.derived._row: this name is taken",
            ),
            (
                "MODELS__M",
                "{hidden: [4000000000]}",
                "models.m.hidden: expected at most",
            ),
            (
                "DATASET__RULES__AGE",
                "{min: .nan, max: 100}",
                "dataset.rules.age: expected finite",
            ),
        ] {
            let e = sample_with(key, value)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with(&format!("test.yaml: {expect}")),
                "{key}={value}: {e}"
            );
        }
    }

    #[test]
    fn sql_expressions_are_checked() {
        assert!(check_sql_expr("age >= 18 AND sex = 'F'").is_ok());
        assert!(check_sql_expr("age >= ").is_err());
        assert!(check_sql_expr("a b c").is_err());
    }

    #[test]
    fn the_engine_is_local_or_a_ballista_scheduler_over_a_shared_lake() {
        let with = |vars: &[(&str, &str)]| {
            let env: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Config::from_yaml(EMBEDDED_CONFIG, "test.yaml", &env).unwrap_err()
        };
        for bad in [
            "spark://h:7077",
            "df://host",
            "df://h:port",
            "df://h:1/path",
        ] {
            let e = with(&[("TRIALFLOW_EXECUTION__ENGINE", bad)]);
            assert!(
                e.to_string()
                    .starts_with("test.yaml: execution.engine: expected"),
                "{bad}: {e}"
            );
        }
        // every executor reads the lake: a shared filesystem or a bucket, never a read-only HTTP root
        let e = with(&[
            ("TRIALFLOW_EXECUTION__ENGINE", "df://127.0.0.1:50050"),
            ("TRIALFLOW_STORAGE__LAKE", "https://example.org/lake"),
        ]);
        assert!(e.to_string().contains("storage.lake"), "{e}");
        assert!(e.to_string().contains("file:// lake"), "{e}");
        // (the embedded config's local sources do not exist here: the engine check alone)
        let mut cfg: Config = serde_yaml_ng::from_str(EMBEDDED_CONFIG).unwrap();
        cfg.storage.lake = "s3://bucket/lake".into();
        cfg.execution.engine = Engine::Ballista("127.0.0.1:50050".into());
        cfg.check_engine().unwrap();
    }

    #[test]
    fn invalid_yaml_names_the_file() {
        let e = load("storage: [").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("test.yaml: <document>: not valid YAML"),
            "{e}"
        );
    }
}
