//! Values known at import time: initializers, `Constant` nodes and the
//! results of folding shape subgraphs.
//!
//! Integer tensors stay `i64` while folding (shape arithmetic must be exact);
//! they become float32 only when a runtime op reads them.

use crate::error::{Error, Result};
use crate::onnx::proto::TensorProto;
use crate::onnx::proto::tensor_proto::{DataLocation, DataType};
use crate::tensor::Tensor;

/// Highest tensor rank accepted anywhere in a model.
pub(crate) const MAX_RANK: usize = 8;

/// Element storage of a constant.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    /// Floating point (float, double and float16 all land here).
    F32(Vec<f32>),
    /// Integers and booleans.
    I64(Vec<i64>),
}

/// A constant tensor with its shape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConstValue {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl ConstValue {
    /// An int64 constant; the caller guarantees `shape` multiplies out to `v.len()`.
    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Self {
        Self {
            shape,
            data: Data::I64(v),
        }
    }

    /// A float constant; the caller guarantees `shape` multiplies out to `v.len()`.
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Self {
        Self {
            shape,
            data: Data::F32(v),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    /// True for integer (or boolean) constants.
    pub fn is_int(&self) -> bool {
        matches!(self.data, Data::I64(_))
    }

    /// The values as integers (floats truncated toward zero, as ONNX Cast does).
    pub fn to_i64(&self) -> Vec<i64> {
        match &self.data {
            Data::I64(v) => v.clone(),
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }

    /// The values as floats.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// A float32 IR tensor with the same shape and values.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Tensor::new(self.shape.clone(), self.to_f32())
    }

    /// The single value of a scalar (or one-element) constant.
    pub fn scalar_f32(&self) -> Option<f32> {
        match &self.data {
            Data::F32(v) if v.len() == 1 => Some(v[0]),
            Data::I64(v) if v.len() == 1 => Some(v[0] as f32),
            _ => None,
        }
    }

    /// Same values under a new shape; the caller checks the element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Self {
        Self {
            shape,
            data: self.data.clone(),
        }
    }
}

/// Converts ONNX dims (i64, untrusted) to a shape, checking rank, sign and overflow.
pub(crate) fn dims_to_shape(dims: &[i64], what: &str) -> Result<Vec<usize>> {
    if dims.len() > MAX_RANK {
        return Err(Error::Limit(format!(
            "{what}: rank {} exceeds {MAX_RANK}",
            dims.len()
        )));
    }
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| Error::Malformed(format!("{what}: negative dimension in {dims:?}")))?;
    crate::tensor::checked_numel(&shape)?;
    // An empty tensor may declare any dimension: cap them so shape
    // arithmetic downstream cannot overflow.
    if shape
        .iter()
        .any(|&d| d > crate::onnx::importer::MAX_VALUE_ELEMS)
    {
        return Err(Error::Limit(format!(
            "{what}: dimension in {dims:?} too large"
        )));
    }
    Ok(shape)
}

fn wrong_len(what: &str, have: usize, need: usize) -> Error {
    Error::Malformed(format!(
        "tensor '{what}' declares {need} elements but holds {have}"
    ))
}

