//! Where the SQL runs: DataFusion in this process, or a Ballista cluster (`execution.engine: df://host:port`,
//! cargo feature `ballista`). Both see the lake's tables under [`SqlEngine::table_url`] and run the same
//! statements.

use datafusion::prelude::{SessionConfig, SessionContext};
use trialflow_core::config::Config;
use trialflow_core::{Error, Result, Storage};

/// The URL under which a local context sees the lake (any backend: the lake's own object store is registered
/// there).
const LAKE_URL: &str = "trialflow-lake://lake/";

pub struct SqlEngine {
    pub ctx: SessionContext,
    /// Prefix of the lake's tables as this engine's processes address them.
    tables: String,
    /// `df://host:port` when the SQL runs on a Ballista cluster.
    pub cluster: Option<String>,
}

/// Identifiers in the contract's SQL (filters, derived columns, rules) name columns exactly as the export
/// spells them, as the contract's own column lists do: `SAFFL = 'Y'` reads the CDISC column `SAFFL`, where
/// SQL's usual folding of unquoted names to lower case would look for `saffl`. Function names still match
/// in any case.
pub(crate) fn as_written(mut config: SessionConfig) -> SessionConfig {
    config.options_mut().sql_parser.enable_ident_normalization = false;
    config
}

impl SqlEngine {
    /// A session for `cfg`'s engine. On a cluster the session config travels with each query (target
    /// partitions, batch size); our functions travel inside the plans (see `cluster`).
    pub async fn new(cfg: &Config, lake: &Storage, config: SessionConfig) -> Result<Self> {
        let config = as_written(config);
        match cfg.execution.ballista_scheduler() {
            None => Self::local(lake, config),
            Some(addr) => Self::remote(cfg, lake, addr, config).await,
        }
    }

    pub fn local(lake: &Storage, config: SessionConfig) -> Result<Self> {
        let ctx = SessionContext::new_with_config(as_written(config));
        let url = datafusion::execution::object_store::ObjectStoreUrl::parse(LAKE_URL)
            .map_err(Error::bug)?;
        ctx.register_object_store(url.as_ref(), lake.object_store());
        Ok(Self {
            ctx,
            tables: LAKE_URL.to_string(),
            cluster: None,
        })
    }

    #[cfg(feature = "ballista")]
    async fn remote(
        cfg: &Config,
        lake: &Storage,
        addr: &str,
        config: SessionConfig,
    ) -> Result<Self> {
        // Executors open the tables by URL: a path on the filesystem they share, or the lake's bucket, which
        // each process opens from its own environment (`cluster::LakeStores`).
        let tables = match lake.local_root() {
            Some(root) => {
                let root = root.canonicalize().map_err(|e| {
                    Error::infra(root.display().to_string(), format!("cannot resolve: {e}"))
                })?;
                format!("{}/", root.display())
            }
            None => format!("{}/", lake.url().trim_end_matches('/')),
        };
        let ctx = crate::cluster::remote_context(addr, config, &cfg.storage.client)
            .await
            .map_err(|e| {
                Error::config(
                    &cfg.source_file,
                    "execution.engine",
                    format!("not a Ballista scheduler address: {e}"),
                )
            })?;
        let engine = Self {
            ctx,
            tables,
            cluster: Some(format!("df://{addr}")),
        };
        engine.probe().await?;
        Ok(engine)
    }

    #[cfg(not(feature = "ballista"))]
    async fn remote(
        cfg: &Config,
        _lake: &Storage,
        _addr: &str,
        _config: SessionConfig,
    ) -> Result<Self> {
        Err(Error::config(
            &cfg.source_file,
            "execution.engine",
            "this trialflow was built without Ballista: build it with `--features ballista` \
             (e.g. `cargo build --release --features ballista`), or set `engine: local`",
        ))
    }

    /// One trivial query, so that an unreachable or broken cluster is reported as such, before any work.
    #[cfg(feature = "ballista")]
    async fn probe(&self) -> Result<()> {
        let url = self.cluster.clone().unwrap_or_default();
        let df = self.ctx.sql("SELECT 1 AS ok").await.map_err(|e| {
            Error::infra(&url, format!("the Ballista scheduler refused a query: {e}"))
        })?;
        df.collect().await.map_err(|e| {
            Error::infra(
                &url,
                format!("cannot run a query on the Ballista cluster (is the scheduler up, with an executor?): {e}"),
            )
        })?;
        Ok(())
    }

    /// Where this engine reads `rel` (a lake-relative path).
    pub fn table_url(&self, rel: &str) -> String {
        format!("{}{rel}", self.tables)
    }

    /// Registers the Parquet objects under `prefix` as table `name`.
    pub async fn register_lake_table(
        &self,
        lake: &Storage,
        name: &str,
        prefix: &str,
    ) -> Result<()> {
        let parquet = lake
            .list(prefix)
            .await?
            .into_iter()
            .any(|e| e.path.ends_with(".parquet"));
        if !parquet {
            return Err(Error::bad_data(
                lake.display(prefix),
                "no Parquet table here: run the stage that writes it first",
            ));
        }
        self.ctx
            .register_parquet(
                name,
                self.table_url(prefix),
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .map_err(|e| {
                Error::bad_data(
                    lake.display(prefix),
                    format!("not a readable Parquet table: {e}"),
                )
            })
    }
}
