//! Open Inference Protocol v2 `/infer` bodies, JSON or with Triton's binary tensors: the first byte chooses;
//! in a binary body the JSON header ends at the first NUL (which is not sent) and
//! `Inference-Header-Content-Length` says so (`Harness::infer`). Never a 5xx, never a crash.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use trialflow_serve::fuzzing::Harness;

static SERVER: LazyLock<Harness> =
    LazyLock::new(|| Harness::new().unwrap_or_else(|e| panic!("fixture: {e}")));

fuzz_target!(|data: &[u8]| {
    if let Some(status) = SERVER.infer(data) {
        assert!(status < 500, "an /infer body answered {status}");
    }
});
