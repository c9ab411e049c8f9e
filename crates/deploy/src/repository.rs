//! The model repository's lifecycle: promotion, rollback and listing.
//!
//! Versions are append-only: a version folder is written once, `BLESSED` last, and never renumbered. The
//! served version is the newest blessed one (the server's `latest` policy). Promoting an older or a
//! rolled-back version publishes a copy of it as a new version; a rollback moves the served version's
//! `BLESSED` to `REVOKED`, so the one before it is served again. Every change holds a lock object in the
//! repository (`<model>/_lock.json`, created only if absent) and leaves a record under `<model>/_history/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use trialflow_core::config::Config;
use trialflow_core::contracts::{self, DeploymentRecord};
use trialflow_core::fingerprint::sha256_hex;
use trialflow_core::lake;
use trialflow_core::{Error, Result, Storage};

use crate::gate::{Blessing, GateDecision, blessing_path};

const FILES: [&str; 3] = ["model.safetensors", "model.json", "metrics.json"];
const DEPLOYMENT_RECORD: &str = "deployment.json";

pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Servable.
    Blessed,
    /// Rolled back: was blessed, is not servable.
    Revoked,
    /// Never blessed (e.g. a promotion that was killed before its last write).
    Unblessed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub state: State,
    /// The version `latest` serves (the newest blessed one).
    pub served: bool,
    /// `BLESSED` or `REVOKED` content.
    #[serde(default)]
    pub marker: Option<Value>,
    /// `deployment.json`: when, what, from which data and config.
    #[serde(default)]
    pub record: Option<DeploymentRecord>,
}

#[derive(Debug, Clone, Default)]
pub struct Versions {
    pub model: String,
    pub versions: Vec<VersionInfo>,
}

impl Versions {
    pub fn served(&self) -> Option<u64> {
        self.versions.iter().find(|v| v.served).map(|v| v.version)
    }

    fn next(&self) -> u64 {
        self.versions.last().map_or(1, |v| v.version + 1)
    }

    fn get(&self, version: u64) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// Every version folder of `model`, oldest first, with its state and records.
pub async fn scan(models: &Storage, model: &str) -> Result<Versions> {
    let mut files: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in models.list(&format!("{model}/")).await? {
        let mut parts = e.path.split('/');
        if let (Some(m), Some(v), Some(file)) = (parts.next(), parts.next(), parts.next())
            && m == model
            && let Ok(v) = v.parse::<u64>()
        {
            files.entry(v).or_default().push(file.to_string());
        }
    }
    let mut versions = Vec::new();
    for (version, names) in files {
        let has = |f: &str| names.iter().any(|n| n == f);
        let state = if has("BLESSED") {
            State::Blessed
        } else if has("REVOKED") {
            State::Revoked
        } else {
            State::Unblessed
        };
        let json_of = |f: &'static str| {
            let rel = format!("{model}/{version}/{f}");
            async move {
                // A hand-written marker need not be JSON; it still counts.
                Ok::<_, Error>(
                    models
                        .get_opt(&rel)
                        .await?
                        .map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null)),
                )
            }
        };
        let marker = match state {
            State::Blessed => json_of("BLESSED").await?,
            State::Revoked => json_of("REVOKED").await?,
            State::Unblessed => None,
        };
        versions.push(VersionInfo {
            version,
            state,
            served: false,
            marker,
            record: contracts::read_opt(models, &format!("{model}/{version}/{DEPLOYMENT_RECORD}"))
                .await?,
        });
    }
    if let Some(v) = versions
        .iter_mut()
        .rev()
        .find(|v| v.state == State::Blessed)
    {
        v.served = true;
    }
    Ok(Versions {
        model: model.into(),
        versions,
    })
}

/// The repository lock for one model: created only if absent, removed on drop of the guard's scope by
/// `release`. A lock older than `stale_seconds` was left by a killed run and is broken.
struct Lock<'a> {
    models: &'a Storage,
    rel: String,
}

