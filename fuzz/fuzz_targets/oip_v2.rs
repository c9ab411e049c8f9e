//! Open Inference Protocol v2 `/infer` bodies, JSON or with Triton's binary tensors: the first byte chooses;
//! in a binary body the JSON header ends at the first NUL (which is not sent) and
//! `Inference-Header-Content-Length` says so. Never a 5xx, never a crash.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use trialflow_serve::fuzzing::Harness;

static SERVER: LazyLock<Harness> =
    LazyLock::new(|| Harness::new().unwrap_or_else(|e| panic!("fixture: {e}")));

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let status = if mode & 1 == 0 {
        SERVER.status(
            "POST",
            "/v2/models/cv/infer",
            &[("content-type", "application/json")],
            rest.to_vec(),
        )
    } else {
        let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let mut body = rest[..split].to_vec();
        body.extend_from_slice(rest.get(split + 1..).unwrap_or_default());
        let len = split.to_string();
        SERVER.status(
            "POST",
            "/v2/models/cv/infer",
            &[
                ("content-type", "application/octet-stream"),
                ("inference-header-content-length", len.as_str()),
            ],
            body,
        )
    };
    assert!(status < 500, "an /infer body answered {status}");
});
