//! Scalar functions the generated SQL calls: `pseudonymize(id)` (keyed HMAC-SHA256) and `split_unit(id)`
//! (a salted hash mapped to [0, 1), so a subject's split depends on nothing but its id and the salt).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Builder, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Keyed pseudonym of a subject id: the first 16 bytes of HMAC-SHA256, hex. Stable for a key; without the
/// key it cannot be reversed or recomputed.
pub fn pseudonym(key: &[u8], id: &str) -> String {
    let mut out = [0u8; 32];
    Pseudonymizer::new(key).write_hex(id, &mut out).to_string()
}

/// The keyed HMAC with its key already absorbed: each id then costs two SHA-256 blocks, not four.
#[derive(Clone)]
pub struct Pseudonymizer {
    keyed: Hmac<Sha256>,
}

impl Pseudonymizer {
    pub fn new(key: &[u8]) -> Self {
        match Hmac::<Sha256>::new_from_slice(key) {
            Ok(keyed) => Self { keyed },
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    /// The pseudonym of `id` as 32 lower-case hex digits, written into `out`.
    pub fn write_hex<'a>(&self, id: &str, out: &'a mut [u8; 32]) -> &'a str {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        let digest = mac.finalize().into_bytes();
        for (i, b) in digest[..16].iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 15) as usize];
        }
        match std::str::from_utf8(out) {
            Ok(s) => s,
            Err(_) => unreachable!("hex digits are ASCII"),
        }
    }
}

/// Uniform in [0, 1) from the salted hash of `id`.
pub fn split_unit(salt: &str, id: &str) -> f64 {
    let h = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update([0u8])
        .chain_update(id.as_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn string_arg(args: &[ColumnarValue]) -> Result<ArrayRef, DataFusionError> {
    let arr = match args.first() {
        Some(ColumnarValue::Array(a)) => a.clone(),
        Some(ColumnarValue::Scalar(s)) => s.to_array()?,
        None => return Err(DataFusionError::Plan("expected one argument".into())),
    };
    Ok(arrow::compute::cast(&arr, &DataType::Utf8)?)
}

/// `pseudonymize(id)`. A type of its own (not a closure) so that a Ballista codec can ship the key with
/// the plan: executors then need no key of their own.
#[derive(PartialEq, Eq, Hash)]
pub struct Pseudonymize {
    key: Vec<u8>,
    signature: Signature,
}

impl std::fmt::Debug for Pseudonymize {
    // Plans are printed in logs and errors: never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymize { key: <redacted> }")
    }
}

impl Pseudonymize {
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl ScalarUDFImpl for Pseudonymize {
    fn name(&self) -> &str {
        "pseudonymize"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType, DataFusionError> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue, DataFusionError> {
        let p = Pseudonymizer::new(&self.key);
        let arr = string_arg(&args.args)?;
        let s = arr.as_string::<i32>();
        let mut b = StringBuilder::with_capacity(s.len(), s.len() * 32);
        let mut hex = [0u8; 32];
        for i in 0..s.len() {
            if s.is_null(i) {
                b.append_null()
            } else {
                b.append_value(p.write_hex(s.value(i), &mut hex))
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

pub fn pseudonymize_udf(key: Vec<u8>) -> ScalarUDF {
    ScalarUDF::new_from_impl(Pseudonymize {
        key,
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    })
}

/// `split_unit(id)`, carrying its salt (see [`Pseudonymize`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SplitUnit {
    salt: String,
    signature: Signature,
}

impl SplitUnit {
    pub fn salt(&self) -> &str {
        &self.salt
    }
}

impl ScalarUDFImpl for SplitUnit {
    fn name(&self) -> &str {
        "split_unit"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType, DataFusionError> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue, DataFusionError> {
        let arr = string_arg(&args.args)?;
        let s = arr.as_string::<i32>();
        let mut b = Float64Builder::with_capacity(s.len());
        for i in 0..s.len() {
            if s.is_null(i) {
                b.append_null()
            } else {
                b.append_value(split_unit(&self.salt, s.value(i)))
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

pub fn split_unit_udf(salt: String) -> ScalarUDF {
    ScalarUDF::new_from_impl(SplitUnit {
        salt,
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_is_keyed_and_stable() {
        // RFC 4231 test case 2 (key "Jefe"), truncated to 16 bytes.
        assert_eq!(
            pseudonym(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c7"
        );
        assert_ne!(pseudonym(b"k1", "S-1"), pseudonym(b"k2", "S-1"));
    }

    #[test]
    fn split_unit_is_uniformish_and_salted() {
        let xs: Vec<f64> = (0..10_000)
            .map(|i| split_unit("s", &i.to_string()))
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert_ne!(split_unit("a", "1"), split_unit("b", "1"));
    }
}