impl<'a> Lock<'a> {
    async fn acquire(
        models: &'a Storage,
        model: &str,
        action: &str,
        stale_seconds: u64,
    ) -> Result<Lock<'a>> {
        let rel = format!("{model}/_lock.json");
        let started = time::OffsetDateTime::now_utc();
        let body = serde_json::to_vec(&json!({
            "action": action,
            "pid": std::process::id(),
            "host": hostname(),
            "since": now(),
            "since_unix": started.unix_timestamp(),
        }))
        .map_err(Error::bug)?;
        for _ in 0..2 {
            let created = models.create(&rel, body.clone()).await.map_err(|e| {
                Error::config(
                    models.display(""),
                    "storage.models",
                    format!("the model repository is not writable: {e}"),
                )
            })?;
            if created {
                return Ok(Lock { models, rel });
            }
            let holder: Value = models
                .get_opt(&rel)
                .await?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            let age = started.unix_timestamp() - holder["since_unix"].as_i64().unwrap_or(0);
            if age > stale_seconds as i64 {
                tracing::warn!(lock = %models.display(&rel), age_seconds = age, "breaking a stale repository lock");
                models.delete(&rel).await?;
                continue;
            }
            return Err(Error::infra(
                models.display(&rel),
                format!(
                    "another {} of `{model}` holds the repository lock (pid {} on {}, since {}); retry when it \
                     has finished, or delete the lock if that process is gone",
                    holder["action"].as_str().unwrap_or("change"),
                    holder["pid"],
                    holder["host"].as_str().unwrap_or("?"),
                    holder["since"].as_str().unwrap_or("?"),
                ),
            ));
        }
        Err(Error::infra(
            models.display(&rel),
            "the repository lock keeps reappearing",
        ))
    }

    async fn release(self) -> Result<()> {
        self.models.delete(&self.rel).await
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Runs `f` under the model's repository lock; the lock is released whether `f` succeeds or fails.
async fn locked<T>(
    cfg: &Config,
    models: &Storage,
    model: &str,
    action: &str,
    f: impl AsyncFnOnce() -> Result<T>,
) -> Result<T> {
    let lock = Lock::acquire(models, model, action, cfg.deployment.lock_stale_seconds).await?;
    let out = f().await;
    let released = lock.release().await;
    let out = out?;
    released?;
    Ok(out)
}

pub use trialflow_core::contracts::Promotion;

async fn history<T: Serialize>(
    models: &Storage,
    model: &str,
    action: &str,
    record: &T,
) -> Result<()> {
    let ts = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    models
        .put_json(&format!("{model}/_history/{ts:014}-{action}.json"), record)
        .await
}

/// Writes a new version: the files, the deployment record, then `BLESSED` (so a half-written version is
/// never servable).
async fn publish(
    models: &Storage,
    model: &str,
    version: u64,
    files: Vec<(&'static str, bytes::Bytes)>,
    record: &DeploymentRecord,
    blessed: &Value,
) -> Result<()> {
    let dir = format!("{model}/{version}/");
    for (f, bytes) in files {
        models.put(&format!("{dir}{f}"), bytes).await?;
    }
    models
        .put_json(&format!("{dir}{DEPLOYMENT_RECORD}"), record)
        .await?;
    models.put_json(&format!("{dir}BLESSED"), blessed).await
}

/// A version's optional clustering of baseline phenotypes: served as each row's `cluster`.
const PHENOTYPES: &str = "phenotypes.json";

/// The lake's clustering of baseline phenotypes, when there is one fitted on the candidate's features (a
/// clustering of other features is left out, with a warning: serving could not apply it).
async fn phenotypes_for(lake: &Storage, card: &[u8]) -> Result<Option<bytes::Bytes>> {
    let Some(bytes) = lake.get_opt(lake::PHENOTYPES_MODEL).await? else {
        return Ok(None);
    };
    let location = lake.display(lake::PHENOTYPES_MODEL);
    let clustering: trialflow_model::clustering::Phenotypes = contracts::parse(&location, &bytes)?;
    let card: trialflow_model::ModelCard = contracts::parse(&location, card)?;
    if clustering.feature_spec != card.feature_spec {
        tracing::warn!(
            location,
            "the phenotype clustering was fitted on other features than the promoted model: not promoted with it"
        );
        return Ok(None);
    }
    Ok(Some(bytes))
}

/// The data and config fingerprints of a version's `model.json`.
fn card_fingerprints(location: &str, card: &[u8]) -> Result<(String, String)> {
    let card: trialflow_model::ModelCard = contracts::parse(location, card)?;
    Ok((card.data_fingerprint, card.config_fingerprint))
}

/// Promotes the gate's blessed candidate into `<models>/<serving.model_name>/<next version>/`.
pub async fn promote(cfg: &Config, lake: &Storage, models: &Storage) -> Result<Promotion> {
    let decision: GateDecision = contracts::load(lake).await?;
    let candidate = decision
        .chosen
        .clone()
        .ok_or_else(|| Error::bad_data(lake.display(lake::GATE), "the gate chose no candidate"))?;
    let blessing: Blessing = contracts::read(lake, &blessing_path(&candidate)).await?;
    let dir = lake::candidate_dir(&candidate);
    let weights = lake.get(&format!("{dir}model.safetensors")).await?;
    let sha = sha256_hex(&weights);
    if blessing.weights_sha256 != sha {
        return Err(Error::bad_data(
            lake.display(&blessing_path(&candidate)),
            "the blessing is for other weights (the candidate was retrained after the gate ran); run the gate again",
        ));
    }
    let name = cfg.serving.model_name.clone();
    models.sweep_staged()?; // promotion runs under the lake's run lock
    locked(cfg, models, &name, "promotion", async || {
        let versions = scan(models, &name).await?;
        let weights_of = |v: &VersionInfo| {
            v.marker
                .as_ref()
                .and_then(|m| m["weights_sha256"].as_str().map(str::to_string))
        };
        if let Some(served) = versions.versions.iter().find(|v| v.served)
            && weights_of(served).as_deref() == Some(&sha)
        {
            return Ok(Promotion {
                model_name: name.clone(),
                version: served.version,
                source: candidate.clone(),
                new_version: false,
                forced: false,
                location: models.display(&format!("{name}/{}/", served.version)),
                note: None,
            });
        }
        // A rollback is a person's decision: the pipeline does not undo it by re-promoting the same weights.
        if let Some(revoked) = versions
            .versions
            .iter()
            .find(|v| v.state == State::Revoked && weights_of(v).as_deref() == Some(&sha))
        {
            let note = format!(
                "not promoted: candidate `{candidate}` has the weights of version {}, which was rolled back \
                 (`trialflow models promote {name} {} --force` serves it again)",
                revoked.version, revoked.version
            );
            tracing::warn!(candidate, version = revoked.version, "{note}");
            return Ok(Promotion {
                model_name: name.clone(),
                version: versions.served().unwrap_or(revoked.version),
                source: candidate.clone(),
                new_version: false,
                forced: false,
                location: models.display(&format!("{name}/")),
                note: Some(note),
            });
        }
        let version = versions.next();
        let mut files = Vec::new();
        for f in FILES {
            let bytes = if f == "model.safetensors" {
                weights.clone()
            } else {
                lake.get(&format!("{dir}{f}")).await?
            };
            files.push((f, bytes));
        }
        let (data_fingerprint, config_fingerprint) =
            card_fingerprints(&lake.display(&format!("{dir}model.json")), &files[1].1)?;
        if let Some(p) = phenotypes_for(lake, &files[1].1).await? {
            files.push((PHENOTYPES, p));
        }
        let record = DeploymentRecord {
            action: "promote".into(),
            model_name: name.clone(),
            version,
            source: candidate.clone(),
            copied_from: None,
            weights_sha256: sha.clone(),
            at: now(),
            data_fingerprint,
            config_fingerprint,
            forced: false,
            replaces: versions.served(),
            lake: Some(lake.url().to_string()),
            repository: models.url().to_string(),
        };
        let blessed = json!({
            "candidate": candidate, "weights_sha256": sha, "blessed_at": blessing.blessed_at,
            "checks": blessing.checks,
        });
        publish(models, &name, version, files, &record, &blessed).await?;
        history(models, &name, "promote", &record).await?;
        lake.put_json(&contracts::deployment_record(&name, version), &record)
            .await?;
        Ok(Promotion {
            model_name: name.clone(),
            version,
            source: candidate.clone(),
            new_version: true,
            forced: false,
            location: models.display(&format!("{name}/{version}/")),
            note: None,
        })
    })
    .await
}

/// `trialflow models promote <model> <version>`: serves an existing version again by publishing a copy of it
/// as the newest version. A version that is not blessed is refused unless `force` (then recorded as forced).
pub async fn promote_version(
    cfg: &Config,
    models: &Storage,
    model: &str,
    version: u64,
    force: bool,
) -> Result<Promotion> {
    locked(cfg, models, model, "promotion", async || {
        let versions = scan(models, model).await?;
        let Some(info) = versions.get(version) else {
            let have: Vec<String> = versions
                .versions
                .iter()
                .map(|v| v.version.to_string())
                .collect();
            return Err(Error::config(
                models.display(&format!("{model}/")),
                "models promote",
                format!(
                    "no version {version} of `{model}` (versions: {})",
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                ),
            ));
        };
        if info.served {
            return Ok(Promotion {
                model_name: model.into(),
                version,
                source: format!("version {version}"),
                new_version: false,
                forced: false,
                location: models.display(&format!("{model}/{version}/")),
                note: None,
            });
        }
        if info.state != State::Blessed && !force {
            let why = match info.state {
                State::Revoked => "it was rolled back",
                _ => "it never passed the quality gate",
            };
            return Err(Error::config(
                models.display(&format!("{model}/{version}/")),
                "models promote",
                format!(
                    "version {version} of `{model}` is not blessed ({why}); add --force to promote it anyway \
                     (the promotion is recorded as forced)"
                ),
            ));
        }
        let src = format!("{model}/{version}/");
        let mut files = Vec::new();
        for f in FILES {
            files.push((f, models.get(&format!("{src}{f}")).await?));
        }
        if let Some(p) = models.get_opt(&format!("{src}{PHENOTYPES}")).await? {
            files.push((PHENOTYPES, p));
        }
        let sha = sha256_hex(&files[0].1);
        let (data_fingerprint, config_fingerprint) =
            card_fingerprints(&models.display(&format!("{src}model.json")), &files[1].1)?;
        let new = versions.next();
        let forced = info.state != State::Blessed;
        let record = DeploymentRecord {
            action: "promote".into(),
            model_name: model.to_string(),
            version: new,
            source: format!("version {version}"),
            copied_from: Some(version),
            weights_sha256: sha.clone(),
            at: now(),
            data_fingerprint,
            config_fingerprint,
            forced,
            replaces: versions.served(),
            lake: None,
            repository: models.url().to_string(),
        };
        let original = info
            .marker
            .as_ref()
            .map(|m| m.get("blessing").cloned().unwrap_or_else(|| m.clone()));
        let blessed = json!({
            "copied_from": version, "weights_sha256": sha, "forced": forced, "blessed_at": now(),
            "original": original,
        });
        publish(models, model, new, files, &record, &blessed).await?;
        history(models, model, "promote", &record).await?;
        Ok(Promotion {
            model_name: model.into(),
            version: new,
            source: format!("version {version}"),
            new_version: true,
            forced,
            location: models.display(&format!("{model}/{new}/")),
            note: None,
        })
    })
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollback {
    pub model_name: String,
    /// The version taken out of service.
    pub revoked: u64,
    /// The version served now.
    pub serving: u64,
}

/// `trialflow models rollback <model>`: takes the served version out of service; the blessed version before
/// it is served again.
pub async fn rollback(cfg: &Config, models: &Storage, model: &str) -> Result<Rollback> {
    locked(cfg, models, model, "rollback", async || {
        let versions = scan(models, model).await?;
        let Some(current) = versions.served() else {
            return Err(Error::config(
                models.display(&format!("{model}/")),
                "models rollback",
                format!("no version of `{model}` is served: nothing to roll back"),
            ));
        };
        let Some(previous) = versions
            .versions
            .iter()
            .rev()
            .find(|v| v.version < current && v.state == State::Blessed)
            .map(|v| v.version)
        else {
            return Err(Error::config(
                models.display(&format!("{model}/")),
                "models rollback",
                format!(
                    "version {current} of `{model}` is the only blessed version: there is no previous version \
                     to roll back to"
                ),
            ));
        };
        let dir = format!("{model}/{current}/");
        let blessing = versions
            .get(current)
            .and_then(|v| v.marker.clone())
            .unwrap_or(Value::Null);
        let revoked = json!({
            "revoked_at": now(), "reason": "rollback", "back_to": previous,
            "weights_sha256": blessing["weights_sha256"], "blessing": blessing,
        });
        // REVOKED first: a rollback killed in between leaves both markers, which still reads as blessed.
        models.put_json(&format!("{dir}REVOKED"), &revoked).await?;
        models.delete(&format!("{dir}BLESSED")).await?;
        history(
            models,
            model,
            "rollback",
            &json!({"action": "rollback", "model_name": model, "revoked": current, "serving": previous, "at": now()}),
        )
        .await?;
        Ok(Rollback {
            model_name: model.into(),
            revoked: current,
            serving: previous,
        })
    })
    .await
}
