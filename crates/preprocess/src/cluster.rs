//! Ballista (cargo feature `ballista`): the plan codecs that carry trialflow's SQL functions to the cluster,
//! the client session, and the scheduler and executor processes (`trialflow cluster …`).
//!
//! The stock Ballista binaries resolve functions by name from their own registry, which knows neither
//! `pseudonymize` nor `split_unit`. Our codecs ship each function with its parameter (the pseudonym key, the
//! split salt) inside the plan, so every process computes exactly what the client would, with no key
//! configured on the cluster. The key therefore travels in plans between client, scheduler and executors:
//! run the cluster on a private network (or with Ballista's TLS).

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

/// A session whose queries run on the Ballista scheduler at `addr` (`host:port`).
pub async fn remote_context(addr: &str, config: SessionConfig) -> DfResult<SessionContext> {
    let config = config.with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()));
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .build();
    SessionContext::remote_with_state(&format!("df://{addr}"), state).await
}

fn ballista_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::infra(what.to_string(), e.to_string())
}

/// A Ballista scheduler with trialflow's codecs, serving on `bind` (`host:port`) until the process ends.
pub async fn run_scheduler(bind: std::net::SocketAddr) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        external_host: bind.ip().to_string(),
        bind_port: bind.port(),
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
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
    let config = ExecutorProcessConfig {
        bind_host: o.bind_host.clone(),
        external_host: Some(o.bind_host.clone()),
        port: o.flight_port,
        grpc_port: o.grpc_port,
        scheduler_host,
        scheduler_port,
        work_dir: o.work_dir,
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
