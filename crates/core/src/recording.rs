//! A storage root that records every object access: what a task really reads and writes, to hold it to what
//! it declares (the cli's task-contract test).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// What an access did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    List,
    Write,
    Delete,
}

/// One access: the operation and the object path (a prefix for listings), relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub op: Op,
    pub path: String,
}

/// The accesses made through a recording root, in order.
#[derive(Debug, Default)]
pub struct Recorder {
    accesses: Mutex<Vec<Access>>,
}

impl Recorder {
    fn push(&self, op: Op, path: &Path) {
        if let Ok(mut a) = self.accesses.lock() {
            a.push(Access {
                op,
                path: path.to_string(),
            });
        }
    }

    /// The accesses so far, leaving the record empty.
    pub fn take(&self) -> Vec<Access> {
        self.accesses
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub(crate) struct RecordingStore {
    pub(crate) inner: Arc<dyn ObjectStore>,
    pub(crate) recorder: Arc<Recorder>,
}

impl std::fmt::Display for RecordingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for RecordingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.recorder.push(Op::Write, location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.recorder.push(Op::Write, location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.recorder.push(Op::Read, location);
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.recorder.push(Op::Read, location);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let recorder = self.recorder.clone();
        let recorded = locations
            .inspect(move |p| {
                if let Ok(p) = p {
                    recorder.push(Op::Delete, p);
                }
            })
            .boxed();
        self.inner.delete_stream(recorded)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.recorder
            .push(Op::List, &prefix.cloned().unwrap_or_default());
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.recorder
            .push(Op::List, &prefix.cloned().unwrap_or_default());
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.recorder
            .push(Op::List, &prefix.cloned().unwrap_or_default());
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.recorder.push(Op::Read, from);
        self.recorder.push(Op::Write, to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.recorder.push(Op::Read, from);
        self.recorder.push(Op::Delete, from);
        self.recorder.push(Op::Write, to);
        self.inner.rename_opts(from, to, options).await
    }
}
