//! Error kinds shared by every stage. The kind decides the exit code and whether a task is retried.

use std::fmt;

/// What went wrong, in the terms an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The configuration or the pipeline definition is wrong: fix the file.
    Config,
    /// The input data break the dataset contract: fix the data; retrying cannot help.
    BadData,
    /// Storage, network or another service failed: retrying may help.
    Infra,
    /// A bug in trialflow.
    Internal,
    /// The quality gate refused every candidate: the pipeline worked, the models are not good enough (the
    /// analysis and the report are written all the same). Not retried.
    GateRefused,
}

impl ErrorKind {
    /// Process exit code for this kind (documented in README.md; Kubernetes retries only `Infra`).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Internal => 1,
            ErrorKind::Config => 2,
            ErrorKind::BadData => 3,
            ErrorKind::Infra => 4,
            ErrorKind::GateRefused => 6,
        }
    }

    /// Only infrastructure failures are worth another attempt.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Infra)
    }

    /// When several tasks fail, the run reports the kind that most needs a person.
    pub fn severity(self) -> u8 {
        match self {
            ErrorKind::Config => 5,
            ErrorKind::BadData => 4,
            ErrorKind::Internal => 3,
            ErrorKind::GateRefused => 2,
            ErrorKind::Infra => 1,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Config => "config",
            ErrorKind::BadData => "bad data",
            ErrorKind::Infra => "infrastructure",
            ErrorKind::Internal => "internal",
            ErrorKind::GateRefused => "gate refused",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration problem, located by file and key path.
    #[error("{file}: {key}: {message}")]
    Config {
        file: String,
        key: String,
        message: String,
    },
    /// Input data that break the contract, located by source and (where known) line and column.
    #[error("{location}: {message}")]
    BadData { location: String, message: String },
    /// Storage or another external system failed.
    #[error("{location}: {source}")]
    Storage {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{location}: {message}")]
    Infra { location: String, message: String },
    /// The quality gate refused every candidate.
    #[error("{0}")]
    GateRefused(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A library trialflow uses failed where trialflow's own inputs should not make it fail (encoding a
    /// document, building an Arrow batch): a bug, reported with the library's error kept as the source.
    #[error("internal error: {0}")]
    Bug(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    pub fn config(
        file: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            file: file.into(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn bad_data(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadData {
            location: location.into(),
            message: message.into(),
        }
    }

    pub fn infra(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Infra {
            location: location.into(),
            message: message.into(),
        }
    }

    /// See [`Error::Bug`]: `.map_err(Error::bug)`.
    pub fn bug(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Error::Bug(source.into())
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } => ErrorKind::Config,
            Error::BadData { .. } => ErrorKind::BadData,
            Error::Storage { source, .. } => match source {
                // A missing object is a broken contract between stages, not a flaky network.
                object_store::Error::NotFound { .. } => ErrorKind::BadData,
                object_store::Error::InvalidPath { .. } => ErrorKind::Config,
                // Wrong or missing credentials: retrying cannot help; the configuration must change.
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => ErrorKind::Config,
                // Cloud clients report a refused signature as a generic error; its HTTP status is only
                // in the message (object_store's retry error type is private).
                e if is_auth_failure(&e.to_string()) => ErrorKind::Config,
                _ => ErrorKind::Infra,
            },
            Error::Infra { .. } => ErrorKind::Infra,
            Error::GateRefused(_) => ErrorKind::GateRefused,
            Error::Internal(_) | Error::Bug(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn is_auth_failure(message: &str) -> bool {
    ["status code: 401", "status code: 403"]
        .iter()
        .any(|s| message.contains(s))
}

/// An error and its causes for people, each cause once: storage errors already repeat their source in
/// their own message, so printing every level of the chain would repeat the same text several times.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Prints `e` on stderr for people and returns the documented exit code of the first trialflow error in
/// its chain (1 when there is none): what the binaries do with an error that ends them.
pub fn report(e: &(dyn std::error::Error + 'static)) -> i32 {
    let code = exit_code_of(e);
    report_with_code(&describe(e), code);
    code
}

/// The exit code of the first trialflow error in `e`'s chain (1 when there is none).
pub fn exit_code_of(e: &(dyn std::error::Error + 'static)) -> i32 {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<Error>() {
            return t.kind().exit_code();
        }
        cause = c.source();
    }
    1
}

/// Prints a binary's final error (`error: …`, or a JSON line with JSON logs) with the exit code it ends with.
pub fn report_with_code(description: &str, code: i32) {
    crate::binary::say(
        "ERROR",
        &format!("error: {description}"),
        description,
        &[("exit_code", code.into())],
    );
}
