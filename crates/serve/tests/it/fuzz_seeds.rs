//! The fuzz targets' seeds (fuzz/seeds/tf_serving, fuzz/seeds/oip_v2) replayed through the harness the
//! targets drive (`trialflow_serve::fuzzing`): every one is answered below 500, and the well-formed ones are
//! scored. What `cargo xtask fuzz` starts from stays a passing test, and the harness stays built.

#![cfg(feature = "fuzzing")]

use trialflow_serve::fuzzing::Harness;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = trialflow_testkit::repo_root()
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "{}: too few seeds", dir.display());
    out
}

#[test]
fn tf_serving_seeds_are_answered_and_the_well_formed_ones_scored() {
    let h = Harness::new().unwrap();
    for (name, body) in seeds("tf_serving") {
        let status = h.predict(&body);
        let want_ok = name != "wrong.json";
        assert!(status < 500, "{name}: {status}");
        assert_eq!(status == 200, want_ok, "{name}: {status}");
    }
}

#[test]
fn oip_v2_seeds_are_answered_and_scored() {
    let h = Harness::new().unwrap();
    for (name, data) in seeds("oip_v2") {
        assert_eq!(h.infer(&data), Some(200), "{name}");
    }
}
