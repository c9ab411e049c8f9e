//! The model repository as the server sees it: `<model>/<version>/` folders, servable once `BLESSED` exists,
//! filtered by the version policy. The loaded set is an immutable snapshot swapped whole: a request holds
//! an `Arc` to the version it started with, so a reload never fails it, and a retired version's memory is
//! freed when its last request ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use candle_core::Device;
use trialflow_core::config::{VersionPolicy, is_model_name};
use trialflow_core::lake::model_versions;
use trialflow_core::{Error, Result, Storage};
use trialflow_model::{DenseCpu, Encoder, ModelCard, load_safetensors};

#[derive(Debug)]
pub struct LoadedVersion {
    pub model: String,
    /// The model name, shared with the per-request metrics keys.
    pub model_key: Arc<str>,
    pub version: u64,
    pub card: ModelCard,
    pub scorer: DenseCpu,
    /// The card's feature spec ready to encode records; its `inputs()` are the fields a record carries.
    pub encoder: Encoder,
    /// The clustering of baseline phenotypes promoted with this version (`phenotypes.json`), when there was one.
    pub phenotypes: Option<trialflow_model::clustering::Phenotypes>,
}

/// Which version a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Version(u64),
    Label(String),
}

/// Why a lookup failed, worded as TF Serving words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    Model(String),
    Version(String, u64),
    Label(String, String),
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotFound::Model(m) => write!(f, "Servable not found for request: Latest({m})"),
            NotFound::Version(m, v) => {
                write!(f, "Servable not found for request: Specific({m}, {v})")
            }
            NotFound::Label(m, l) => write!(
                f,
                "Unrecognized servable version label: {l} (model {m}); configure it under serving.labels and make sure its version is loaded"
            ),
        }
    }
}

type Snapshot = BTreeMap<String, BTreeMap<u64, Arc<LoadedVersion>>>;

/// Counters the metrics endpoint reports.
#[derive(Debug, Default)]
pub struct RepoCounters {
    pub loads_ok: AtomicU64,
    pub loads_failed: AtomicU64,
    pub unloads: AtomicU64,
    pub scans_failed: AtomicU64,
}

pub struct Repository {
    store: Storage,
    policy: VersionPolicy,
    labels: BTreeMap<String, BTreeMap<String, u64>>,
    loaded: RwLock<Arc<Snapshot>>,
    /// Versions that failed to load, with the BLESSED marker they failed under: not retried until it changes.
    failed: Mutex<BTreeMap<(String, u64), String>>,
    pub counters: RepoCounters,
}

impl Repository {
    pub fn new(
        store: Storage,
        policy: VersionPolicy,
        labels: BTreeMap<String, BTreeMap<String, u64>>,
    ) -> Self {
        Self {
            store,
            policy,
            labels,
            loaded: RwLock::new(Arc::new(BTreeMap::new())),
            failed: Mutex::new(BTreeMap::new()),
            counters: RepoCounters::default(),
        }
    }

