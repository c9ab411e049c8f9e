//! The model repository as the server sees it: `<model>/<version>/` folders, servable once `BLESSED` exists.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use candle_core::Device;
use trialflow_core::{Error, Result, Storage};
use trialflow_model::{ModelCard, Network, load_safetensors};

#[derive(Debug)]
pub struct LoadedVersion {
    pub version: u64,
    pub card: ModelCard,
    pub network: Network,
}

pub struct Repository {
    store: Storage,
    models: RwLock<BTreeMap<String, BTreeMap<u64, Arc<LoadedVersion>>>>,
}

impl Repository {
    pub fn new(store: Storage) -> Self {
        Self {
            store,
            models: RwLock::new(BTreeMap::new()),
        }
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, BTreeMap<u64, Arc<LoadedVersion>>>> {
        self.models.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The requested version, or the latest loaded one.
    pub fn get(&self, model: &str, version: Option<u64>) -> Option<Arc<LoadedVersion>> {
        let guard = self.read();
        let versions = guard.get(model)?;
        match version {
            Some(v) => versions.get(&v).cloned(),
            None => versions.values().next_back().cloned(),
        }
    }

    pub fn versions(&self, model: &str) -> Option<Vec<u64>> {
        self.read().get(model).map(|v| v.keys().copied().collect())
    }

    pub fn loaded_count(&self) -> usize {
        self.read().values().map(BTreeMap::len).sum()
    }

    /// Loads new blessed versions and drops removed ones. A version that fails to load is skipped (and
    /// reported) so that one bad folder never takes the others down. Returns what changed.
    pub async fn refresh(&self) -> Result<Vec<String>> {
        let mut found: BTreeMap<String, BTreeMap<u64, bool>> = BTreeMap::new();
        for e in self.store.list("").await? {
            let parts: Vec<&str> = e.path.split('/').collect();
            if let [model, version, "BLESSED"] = parts.as_slice()
                && let Ok(v) = version.parse::<u64>()
            {
                found.entry(model.to_string()).or_default().insert(v, true);
            }
        }
        let mut changes = Vec::new();
        for (model, versions) in &found {
            for v in versions.keys() {
                if self.get(model, Some(*v)).is_some() {
                    continue;
                }
                match self.load(model, *v).await {
                    Ok(loaded) => {
                        let mut w = self.models.write().unwrap_or_else(|p| p.into_inner());
                        w.entry(model.clone())
                            .or_default()
                            .insert(*v, Arc::new(loaded));
                        changes.push(format!("loaded {model}/{v}"));
                    }
                    Err(e) => {
                        tracing::warn!(model = %model, version = v, error = %e, "cannot load model version");
                        changes.push(format!("failed {model}/{v}"));
                    }
                }
            }
        }
        let mut w = self.models.write().unwrap_or_else(|p| p.into_inner());
        for (model, versions) in w.iter_mut() {
            let keep = found.get(model);
            versions.retain(|v, _| {
                let k = keep.is_some_and(|k| k.contains_key(v));
                if !k {
                    changes.push(format!("unloaded {model}/{v}"));
                }
                k
            });
        }
        w.retain(|_, v| !v.is_empty());
        Ok(changes)
    }

    async fn load(&self, model: &str, version: u64) -> Result<LoadedVersion> {
        let dir = format!("{model}/{version}");
        let card: ModelCard = self.store.get_json(&format!("{dir}/model.json")).await?;
        let bytes = self.store.get(&format!("{dir}/model.safetensors")).await?;
        let network = load_safetensors(&card.architecture, &bytes, &Device::Cpu).map_err(|m| {
            Error::bad_data(self.store.display(&format!("{dir}/model.safetensors")), m)
        })?;
        Ok(LoadedVersion {
            version,
            card,
            network,
        })
    }
}
