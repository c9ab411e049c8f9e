//! TF Serving `:predict` bodies, through the whole router: any bytes are answered, never with a 5xx.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use trialflow_serve::fuzzing::Harness;

static SERVER: LazyLock<Harness> =
    LazyLock::new(|| Harness::new().unwrap_or_else(|e| panic!("fixture: {e}")));

fuzz_target!(|body: &[u8]| {
    let status = SERVER.predict(body);
    assert!(status < 500, "a :predict body answered {status}");
});
