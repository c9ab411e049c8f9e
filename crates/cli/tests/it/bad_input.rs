//! Bad source files, each a clear whole-file error or a row-level quarantine (never a panic, never damage to
//! the lake): empty file, header only, ragged rows, an unterminated quote, non-UTF-8 bytes, a 10 MB field, a
//! BOM with CRLF line ends, CR-only line ends, lines of spaces, a record beyond the record bound, a column
//! twice in the header, look-alike ids, one file reached twice. The sample's second file stays as it is, so
//! the pipeline has data to go on.

#![allow(clippy::unwrap_used)]

use crate::util;

use crate::util::{Project, text};
use arrow::array::{Array, AsArray};

/// The sample's first file with its data replaced by `body` (raw bytes after the header line).
fn with_first_file(header_prefix: &[u8], body: &[u8], line_end: &[u8]) -> Project {
    let p = Project::sample();
    let path = p.path("data/raw/clinical_trial_data_1.csv");
    let sample = std::fs::read_to_string(&path).unwrap();
    let header = sample.lines().next().unwrap();
    let mut out = header_prefix.to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(line_end);
    out.extend_from_slice(body);
    std::fs::write(&path, out).unwrap();
    p
}

fn sample_rows(n: usize) -> Vec<String> {
    let sample =
        std::fs::read_to_string(util::repo_root().join("data/raw/clinical_trial_data_1.csv"))
            .unwrap();
    sample.lines().skip(1).take(n).map(String::from).collect()
}

/// (line, rule, reason) of the quarantined rows from the first file.
fn quarantined(p: &Project) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    for b in util::parquet_batches(&p.path("data/lake/processed/quarantine/part-0.parquet")) {
        let src = b
            .column_by_name("source")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let line = b
            .column_by_name("line")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        let rule = b.column_by_name("rule").unwrap().as_string::<i32>().clone();
        let reason = b
            .column_by_name("reason")
            .unwrap()
            .as_string::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            if src.value(i).ends_with("clinical_trial_data_1.csv") && !rule.is_null(i) {
                out.push((line.value(i), rule.value(i).into(), reason.value(i).into()));
            }
        }
    }
    out.sort();
    out
}

fn run_data(p: &Project) -> (Option<i32>, String) {
    let o = p.run(&["pipeline", "data"]);
    (o.status.code(), text(&o))
}

fn reconciles(p: &Project) {
    let c = p.read_json("data/lake/processed/clean_report.json");
    for s in c["per_source"].as_array().unwrap() {
        assert_eq!(
            s["rows_in"].as_u64(),
            Some(s["accepted"].as_u64().unwrap() + s["quarantined"].as_u64().unwrap()),
            "{s}"
        );
    }
}

#[test]
fn whole_file_problems_are_clear_errors() {
    let p = with_first_file(b"", b"", b"");
    std::fs::write(p.path("data/raw/clinical_trial_data_1.csv"), b"").unwrap();
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("clinical_trial_data_1.csv: the file is empty"),
        "{out}"
    );
    assert!(!p.path("data/lake/raw/_manifest.jsonl").exists());

    // a header alone is a file without data: the other file carries the run
    let p = with_first_file(b"", b"", b"\n");
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(0), "{out}");
    let current = p.read_json("data/lake/raw/_current.json");
    assert_eq!(current["objects"][0]["rows"], 0, "{current}");
}

#[test]
fn malformed_records_are_quarantined_with_the_reason_and_never_the_value() {
    let rows = sample_rows(6);
    let mut body = Vec::new();
    body.extend(format!("{}\n", rows[0]).bytes()); // line 2: fine
    body.extend(format!("{},extra,fields\n", rows[1]).bytes()); // line 3: too long
    let short = rows[2].rsplit_once(',').unwrap().0;
    body.extend(format!("{short}\n").bytes()); // line 4: too short
    let bad_utf8 = rows[3]
        .replacen(",SITE", ",SIT\u{1}", 1)
        .replace('\u{1}', "");
    let mut l5 = bad_utf8.into_bytes();
    let at = l5.iter().position(|b| *b == b',').unwrap() + 1;
    l5.splice(at..at, [0xff, 0xfe]); // line 5: site field is not UTF-8
    body.extend(l5);
    body.push(b'\n');
    let huge = "y".repeat(10 << 20);
    body.extend(rows[4].replacen(",No,", &format!(",{huge},"), 1).bytes()); // line 6: 10 MB field
    body.push(b'\n');
    body.extend(format!("{}\n", rows[5]).bytes()); // line 7: fine
    let p = with_first_file(b"", &body, b"\n");
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(0), "{out}");
    reconciles(&p);
    let q = quarantined(&p);
    let lines: Vec<i64> = q.iter().map(|(l, _, _)| *l).collect();
    for l in [3, 4, 5] {
        assert!(lines.contains(&l), "line {l} not quarantined: {q:?}");
    }
    assert!(!lines.contains(&2) && !lines.contains(&7), "{q:?}");
    let reason = |l: i64| q.iter().find(|(x, _, _)| *x == l).unwrap().2.clone();
    assert_eq!(reason(3), "the record has 21 fields; the header has 19");
    assert_eq!(reason(4), "the record has 18 fields; the header has 19");
    assert_eq!(reason(5), "field `site` is not UTF-8 text");
    // the 10 MB value breaks a categorical rule on its own line, and no reason carries it
    assert!(q.iter().all(|(_, _, r)| r.len() < 200), "{q:?}");
}

