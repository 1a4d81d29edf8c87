//! Index arithmetic for folding constants: broadcasting, strided views,
//! and picking elements. Callers charge the folding budget with the output
//! size before calling anything here that allocates.

use super::value::{ConstValue, Data};
use crate::ir::BinaryKind;

/// Row-major strides of a shape.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy broadcast of two shapes, or None when they do not fit.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// For each element of `out` (row-major), the flat index of the element of
/// an input of shape `input` that broadcasts onto it.
pub(crate) fn broadcast_indices(out: &[usize], input: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let in_strides = strides(input);
    // Stride per output axis: 0 where the input is broadcast (size 1 or absent).
    let eff: Vec<usize> = (0..rank)
        .map(|i| {
            if i + input.len() < rank {
                0
            } else {
                let j = i + input.len() - rank;
                if input[j] == 1 { 0 } else { in_strides[j] }
            }
        })
        .collect();
    strided(out, 0, &eff.iter().map(|&s| s as i64).collect::<Vec<_>>())
}

/// Flat input indices of a strided view: element `idx` of `out` reads
/// `offset + Σ idx[a] * step[a]`. The caller guarantees every index is in range.
pub(crate) fn strided(out: &[usize], offset: i64, step: &[i64]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let mut res = Vec::with_capacity(n);
    if n == 0 {
        return res;
    }
    let mut idx = vec![0usize; out.len()];
    let mut flat = offset;
    for _ in 0..n {
        res.push(flat as usize);
        // Odometer increment, updating the flat index incrementally.
        for a in (0..out.len()).rev() {
            idx[a] += 1;
            flat += step[a];
            if idx[a] < out[a] {
                break;
            }
            flat -= step[a] * out[a] as i64;
            idx[a] = 0;
        }
    }
    res
}

/// The elements of `data` at `indices`.
pub(crate) fn pick(data: &Data, indices: &[usize]) -> Data {
    match data {
        Data::F32(v) => Data::F32(indices.iter().map(|&i| v[i]).collect()),
        Data::I64(v) => Data::I64(indices.iter().map(|&i| v[i]).collect()),
    }
}

/// Elementwise binary op on two constants with broadcasting. Integer
/// arithmetic is exact (None on overflow or division by zero); mixing an
/// integer and a float constant computes in float.
pub(crate) fn binary(kind: BinaryKind, a: &ConstValue, b: &ConstValue) -> Option<ConstValue> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let ia = broadcast_indices(&shape, &a.shape);
    let ib = broadcast_indices(&shape, &b.shape);
    match (&a.data, &b.data) {
        (Data::I64(x), Data::I64(y)) => {
            let f = |p: i64, q: i64| -> Option<i64> {
                match kind {
                    BinaryKind::Add => p.checked_add(q),
                    BinaryKind::Sub => p.checked_sub(q),
                    BinaryKind::Mul => p.checked_mul(q),
                    BinaryKind::Div => p.checked_div(q),
                    BinaryKind::Max => Some(p.max(q)),
                    BinaryKind::Min => Some(p.min(q)),
                }
            };
            let v = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| f(x[i], y[j]))
                .collect::<Option<Vec<i64>>>()?;
            Some(ConstValue::i64(shape, v))
        }
        _ => {
            let (x, y) = (a.to_f32(), b.to_f32());
            let v = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| kind.apply(x[i], y[j]))
                .collect();
            Some(ConstValue::f32(shape, v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_and_strides() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shape(&[2, 3], &[4]), None);
        assert_eq!(broadcast_indices(&[2, 3], &[3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_indices(&[2, 3], &[2, 1]), vec![0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn strided_view_transposes() {
        // [2, 3] transposed to [3, 2]: steps are the input strides permuted.
        assert_eq!(strided(&[3, 2], 0, &[1, 3]), vec![0, 3, 1, 4, 2, 5]);
        // Reverse slice of 5 elements, last to first.
        assert_eq!(strided(&[5], 4, &[-1]), vec![4, 3, 2, 1, 0]);
    }

    #[test]
    fn integer_folding_is_exact() {
        let a = ConstValue::i64(vec![2], vec![7, -7]);
        let b = ConstValue::i64(vec![], vec![2]);
        let r = binary(BinaryKind::Div, &a, &b);
        assert_eq!(r, Some(ConstValue::i64(vec![2], vec![3, -3])));
        let z = ConstValue::i64(vec![], vec![0]);
        assert_eq!(binary(BinaryKind::Div, &a, &z), None);
        let big = ConstValue::i64(vec![], vec![i64::MAX]);
        assert_eq!(binary(BinaryKind::Add, &big, &big), None);
    }
}