    pub fn location(&self) -> String {
        self.store.url().to_string()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn get(
        &self,
        model: &str,
        sel: &Selector,
    ) -> std::result::Result<Arc<LoadedVersion>, NotFound> {
        let snap = self.snapshot();
        let versions = snap
            .get(model)
            .ok_or_else(|| NotFound::Model(model.to_string()))?;
        match sel {
            Selector::Latest => versions.values().next_back().cloned(),
            Selector::Version(v) => versions.get(v).cloned(),
            Selector::Label(l) => self
                .labels
                .get(model)
                .and_then(|m| m.get(l))
                .and_then(|v| versions.get(v))
                .cloned(),
        }
        .ok_or_else(|| match sel {
            Selector::Label(l) => NotFound::Label(model.to_string(), l.clone()),
            Selector::Version(v) => NotFound::Version(model.to_string(), *v),
            Selector::Latest => NotFound::Model(model.to_string()),
        })
    }

    /// Loaded versions of `model`, ascending.
    pub fn versions(&self, model: &str) -> Vec<u64> {
        self.snapshot()
            .get(model)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Every loaded `(model, version)`.
    pub fn loaded(&self) -> Vec<(String, u64)> {
        self.snapshot()
            .iter()
            .flat_map(|(m, vs)| vs.keys().map(move |v| (m.clone(), *v)))
            .collect()
    }

    pub fn loaded_count(&self) -> usize {
        self.snapshot().values().map(BTreeMap::len).sum()
    }

    /// Labels of `model` that point at a loaded version.
    pub fn labels_of(&self, model: &str) -> BTreeMap<String, u64> {
        let loaded = self.versions(model);
        self.labels
            .get(model)
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| loaded.contains(v))
                    .map(|(l, v)| (l.clone(), *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Scans the repository, loads the versions the policy wants and retires the others. A version that
    /// fails to load is skipped and reported, and the versions already serving stay, so one bad folder never
    /// takes a model down. Returns what changed, for the log.
    pub async fn refresh(&self) -> Result<Vec<String>> {
        let entries = match self.store.list("").await {
            Ok(e) => e,
            Err(e) => {
                self.counters.scans_failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let mut blessed: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
        for e in entries {
            let parts: Vec<&str> = e.path.split('/').collect();
            if let [model, version, "BLESSED"] = parts.as_slice()
                && is_model_name(model)
                && let Ok(v) = version.parse::<u64>()
            {
                let marker = format!("{}:{}:{:?}", e.size, e.last_modified, e.e_tag);
                blessed
                    .entry(model.to_string())
                    .or_default()
                    .insert(v, marker);
            }
        }
        let old = self.snapshot();
        let mut next: Snapshot = BTreeMap::new();
        let mut changes = Vec::new();
        for (model, versions) in &blessed {
            let available: Vec<u64> = versions.keys().copied().collect();
            let wanted = self.policy.select(&available);
            let mut got: BTreeMap<u64, Arc<LoadedVersion>> = BTreeMap::new();
            for v in &wanted {
                if let Some(l) = old.get(model).and_then(|m| m.get(v)) {
                    got.insert(*v, l.clone());
                    continue;
                }
                let marker = &versions[v];
                let key = (model.clone(), *v);
                if self
                    .failed
                    .lock()
                    .map(|f| f.get(&key) == Some(marker))
                    .unwrap_or(false)
                {
                    continue;
                }
                match load(&self.store, model, *v).await {
                    Ok(l) => {
                        self.counters.loads_ok.fetch_add(1, Ordering::Relaxed);
                        changes.push(format!("loaded {model}/{v}"));
                        got.insert(*v, Arc::new(l));
                    }
                    Err(e) => {
                        self.counters.loads_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(model = %model, version = v, error = %e, "cannot load model version; it is skipped until its BLESSED marker changes");
                        changes.push(format!("failed {model}/{v}"));
                        if let Ok(mut f) = self.failed.lock() {
                            f.insert(key, marker.clone());
                        }
                    }
                }
            }
            if got.is_empty() {
                // Nothing wanted could load: keep serving what was serving, if it is still blessed.
                if let Some(prev) = old.get(model) {
                    for (v, l) in prev {
                        if versions.contains_key(v) {
                            got.insert(*v, l.clone());
                        }
                    }
                }
            }
            if !got.is_empty() {
                next.insert(model.clone(), got);
            }
        }
        for (model, versions) in old.iter() {
            for v in versions.keys() {
                if !next.get(model).is_some_and(|n| n.contains_key(v)) {
                    self.counters.unloads.fetch_add(1, Ordering::Relaxed);
                    changes.push(format!("unloaded {model}/{v}"));
                }
            }
        }
        if !changes.is_empty() {
            *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        }
        Ok(changes)
    }
}

/// Loads `<model>/<version>/` from `store`: the card, the weights, the scoring copy, checked against each other.
async fn load(store: &Storage, model: &str, version: u64) -> Result<LoadedVersion> {
    let dir = format!("{model}/{version}");
    let card: ModelCard = store.get_json(&format!("{dir}/model.json")).await?;
    let bytes = store.get(&format!("{dir}/model.safetensors")).await?;
    let weights = store.display(&format!("{dir}/model.safetensors"));
    let network = load_safetensors(&card.architecture, &bytes, &Device::Cpu)
        .map_err(|m| Error::bad_data(&weights, m))?;
    let scorer =
        DenseCpu::from_network(&network).map_err(|e| Error::bad_data(&weights, e.to_string()))?;
    if scorer.input_dim() != card.feature_spec.width() {
        return Err(Error::bad_data(
            &weights,
            format!(
                "the first layer takes {} inputs but the feature spec has {} columns",
                scorer.input_dim(),
                card.feature_spec.width()
            ),
        ));
    }
    let encoder = Encoder::new(&card.feature_spec).map_err(|e| {
        Error::bad_data(
            store.display(&format!("{dir}/model.json")),
            format!("feature spec: {e}"),
        )
    })?;
    let phenotypes = match store.get_opt(&format!("{dir}/phenotypes.json")).await? {
        None => None,
        Some(bytes) => {
            let at = store.display(&format!("{dir}/phenotypes.json"));
            let p: trialflow_model::clustering::Phenotypes =
                serde_json::from_slice(&bytes).map_err(|e| Error::bad_data(&at, e.to_string()))?;
            if p.feature_spec != card.feature_spec
                || p.columns.iter().any(|&c| c >= card.feature_spec.width())
            {
                return Err(Error::bad_data(
                    &at,
                    "the clustering was fitted on other features than the model's",
                ));
            }
            Some(p)
        }
    };
    Ok(LoadedVersion {
        model: model.to_string(),
        model_key: Arc::from(model),
        version,
        encoder,
        card,
        scorer,
        phenotypes,
    })
}

/// Loads one version for batch scoring: `version` or the newest blessed one.
pub async fn load_version(
    store: &Storage,
    model: &str,
    version: Option<u64>,
) -> Result<Arc<LoadedVersion>> {
    let blessed: BTreeSet<u64> = model_versions(store, model)
        .await?
        .into_iter()
        .filter_map(|(v, blessed)| blessed.then_some(v))
        .collect();
    let v = match version {
        Some(v) if blessed.contains(&v) => v,
        Some(v) => {
            return Err(Error::bad_data(
                store.display(&format!("{model}/{v}/")),
                "no such blessed version",
            ));
        }
        None => *blessed.iter().next_back().ok_or_else(|| {
            Error::bad_data(
                store.display(&format!("{model}/")),
                "no blessed version of this model",
            )
        })?,
    };
    load(store, model, v).await.map(Arc::new)
}