#[test]
fn an_unterminated_quote_swallows_the_rest_of_the_file_into_one_quarantined_record() {
    let rows = sample_rows(3);
    let body = format!("{}\n\"{}\n{}\n", rows[0], rows[1], rows[2]);
    let p = with_first_file(b"", body.as_bytes(), b"\n");
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(0), "{out}");
    reconciles(&p);
    let q = quarantined(&p);
    assert!(
        q.iter().any(|(l, rule, _)| *l == 3 && rule == "malformed"),
        "{q:?}"
    );
    let c = p.read_json("data/lake/processed/clean_report.json");
    assert_eq!(c["per_source"][0]["rows_in"], 2, "{c}");
}

#[test]
fn a_bom_and_crlf_line_ends_read_like_plain_csv() {
    let rows = sample_rows(40);
    let body = rows.join("\r\n") + "\r\n";
    let p = with_first_file("\u{feff}".as_bytes(), body.as_bytes(), b"\r\n");
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(0), "{out}");
    reconciles(&p);
    let c = p.read_json("data/lake/processed/clean_report.json");
    assert_eq!(c["per_source"][0]["rows_in"], 40, "{c}");
    assert!(
        quarantined(&p)
            .iter()
            .all(|(_, rule, _)| rule != "malformed")
    );
}

#[test]
fn a_record_beyond_the_record_bound_is_an_error_naming_file_and_line() {
    let rows = sample_rows(3);
    // an unterminated quote reads the rest of the file as one record: 20 MB of it
    let mut body = format!("{}\n{}\n", rows[0], rows[1]).into_bytes();
    body.extend(rows[2].replacen(",No,", ",\"", 1).bytes());
    body.extend(std::iter::repeat_n(b'y', 20 << 20));
    let p = with_first_file(b"", &body, b"\n");
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("clinical_trial_data_1.csv:4")
            && out.contains("preprocessing.max_record_bytes"),
        "{out}"
    );
    assert!(!p.path("data/lake/processed/clean_report.json").exists());
}

#[test]
fn cr_only_line_ends_keep_every_record_on_its_own_line() {
    let rows = sample_rows(6);
    let mut body: Vec<String> = rows.clone();
    body[3] = format!("{},extra", rows[3]); // line 5: ragged
    let p = with_first_file(b"", (body.join("\r") + "\r").as_bytes(), b"\r");
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(0), "{out}");
    reconciles(&p);
    let q = quarantined(&p);
    assert!(
        q.iter().any(|(l, rule, _)| *l == 5 && rule == "malformed"),
        "{q:?}"
    );
    assert!(q.iter().all(|(l, _, _)| *l != 1), "{q:?}");
}

#[test]
fn lines_of_spaces_are_not_records() {
    let rows = sample_rows(4);
    let body = format!(
        "{}\n   \n{}\n\t\n{}\n \n{}\n",
        rows[0], rows[1], rows[2], rows[3]
    );
    let p = with_first_file(b"", body.as_bytes(), b"\n");
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(0), "{out}");
    reconciles(&p);
    let c = p.read_json("data/lake/processed/clean_report.json");
    assert_eq!(c["per_source"][0]["rows_in"], 4, "{c}");
    let current = p.read_json("data/lake/raw/_current.json");
    assert_eq!(
        current["objects"][0]["rows"], 4,
        "ingestion counts the same: {current}"
    );
    assert!(
        quarantined(&p)
            .iter()
            .all(|(_, rule, _)| rule != "malformed")
    );
}

#[test]
fn a_contract_column_twice_in_the_header_is_an_error() {
    let p = Project::sample();
    let path = p.path("data/raw/clinical_trial_data_1.csv");
    let sample = std::fs::read_to_string(&path).unwrap();
    let doubled: String = sample
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l},age\n")
            } else {
                format!("{l},99\n")
            }
        })
        .collect();
    std::fs::write(&path, doubled).unwrap();
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("clinical_trial_data_1.csv")
            && out.contains("column `age` is in the header twice"),
        "{out}"
    );
}

#[test]
fn look_alike_ids_are_one_subject_and_the_report_counts_them() {
    let rows = sample_rows(3);
    let (id, rest) = rows[0].split_once(',').unwrap();
    // the first subject again, its id behind a byte-order mark and with a zero-width space inside
    let (a, b) = id.split_at(3);
    let twin = format!("\u{feff}{a}\u{200b}{b},{rest}");
    let body = format!("{}\n{}\n{twin}\n", rows[0], rows[1]);
    let p = with_first_file(b"", body.as_bytes(), b"\n");
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(0), "{out}");
    let c = p.read_json("data/lake/processed/clean_report.json");
    assert_eq!(c["normalized_values"], 1, "{c}");
    // the twin is the first subject's record again: quarantined as its duplicate
    let first = &c["per_source"][0];
    assert_eq!(
        (
            first["rows_in"].as_u64(),
            first["accepted"].as_u64(),
            first["quarantined"].as_u64()
        ),
        (Some(3), Some(2), Some(1)),
        "{c}"
    );
}

#[test]
fn one_file_reached_twice_is_refused_rather_than_counted_twice() {
    // by a second source naming it
    let p = Project::sample();
    let cfg = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    let twice = cfg.replacen(
        "  id: subject_id\n",
        "    - name: again\n      url: file://data/raw/clinical_trial_data_1.csv\n  id: subject_id\n",
        1,
    );
    assert_ne!(cfg, twice);
    p.write("config/config.yaml", &twice);
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("also matched by source `trial`"), "{out}");
    // by a copy of its bytes under another name
    let p = Project::sample();
    std::fs::copy(
        p.path("data/raw/clinical_trial_data_1.csv"),
        p.path("data/raw/clinical_trial_data_3.csv"),
    )
    .unwrap();
    let (code, out) = run_data(&p);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("the same bytes as"), "{out}");
    assert!(!p.path("data/lake/processed/clean_report.json").exists());
}
