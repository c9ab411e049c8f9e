//! The cleaning path's stagers (CSV of every compression, NDJSON, Parquet) over fuzzed objects: the first
//! byte chooses the format. Errors are fine; a panic that escapes the stager is not, nor a row counted that
//! was not staged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trialflow_core::lake::{CurrentObject, SourceFormat};
use trialflow_core::stage::{RecordBatch, StageLimits, stage_object};

fuzz_target!(init: {
    // libfuzzer-sys aborts in its panic hook, before any unwinding: the stager's own catch of the parquet
    // crate's assertions (bad data, by design) would count as a crash. A panic that escapes the stager
    // still does: libfuzzer-sys catches it around this closure and aborts.
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
}, |data: &[u8]| {
    let Some((format, bytes)) = data.split_first() else {
        return;
    };
    let object = CurrentObject {
        source: "fuzz".into(),
        url: "file:///fuzz".into(),
        object: "raw/fuzz/x".into(),
        format: SourceFormat::ALL[usize::from(*format) % SourceFormat::ALL.len()],
        delimiter: ',',
        quote: '"',
        sha256: String::new(),
        rows: 0,
    };
    let columns = ["id".to_string(), "age".to_string()];
    let mut rows = 0usize;
    let mut emit = |b: RecordBatch| {
        rows += b.num_rows();
        Ok(())
    };
    let limits = StageLimits {
        max_record_bytes: 64 * 1024,
    };
    if let Ok(staged) = stage_object(&object, bytes, &columns, 0, limits, &[], &mut emit) {
        assert_eq!(staged.next_row as usize, rows, "rows numbered but not staged");
    }
});
