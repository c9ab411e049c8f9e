//! Ingestion's streaming scans (CSV, csv.gz, csv.zst, NDJSON, Parquet footer), fed in chunks of a fuzzed
//! size: the first byte chooses the format, the second the chunk size. Errors are fine; a panic is not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trialflow_ingest::{Scanner, SourceFormat};

fuzz_target!(|data: &[u8]| {
    let [format, chunk, bytes @ ..] = data else {
        return;
    };
    let format = SourceFormat::ALL[usize::from(*format) % SourceFormat::ALL.len()];
    let required = ["id".to_string(), "age".to_string()];
    let Ok(mut scan) = Scanner::new(format, "file:///fuzz", &required, b',', b'"') else {
        return;
    };
    for part in bytes.chunks(usize::from(*chunk).max(1)) {
        if scan.feed(part).is_err() {
            return;
        }
    }
    let _ = scan.finish();
});
