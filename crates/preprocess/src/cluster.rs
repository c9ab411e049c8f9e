//! Ballista (cargo feature `ballista`): the plan codecs that carry trialflow's SQL functions to the cluster,
//! the client session, and the scheduler and executor processes (`trialflow cluster …`).
//!
//! The stock Ballista binaries resolve functions by name from their own registry, which knows neither
//! `pseudonymize` nor `split_unit`. Our codecs ship each function with its parameter (the pseudonym key, the
//! split salt) inside the plan, so every process computes exactly what the client would, with no key
//! configured on the cluster. The key therefore travels in plans between client, scheduler and executors:
//! run the cluster on a private network (or with Ballista's TLS).
//!
//! A lake in a bucket (`s3://`, `gs://`, `az://`) is read by every process of the cluster through
//! [`LakeStores`], which opens a bucket's store from the process's own environment (each cloud's standard
//! variables, as `trialflow` itself reads them) the first time a plan names it.

use std::any::Any;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use trialflow_core::{Error, Result};

use crate::udf;

const PSEUDONYMIZE: &[u8] = b"trialflow.pseudonymize.v1\0";
const SPLIT_UNIT: &[u8] = b"trialflow.split_unit.v1\0";

/// Our functions as bytes (empty for every other function: those resolve by name).
fn encode_udf(node: &ScalarUDF, buf: &mut Vec<u8>) {
    let inner: &dyn Any = node.inner().as_ref();
    if let Some(p) = inner.downcast_ref::<udf::Pseudonymize>() {
        buf.extend_from_slice(PSEUDONYMIZE);
        buf.extend_from_slice(p.key());
    } else if let Some(s) = inner.downcast_ref::<udf::SplitUnit>() {
        buf.extend_from_slice(SPLIT_UNIT);
        buf.extend_from_slice(s.salt().as_bytes());
    }
}

fn decode_udf(buf: &[u8]) -> Option<DfResult<Arc<ScalarUDF>>> {
    if let Some(key) = buf.strip_prefix(PSEUDONYMIZE) {
        return Some(Ok(Arc::new(udf::pseudonymize_udf(key.to_vec()))));
    }
    let salt = buf.strip_prefix(SPLIT_UNIT)?;
    Some(
        String::from_utf8(salt.to_vec())
            .map(|s| Arc::new(udf::split_unit_udf(s)))
            .map_err(|_| DataFusionError::Internal("split_unit: the salt is not UTF-8".into())),
    )
}

/// Ballista's logical codec, plus our functions.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> DfResult<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        self.inner
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> DfResult<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        decode_udf(buf).unwrap_or_else(|| self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        encode_udf(node, buf);
        Ok(())
    }
}

/// Ballista's physical codec, plus our functions.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        decode_udf(buf).unwrap_or_else(|| self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        encode_udf(node, buf);
        Ok(())
    }
}

/// The object stores of a cluster process: `file://` as DataFusion has it, and any bucket of `s3://`, `gs://`
/// or `az://` (`abfs://`, `azure://`) opened on first use from this process's environment, with the client
/// settings of the config that started it. A bucket it cannot open is an error naming the bucket.
#[derive(Debug)]
pub struct LakeStores {
    inner: datafusion::execution::object_store::DefaultObjectStoreRegistry,
    client: trialflow_core::config::StorageClientConfig,
    opened: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl LakeStores {
    pub fn new(client: trialflow_core::config::StorageClientConfig) -> Self {
        Self {
            inner: datafusion::execution::object_store::DefaultObjectStoreRegistry::new(),
            client,
            opened: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }
}

/// `scheme://bucket`: the key a bucket's store is registered under.
fn bucket_url(url: &url::Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
}

impl datafusion::execution::object_store::ObjectStoreRegistry for LakeStores {
    fn register_store(
        &self,
        url: &url::Url,
        store: Arc<dyn object_store::ObjectStore>,
    ) -> Option<Arc<dyn object_store::ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn get_store(&self, url: &url::Url) -> DfResult<Arc<dyn object_store::ObjectStore>> {
        if let Ok(store) = self.inner.get_store(url) {
            return Ok(store);
        }
        if !matches!(url.scheme(), "s3" | "s3a" | "gs" | "az" | "abfs" | "azure") {
            return self.inner.get_store(url);
        }
        let bucket = bucket_url(url);
        let storage = trialflow_core::Storage::open_with(&bucket, &self.client).map_err(|e| {
            DataFusionError::External(format!("cannot open the lake's store {bucket}: {e}").into())
        })?;
        let store = storage.object_store();
        if let Ok(base) = url::Url::parse(&bucket) {
            self.inner.register_store(&base, store.clone());
        }
        if let Ok(mut opened) = self.opened.lock()
            && opened.insert(bucket.clone())
        {
            tracing::info!(store = %bucket, "opened the lake's object store");
        }
        Ok(store)
    }

    fn deregister_store(&self, url: &url::Url) -> DfResult<Arc<dyn object_store::ObjectStore>> {
        self.inner.deregister_store(url)
    }
}

/// A runtime whose object stores are [`LakeStores`] (spill files under `work_dir` when given).
fn lake_runtime(
    stores: Arc<LakeStores>,
    work_dir: Option<&str>,
) -> DfResult<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    let mut b = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_object_store_registry(stores);
    if let Some(dir) = work_dir {
        b = b.with_temp_file_path(dir);
    }
    Ok(Arc::new(b.build()?))
}

/// A session whose queries run on the Ballista scheduler at `addr` (`host:port`); it plans over the lake's
/// stores as the cluster reads them.
pub async fn remote_context(
    addr: &str,
    config: SessionConfig,
    client: &trialflow_core::config::StorageClientConfig,
) -> DfResult<SessionContext> {
    let config = config.with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()));
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(lake_runtime(
            Arc::new(LakeStores::new(client.clone())),
            None,
        )?)
        .build();
    SessionContext::remote_with_state(&format!("df://{addr}"), state).await
}

