//! A bounds-checked safe face for the `gemm` crate (the matrix kernel candle's CPU backend uses, with runtime
//! AVX2/AVX-512 dispatch). This is the crate's only `unsafe`: `gemm::gemm` takes raw pointers and strides, so
//! every call first proves that the largest index of each operand lies inside its slice and that the output
//! does not overlap an input (it cannot: `&mut` and `&` slices never alias).
#![allow(unsafe_code)]

/// A row-major view: `rows × cols` with row stride `rs` and column stride `cs` (transposes are a swap of the
/// strides, never a copy).
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl View {
    /// A contiguous row-major matrix.
    pub fn dense(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The same memory read as its transpose.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn fits(&self, len: usize) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        (self.rows - 1)
            .checked_mul(self.rs)
            .and_then(|a| (self.cols - 1).checked_mul(self.cs).map(|b| (a, b)))
            .and_then(|(a, b)| a.checked_add(b))
            .is_some_and(|last| last < len)
            && isize::try_from(self.rs).is_ok()
            && isize::try_from(self.cs).is_ok()
    }
}

/// `dst = (accumulate ? dst : 0) + lhs · rhs`, single-threaded (callers parallelize over row chunks, which
/// keeps the summation order, and so the result, independent of the thread count).
///
/// Panics when the shapes disagree or a view does not fit its slice: a programming error, never data.
pub fn matmul(
    dst: &mut [f32],
    d: View,
    accumulate: bool,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
) {
    assert!(
        d.rows == l.rows && d.cols == r.cols && l.cols == r.rows,
        "matmul shapes: {d:?} = {l:?} · {r:?}"
    );
    assert!(
        d.fits(dst.len()) && l.fits(lhs.len()) && r.fits(rhs.len()),
        "matmul view outside its slice"
    );
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    if l.cols == 0 {
        if !accumulate {
            for i in 0..d.rows {
                for j in 0..d.cols {
                    dst[i * d.rs + j * d.cs] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: each view's largest offset is inside its slice (checked above, strides fit isize), `dst` is an
    // exclusive borrow so it aliases neither input, and the call is single-threaded.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr(),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            lhs.as_ptr(),
            l.cs as isize,
            l.rs as isize,
            rhs.as_ptr(),
            r.cs as isize,
            r.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], av: View, b: &[f32], bv: View) -> Vec<f32> {
        let mut out = vec![0.0; av.rows * bv.cols];
        for i in 0..av.rows {
            for j in 0..bv.cols {
                out[i * bv.cols + j] = (0..av.cols)
                    .map(|k| a[i * av.rs + k * av.cs] * b[k * bv.rs + j * bv.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_equal_the_naive_ones() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..35).map(|i| (i as f32 * 0.11).cos()).collect();
        // a is 5×7, b is 7×5 (and read transposed as 5×7)
        for (av, bv) in [
            (View::dense(5, 7), View::dense(7, 5)),
            (View::dense(7, 5).t(), View::dense(7, 5)),
            (View::dense(5, 7), View::dense(5, 7).t()),
        ] {
            let want = naive(&a, av, &b, bv);
            let mut got = vec![1.0; 25];
            matmul(&mut got, View::dense(5, 5), false, &a, av, &b, bv);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
            let mut acc = vec![1.0; 25];
            matmul(&mut acc, View::dense(5, 5), true, &a, av, &b, bv);
            for (g, w) in acc.iter().zip(&want) {
                assert!((g - (w + 1.0)).abs() < 1e-5);
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn a_view_past_the_slice_is_refused() {
        let a = vec![0.0; 10];
        let mut d = vec![0.0; 4];
        matmul(
            &mut d,
            View::dense(2, 2),
            false,
            &a,
            View::dense(2, 6),
            &a,
            View::dense(6, 2),
        );
    }
}
