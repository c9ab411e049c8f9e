//! Source formats: the sample trial's second file as gzip- and zstd-compressed CSV, Parquet, NDJSON and a
//! tab-separated file with another quote character gives exactly the clean-stage counts of the plain CSV;
//! a truncated gzip file is refused at ingest, naming the file, and leaves the lake untouched.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::Arc;

use crate::util::{Project, text};

fn records(p: &Project) -> (Vec<String>, Vec<Vec<String>>) {
    let mut rdr = csv::Reader::from_path(p.path("data/raw/clinical_trial_data_2.csv")).unwrap();
    let headers = rdr.headers().unwrap().iter().map(String::from).collect();
    let rows = rdr
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (headers, rows)
}

/// Rewrites the sample's second file as `ext`, with the source block `source` in the config.
fn project_with(ext: &str, bytes: impl FnOnce(&Project) -> Vec<u8>, source: &str) -> Project {
    let p = Project::sample();
    let data = bytes(&p);
    std::fs::remove_file(p.path("data/raw/clinical_trial_data_2.csv")).unwrap();
    std::fs::write(
        p.path(&format!("data/raw/clinical_trial_data_2.{ext}")),
        data,
    )
    .unwrap();
    let cfg_path = p.path("config/config.yaml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let old = "      url: file://data/raw/clinical_trial_data_*.csv\n";
    assert!(cfg.contains(old));
    let new = format!("      url: file://data/raw/clinical_trial_data_1.csv\n{source}");
    std::fs::write(&cfg_path, cfg.replace(old, &new)).unwrap();
    p
}

fn counts(p: &Project) -> (u64, u64, u64, u64) {
    let o = p.run(&["pipeline", "data"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let c = p.read_json("data/lake/processed/clean_report.json");
    let n = |k: &str| c[k].as_u64().unwrap();
    (
        n("rows_in"),
        n("accepted"),
        n("quarantined"),
        n("exact_duplicates"),
    )
}

fn csv_bytes(p: &Project) -> Vec<u8> {
    std::fs::read(p.path("data/raw/clinical_trial_data_2.csv")).unwrap()
}

#[test]
fn every_format_gives_the_csv_counts() {
    let baseline = counts(&Project::sample());
    let second = "    - name: second\n      url: file://data/raw/clinical_trial_data_2.";
    let gz = |p: &Project| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&csv_bytes(p)).unwrap();
        e.finish().unwrap()
    };
    let zst = |p: &Project| zstd::stream::encode_all(&csv_bytes(p)[..], 3).unwrap();
    let parquet = |p: &Project| {
        use arrow::array::{ArrayRef, RecordBatch, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let (headers, rows) = records(p);
        let schema = Arc::new(Schema::new(
            headers
                .iter()
                .map(|h| Field::new(h, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let cols: Vec<ArrayRef> = (0..headers.len())
            .map(|j| {
                Arc::new(StringArray::from(
                    rows.iter()
                        .map(|r| (!r[j].is_empty()).then(|| r[j].clone()))
                        .collect::<Vec<_>>(),
                )) as ArrayRef
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out
    };
    let ndjson = |p: &Project| {
        let (headers, rows) = records(p);
        let mut out = Vec::new();
        for r in rows {
            let obj: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .zip(r)
                .map(|(h, v)| {
                    let v = if v.is_empty() {
                        serde_json::Value::Null
                    } else {
                        serde_json::Value::String(v)
                    };
                    (h.clone(), v)
                })
                .collect();
            out.extend(serde_json::to_vec(&obj).unwrap());
            out.push(b'\n');
        }
        out
    };
    let tsv = |p: &Project| {
        let (headers, rows) = records(p);
        let mut w = csv::WriterBuilder::new()
            .delimiter(b'\t')
            .quote(b'\'')
            .from_writer(Vec::new());
        w.write_record(&headers).unwrap();
        for r in rows {
            w.write_record(&r).unwrap();
        }
        w.into_inner().unwrap()
    };
    type Make = Box<dyn Fn(&Project) -> Vec<u8>>;
    let cases: Vec<(&str, Make, String)> = vec![
        ("csv.gz", Box::new(gz), format!("{second}csv.gz\n")),
        ("csv.zst", Box::new(zst), format!("{second}csv.zst\n")),
        ("parquet", Box::new(parquet), format!("{second}parquet\n")),
        ("ndjson", Box::new(ndjson), format!("{second}ndjson\n")),
        (
            "tab",
            Box::new(tsv),
            format!(
                "{second}tab\n      format: csv\n      delimiter: \"\\t\"\n      quote: \"'\"\n"
            ),
        ),
    ];
    for (ext, make, source) in cases {
        let p = project_with(ext, make, &source);
        assert_eq!(counts(&p), baseline, "{ext}");
        let current = p.read_json("data/lake/raw/_current.json");
        let object = current["objects"][1]["object"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            object.ends_with(&format!(".{}", if ext == "tab" { "csv" } else { ext })),
            "{object}"
        );
    }
}

#[test]
fn a_truncated_gzip_source_is_refused_and_the_lake_is_untouched() {
    let p = project_with(
        "csv.gz",
        |p| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&csv_bytes(p)).unwrap();
            let full = e.finish().unwrap();
            full[..full.len() / 2].to_vec()
        },
        "    - name: second\n      url: file://data/raw/clinical_trial_data_2.csv.gz\n",
    );
    let o = p.run(&["ingest"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("clinical_trial_data_2.csv.gz") && out.contains("gzip"),
        "{out}"
    );
    assert!(!p.path("data/lake/raw/_manifest.jsonl").exists(), "{out}");
    let staged: Vec<_> = walk(&p.path("data/lake"))
        .into_iter()
        .filter(|f| f.contains("_staging") || f.contains('#'))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
