//! Content fingerprints: sha256 over canonical bytes, hex encoded.

use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Incremental fingerprint over named parts; the names keep `("ab","c")` and `("a","bc")` apart.
#[derive(Default)]
pub struct Fingerprinter(Sha256);

impl Fingerprinter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn part(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        for chunk in [name.as_bytes(), bytes] {
            self.0.update((chunk.len() as u64).to_le_bytes());
            self.0.update(chunk);
        }
        self
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_delimited() {
        let mut a = Fingerprinter::new();
        a.part("x", b"ab").part("y", b"c");
        let mut b = Fingerprinter::new();
        b.part("x", b"a").part("y", b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