fn ballista_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::infra(what.to_string(), e.to_string())
}

/// A Ballista scheduler with trialflow's codecs, serving on `bind` (`host:port`) until the process ends. It
/// plans over the lake's object stores (listing a bucket's Parquet objects).
pub async fn run_scheduler(
    bind: std::net::SocketAddr,
    client: trialflow_core::config::StorageClientConfig,
) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let stores = Arc::new(LakeStores::new(client));
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        external_host: bind.ip().to_string(),
        bind_port: bind.port(),
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        override_session_builder: Some(Arc::new(move |config: SessionConfig| {
            let state = ballista_core::utils::default_session_builder(config)?;
            Ok(SessionStateBuilder::new_from_existing(state)
                .with_runtime_env(lake_runtime(stores.clone(), None)?)
                .build())
        })),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| ballista_err("ballista scheduler", e))?;
    ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(|e| ballista_err("ballista scheduler", e))
}

/// Where an executor listens and which scheduler it serves.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// `host:port`.
    pub scheduler: String,
    pub bind_host: String,
    /// Arrow Flight (results and shuffle data).
    pub flight_port: u16,
    pub grpc_port: u16,
    /// Shuffle files; a temporary folder when `None`.
    pub work_dir: Option<String>,
    /// Tasks at once (default: the machine's cores).
    pub concurrent_tasks: Option<usize>,
    /// Object-store client settings for the lake's bucket.
    pub client: trialflow_core::config::StorageClientConfig,
}

/// A Ballista executor with trialflow's codecs, until the scheduler stops it or the process ends.
pub async fn run_executor(o: ExecutorOptions) -> Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let defaults = ExecutorProcessConfig::default();
    let (scheduler_host, scheduler_port) = o
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            Error::config(
                "trialflow cluster executor",
                "--scheduler",
                "expected host:port",
            )
        })?;
    let work_dir = match o.work_dir {
        Some(d) => d,
        None => {
            let d = std::env::temp_dir().join(format!("trialflow-executor-{}", std::process::id()));
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::infra(d.display().to_string(), format!("work dir: {e}")))?;
            d.display().to_string()
        }
    };
    let stores = Arc::new(LakeStores::new(o.client.clone()));
    let spill = work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: o.bind_host.clone(),
        external_host: Some(o.bind_host.clone()),
        port: o.flight_port,
        grpc_port: o.grpc_port,
        scheduler_host,
        scheduler_port,
        work_dir: Some(work_dir),
        override_runtime_producer: Some(Arc::new(move |_: &SessionConfig| {
            lake_runtime(stores.clone(), Some(&spill))
        })),
        vcores: o.concurrent_tasks.unwrap_or(defaults.vcores),
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        ..defaults
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ballista_err("ballista executor", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_functions_travel_with_their_parameters() {
        let mut buf = Vec::new();
        encode_udf(&udf::pseudonymize_udf(b"k1".to_vec()), &mut buf);
        let back = decode_udf(&buf).unwrap().unwrap();
        let inner: &dyn Any = back.inner().as_ref();
        assert_eq!(
            inner.downcast_ref::<udf::Pseudonymize>().unwrap().key(),
            b"k1"
        );

        buf.clear();
        encode_udf(&udf::split_unit_udf("salt".into()), &mut buf);
        let back = decode_udf(&buf).unwrap().unwrap();
        let inner: &dyn Any = back.inner().as_ref();
        assert_eq!(
            inner.downcast_ref::<udf::SplitUnit>().unwrap().salt(),
            "salt"
        );

        // any other function is left to the registry (by name)
        buf.clear();
        encode_udf(
            &datafusion::functions::string::lower().as_ref().clone(),
            &mut buf,
        );
        assert!(buf.is_empty());
        assert!(decode_udf(&buf).is_none());
    }
}