/// Converts IEEE half-precision bits to f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) & 1) as u32;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign << 31,
        (0, _) => {
            // Subnormal: normalise the fraction.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            (sign << 31) | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, _) => (sign << 31) | (0xff << 23) | (frac << 13),
        _ => (sign << 31) | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Decodes an initializer or attribute tensor. Every size is checked against
/// the bytes actually present before anything is allocated.
pub(crate) fn decode_tensor(t: &TensorProto) -> Result<ConstValue> {
    let name = t.name.as_deref().unwrap_or("<unnamed>");
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(Error::Unsupported(format!(
            "tensor '{name}' keeps its data in an external file; re-export the model with the weights embedded"
        )));
    }
    if t.segment.is_some() {
        return Err(Error::Unsupported(format!("tensor '{name}' is segmented")));
    }
    let shape = dims_to_shape(&t.dims, name)?;
    let n = crate::tensor::checked_numel(&shape)?;
    let dt = t.data_type.unwrap_or(0);
    let dtype = DataType::try_from(dt)
        .map_err(|_| Error::Malformed(format!("tensor '{name}': unknown data type {dt}")))?;
    let raw = t.raw_data.as_deref();
    let elem_size = match dtype {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
        DataType::Float16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        other => {
            return Err(Error::Unsupported(format!(
                "tensor '{name}' has data type {}",
                other.as_str_name()
            )));
        }
    };
    if let Some(raw) = raw {
        let need = n
            .checked_mul(elem_size)
            .ok_or_else(|| Error::Limit(format!("tensor '{name}' is too large")))?;
        if raw.len() != need {
            return Err(Error::Malformed(format!(
                "tensor '{name}' declares {need} bytes of data but holds {}",
                raw.len()
            )));
        }
        let data = match dtype {
            DataType::Float => Data::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DataType::Double => Data::F32(
                raw.chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        f64::from_le_bytes(b) as f32
                    })
                    .collect(),
            ),
            DataType::Float16 => Data::F32(
                raw.chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            DataType::Int64 | DataType::Uint64 => Data::I64(
                raw.chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        i64::from_le_bytes(b)
                    })
                    .collect(),
            ),
            DataType::Int32 => Data::I64(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect(),
            ),
            DataType::Uint32 => Data::I64(
                raw.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect(),
            ),
            DataType::Int16 => Data::I64(
                raw.chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                    .collect(),
            ),
            DataType::Uint16 => Data::I64(
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                    .collect(),
            ),
            DataType::Int8 => Data::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
            _ => Data::I64(raw.iter().map(|&b| b as i64).collect()),
        };
        return Ok(ConstValue { shape, data });
    }
    // Typed fields: the element count must match exactly.
    let data = match dtype {
        DataType::Float => {
            if t.float_data.len() != n {
                return Err(wrong_len(name, t.float_data.len(), n));
            }
            Data::F32(t.float_data.clone())
        }
        DataType::Double => {
            if t.double_data.len() != n {
                return Err(wrong_len(name, t.double_data.len(), n));
            }
            Data::F32(t.double_data.iter().map(|&x| x as f32).collect())
        }
        DataType::Int64 => {
            if t.int64_data.len() != n {
                return Err(wrong_len(name, t.int64_data.len(), n));
            }
            Data::I64(t.int64_data.clone())
        }
        DataType::Uint64 | DataType::Uint32 => {
            if t.uint64_data.len() != n {
                return Err(wrong_len(name, t.uint64_data.len(), n));
            }
            Data::I64(t.uint64_data.iter().map(|&x| x as i64).collect())
        }
        DataType::Float16 => {
            if t.int32_data.len() != n {
                return Err(wrong_len(name, t.int32_data.len(), n));
            }
            Data::F32(t.int32_data.iter().map(|&x| f16_to_f32(x as u16)).collect())
        }
        _ => {
            if t.int32_data.len() != n {
                return Err(wrong_len(name, t.int32_data.len(), n));
            }
            Data::I64(t.int32_data.iter().map(|&x| x as i64).collect())
        }
    };
    Ok(ConstValue { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn raw_data_length_must_match_dims() {
        let t = TensorProto {
            dims: vec![1_000_000],
            data_type: Some(DataType::Float as i32),
            raw_data: Some(vec![0; 8]),
            ..Default::default()
        };
        assert!(matches!(decode_tensor(&t), Err(Error::Malformed(_))));
        let t = TensorProto {
            dims: vec![2],
            data_type: Some(DataType::Float as i32),
            raw_data: Some([1.5f32.to_le_bytes(), (-2f32).to_le_bytes()].concat()),
            ..Default::default()
        };
        assert_eq!(
            decode_tensor(&t).ok(),
            Some(ConstValue::f32(vec![2], vec![1.5, -2.0]))
        );
    }

    #[test]
    fn external_data_is_refused() {
        let t = TensorProto {
            name: Some("w".into()),
            dims: vec![2],
            data_type: Some(DataType::Float as i32),
            data_location: Some(DataLocation::External as i32),
            ..Default::default()
        };
        let e = decode_tensor(&t)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("external"), "{e}");
    }
}
