//! Config files: parsed and validated from any text. Errors are fine (they name the file and key); a panic,
//! or a hang on a YAML bomb, is not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trialflow_core::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_yaml(text, "fuzz.yaml", &[]);
});
