//! Conformance: ONNX's own backend tests, and a framework-exported CNN
//! checked against ONNX Runtime.
//!
//! Each case under `tests/data/onnx/<source>/<case>/` holds `model.onnx`,
//! `input_<i>.npy` and `output_<i>.npy` (float32), written by
//! `scripts/gen_onnx_node_tests.py` from the `onnx` 1.16.2 package: the node
//! tests of every op in the importer's list (expected outputs from ONNX's
//! reference implementation) and the ready-made `pytorch-converted` /
//! `pytorch-operator` cases that use only those ops. The script lists every
//! excluded case with its reason (1-D/3-D spatial, non-float types, training
//! mode, wrap Pad, antialiased Resize, tensors of rank > 5).
//! Graph inputs that feed weight or shape slots (Conv's W, Reshape's shape,
//! ...) are frozen into initializers by the script, as exporters emit them.
//! The data are ONNX's, Apache-2.0: see `tests/data/LICENSE-onnx`.
//!
//! Every case is run twice, as imported and after `passes::optimize`, and
//! compared element by element (`|got - want| <= 1e-5 + 1e-4 * |want|`).
//! [`run_suite`] takes any [`Executor`]: the suite runs on the CPU reference
//! executor and on the GPU executor. The vendored cases are exactly those in
//! [`CASES`] (a test keeps the list equal to the folders on disk).
//!
//! The reference model `tests/data/models/resnet_tiny.onnx` (conv-bn-relu, a
//! residual block, max pool, global average pool, flatten, linear) was
//! exported from PyTorch by `scripts/make_reference_model.py`, which also
//! stored an input and ONNX Runtime's output for it.

use std::path::{Path, PathBuf};

use tile_engine::{Executor, Graph, Tensor};

/// Relative tolerance of the comparison (ONNX's backend-test default).
const RTOL: f32 = 1e-4;
/// Absolute tolerance of the comparison.
const ATOL: f32 = 1e-5;

/// Every vendored case, `<source>/<case>` under `tests/data/onnx/`.
const CASES: &[&str] = &[
    "node/test_abs",
    "node/test_add",
    "node/test_add_bcast",
    "node/test_averagepool_2d_precomputed_pads",
    "node/test_averagepool_2d_precomputed_pads_count_include_pad",
    "node/test_averagepool_2d_precomputed_strides",
    "node/test_averagepool_2d_precomputed_same_upper",
    "node/test_averagepool_2d_default",
    "node/test_averagepool_2d_same_upper",
    "node/test_averagepool_2d_same_lower",
    "node/test_averagepool_2d_pads",
    "node/test_averagepool_2d_pads_count_include_pad",
    "node/test_averagepool_2d_strides",
    "node/test_averagepool_2d_ceil",
    "node/test_averagepool_2d_dilations",
    "node/test_batchnorm_example",
    "node/test_batchnorm_epsilon",
    "node/test_celu_expanded",
    "node/test_clip_example",
    "node/test_clip",
    "node/test_clip_inbounds",
    "node/test_clip_outbounds",
    "node/test_clip_splitbounds",
    "node/test_clip_default_min",
    "node/test_clip_default_max",
    "node/test_clip_default_inbounds",
    "node/test_clip_default_inbounds_expanded",
    "node/test_concat_1d_axis_0",
    "node/test_concat_1d_axis_negative_1",
    "node/test_concat_2d_axis_0",
    "node/test_concat_2d_axis_1",
    "node/test_concat_2d_axis_negative_2",
    "node/test_concat_2d_axis_negative_1",
    "node/test_concat_3d_axis_0",
    "node/test_concat_3d_axis_1",
    "node/test_concat_3d_axis_2",
    "node/test_concat_3d_axis_negative_3",
    "node/test_concat_3d_axis_negative_2",
    "node/test_concat_3d_axis_negative_1",
    "node/test_basic_conv_with_padding",
    "node/test_basic_conv_without_padding",
    "node/test_conv_with_strides_padding",
    "node/test_conv_with_strides_no_padding",
    "node/test_conv_with_strides_and_asymmetric_padding",
    "node/test_conv_with_autopad_same",
    "node/test_convtranspose",
    "node/test_convtranspose_output_shape",
    "node/test_convtranspose_pad",
    "node/test_convtranspose_kernel_shape",
    "node/test_convtranspose_pads",
    "node/test_convtranspose_dilations",
    "node/test_convtranspose_autopad_same",
    "node/test_depthtospace_example",
    "node/test_depthtospace_crd_mode_example",
    "node/test_div_example",
    "node/test_div",
    "node/test_div_bcast",
    "node/test_dropout_default",
    "node/test_dropout_default_ratio",
    "node/test_dropout_default_old",
    "node/test_dropout_random_old",
    "node/test_elu_example",
    "node/test_elu",
    "node/test_elu_default",
    "node/test_erf",
    "node/test_exp_example",
    "node/test_exp",
    "node/test_expand_dim_changed",
    "node/test_expand_dim_unchanged",
    "node/test_flatten_axis0",
    "node/test_flatten_axis1",
    "node/test_flatten_axis2",
    "node/test_flatten_axis3",
    "node/test_flatten_default_axis",
    "node/test_flatten_negative_axis4",
    "node/test_flatten_negative_axis3",
    "node/test_flatten_negative_axis2",
    "node/test_flatten_negative_axis1",
    "node/test_gelu_tanh_1",
    "node/test_gelu_tanh_2",
    "node/test_gelu_default_1",
    "node/test_gelu_default_2",
    "node/test_gemm_default_zero_bias",
    "node/test_gemm_default_no_bias",
    "node/test_gemm_default_scalar_bias",
    "node/test_gemm_default_single_elem_vector_bias",
    "node/test_gemm_default_vector_bias",
    "node/test_gemm_default_matrix_bias",
    "node/test_gemm_transposeA",
    "node/test_gemm_transposeB",
    "node/test_gemm_alpha",
    "node/test_gemm_beta",
    "node/test_gemm_all_attributes",
    "node/test_globalaveragepool",
    "node/test_globalaveragepool_precomputed",
    "node/test_globalmaxpool",
    "node/test_globalmaxpool_precomputed",
    "node/test_group_normalization_example",
    "node/test_group_normalization_epsilon",
    "node/test_hardsigmoid_example",
    "node/test_hardsigmoid",
    "node/test_hardsigmoid_default",
    "node/test_hardswish",
    "node/test_hardswish_expanded",
    "node/test_identity",
    "node/test_instancenorm_example",
    "node/test_instancenorm_epsilon",
    "node/test_layer_normalization_4d_axis0",
    "node/test_layer_normalization_4d_axis_negative_4",
    "node/test_layer_normalization_4d_axis1",
    "node/test_layer_normalization_4d_axis_negative_3",
    "node/test_layer_normalization_4d_axis2",
    "node/test_layer_normalization_4d_axis_negative_2",
    "node/test_layer_normalization_4d_axis3",
    "node/test_layer_normalization_4d_axis_negative_1",
    "node/test_layer_normalization_default_axis",
    "node/test_layer_normalization_2d_axis0",
    "node/test_layer_normalization_2d_axis_negative_2",
    "node/test_layer_normalization_2d_axis1",
    "node/test_layer_normalization_2d_axis_negative_1",
    "node/test_layer_normalization_3d_axis0_epsilon",
    "node/test_layer_normalization_3d_axis_negative_3_epsilon",
    "node/test_layer_normalization_3d_axis1_epsilon",
    "node/test_layer_normalization_3d_axis_negative_2_epsilon",
    "node/test_layer_normalization_3d_axis2_epsilon",
    "node/test_layer_normalization_3d_axis_negative_1_epsilon",
    "node/test_leakyrelu_example",
    "node/test_leakyrelu",
    "node/test_leakyrelu_default",
    "node/test_log_example",
    "node/test_log",
    "node/test_logsoftmax_example_1",
    "node/test_logsoftmax_large_number",
    "node/test_logsoftmax_axis_0",
    "node/test_logsoftmax_axis_1",
    "node/test_logsoftmax_axis_2",
    "node/test_logsoftmax_negative_axis",
    "node/test_logsoftmax_default_axis",
    "node/test_lrn",
    "node/test_lrn_default",
    "node/test_matmul_2d",
    "node/test_matmul_3d",
    "node/test_matmul_4d",
    "node/test_max_example",
    "node/test_max_one_input",
    "node/test_max_two_inputs",
    "node/test_max_float32",
    "node/test_maxpool_2d_precomputed_pads",
    "node/test_maxpool_2d_precomputed_strides",
    "node/test_maxpool_2d_precomputed_same_upper",
    "node/test_maxpool_2d_default",
    "node/test_maxpool_2d_same_upper",
    "node/test_maxpool_2d_same_lower",
    "node/test_maxpool_2d_pads",
    "node/test_maxpool_2d_strides",
    "node/test_maxpool_2d_ceil",
    "node/test_maxpool_2d_ceil_output_size_reduce_by_one",
    "node/test_maxpool_2d_dilations",
    "node/test_min_example",
    "node/test_min_one_input",
    "node/test_min_two_inputs",
    "node/test_min_float32",
    "node/test_mish",
    "node/test_mish_expanded",
    "node/test_mul_example",
    "node/test_mul",
    "node/test_mul_bcast",
    "node/test_neg_example",
    "node/test_neg",
    "node/test_constant_pad",
    "node/test_constant_pad_axes",
    "node/test_constant_pad_negative_axes",
    "node/test_pow_bcast_scalar",
    "node/test_prelu_example",
    "node/test_prelu_broadcast",
    "node/test_reciprocal_example",
    "node/test_reciprocal",
    "node/test_reduce_log_sum_negative_axes_expanded",
    "node/test_reduce_max_do_not_keepdims_example",
    "node/test_reduce_max_do_not_keepdims_random",
    "node/test_reduce_max_keepdims_example",
    "node/test_reduce_max_keepdims_random",
    "node/test_reduce_max_negative_axes_keepdims_example",
    "node/test_reduce_max_negative_axes_keepdims_random",
    "node/test_reduce_mean_do_not_keepdims_example",
    "node/test_reduce_mean_do_not_keepdims_random",
    "node/test_reduce_mean_keepdims_example",
    "node/test_reduce_mean_keepdims_random",
    "node/test_reduce_mean_negative_axes_keepdims_example",
    "node/test_reduce_mean_negative_axes_keepdims_random",
    "node/test_reduce_min_do_not_keepdims_example",
    "node/test_reduce_min_do_not_keepdims_random",
    "node/test_reduce_min_keepdims_example",
    "node/test_reduce_min_keepdims_random",
    "node/test_reduce_min_negative_axes_keepdims_example",
    "node/test_reduce_min_negative_axes_keepdims_random",
    "node/test_reduce_sum_do_not_keepdims_example",
    "node/test_reduce_sum_do_not_keepdims_random",
    "node/test_reduce_sum_keepdims_example",
    "node/test_reduce_sum_keepdims_random",
    "node/test_reduce_sum_negative_axes_keepdims_example",
    "node/test_reduce_sum_square_do_not_keepdims_example_expanded",
    "node/test_reduce_sum_square_do_not_keepdims_random_expanded",
    "node/test_reduce_sum_square_keepdims_example_expanded",
    "node/test_reduce_sum_square_keepdims_random_expanded",
    "node/test_reduce_sum_square_negative_axes_keepdims_example_expanded",
    "node/test_reduce_sum_square_negative_axes_keepdims_random_expanded",
    "node/test_relu",
    "node/test_reshape_reordered_all_dims",
    "node/test_reshape_reordered_last_dims",
    "node/test_reshape_reduced_dims",
    "node/test_reshape_extended_dims",
    "node/test_reshape_one_dim",
    "node/test_reshape_negative_dim",
    "node/test_reshape_negative_extended_dims",
    "node/test_reshape_zero_dim",
    "node/test_reshape_zero_and_negative_dim",
    "node/test_resize_upsample_scales_nearest",
    "node/test_resize_downsample_scales_nearest",
    "node/test_resize_upsample_sizes_nearest",
    "node/test_resize_downsample_sizes_nearest",
    "node/test_resize_upsample_scales_linear",
    "node/test_resize_upsample_scales_linear_align_corners",
    "node/test_resize_downsample_scales_linear",
    "node/test_resize_upsample_scales_cubic",
    "node/test_resize_upsample_scales_cubic_align_corners",
    "node/test_resize_downsample_scales_cubic",
    "node/test_resize_upsample_sizes_cubic",
    "node/test_resize_downsample_sizes_cubic",
    "node/test_resize_upsample_scales_cubic_A_n0p5_exclude_outside",
    "node/test_resize_downsample_scales_cubic_A_n0p5_exclude_outside",
    "node/test_resize_upsample_scales_cubic_asymmetric",
    "node/test_resize_downsample_sizes_linear_pytorch_half_pixel",
    "node/test_resize_upsample_sizes_nearest_floor_align_corners",
    "node/test_resize_upsample_sizes_nearest_round_prefer_ceil_asymmetric",
    "node/test_resize_upsample_sizes_nearest_ceil_half_pixel",
    "node/test_resize_upsample_scales_nearest_axes_2_3",
    "node/test_resize_upsample_scales_nearest_axes_3_2",
    "node/test_resize_upsample_sizes_nearest_axes_2_3",
    "node/test_resize_upsample_sizes_nearest_axes_3_2",
    "node/test_resize_downsample_sizes_nearest_not_larger",
    "node/test_resize_downsample_sizes_nearest_not_smaller",
    "node/test_selu_example",
    "node/test_selu",
    "node/test_selu_default",
    "node/test_sigmoid_example",
    "node/test_sigmoid",
    "node/test_softmax_example",
    "node/test_softmax_large_number",
    "node/test_softmax_axis_0",
    "node/test_softmax_axis_1",
    "node/test_softmax_axis_2",
    "node/test_softmax_negative_axis",
    "node/test_softmax_default_axis",
    "node/test_softplus_example",
    "node/test_softplus",
    "node/test_spacetodepth",
    "node/test_spacetodepth_example",
    "node/test_sqrt_example",
    "node/test_sqrt",
    "node/test_squeeze",
    "node/test_squeeze_negative_axes",
    "node/test_sub_example",
    "node/test_sub",
    "node/test_sub_bcast",
    "node/test_sum_example",
    "node/test_sum_one_input",
    "node/test_sum_two_inputs",
    "node/test_tanh_example",
    "node/test_tanh",
    "node/test_transpose_default",
    "node/test_transpose_all_permutations_0",
    "node/test_transpose_all_permutations_1",
    "node/test_transpose_all_permutations_2",
    "node/test_transpose_all_permutations_3",
    "node/test_transpose_all_permutations_4",
    "node/test_transpose_all_permutations_5",
    "node/test_unsqueeze_axis_0",
    "node/test_unsqueeze_axis_1",
    "node/test_unsqueeze_axis_2",
    "node/test_unsqueeze_two_axes",
    "node/test_unsqueeze_negative_axes",
    "node/test_upsample_nearest",
    "pytorch-converted/test_AvgPool1d",
    "pytorch-converted/test_AvgPool1d_stride",
    "pytorch-converted/test_AvgPool2d",
    "pytorch-converted/test_AvgPool2d_stride",
    "pytorch-converted/test_BatchNorm2d_eval",
    "pytorch-converted/test_BatchNorm2d_momentum_eval",
    "pytorch-converted/test_ConstantPad2d",
    "pytorch-converted/test_Conv2d",
    "pytorch-converted/test_Conv2d_depthwise",
    "pytorch-converted/test_Conv2d_depthwise_padded",
    "pytorch-converted/test_Conv2d_depthwise_strided",
    "pytorch-converted/test_Conv2d_depthwise_with_multiplier",
    "pytorch-converted/test_Conv2d_dilated",
    "pytorch-converted/test_Conv2d_groups",
    "pytorch-converted/test_Conv2d_groups_thnn",
    "pytorch-converted/test_Conv2d_no_bias",
    "pytorch-converted/test_Conv2d_padding",
    "pytorch-converted/test_Conv2d_strided",
    "pytorch-converted/test_ConvTranspose2d",
    "pytorch-converted/test_ConvTranspose2d_no_bias",
    "pytorch-converted/test_ELU",
    "pytorch-converted/test_LeakyReLU",
    "pytorch-converted/test_LeakyReLU_with_negval",
    "pytorch-converted/test_Linear",
    "pytorch-converted/test_Linear_no_bias",
    "pytorch-converted/test_LogSoftmax",
    "pytorch-converted/test_MaxPool2d",
    "pytorch-converted/test_PReLU_1d",
    "pytorch-converted/test_PReLU_1d_multiparam",
    "pytorch-converted/test_PReLU_2d",
    "pytorch-converted/test_PReLU_2d_multiparam",
    "pytorch-converted/test_PReLU_3d",
    "pytorch-converted/test_PReLU_3d_multiparam",
    "pytorch-converted/test_PixelShuffle",
    "pytorch-converted/test_PoissonNLLLLoss_no_reduce",
    "pytorch-converted/test_ReLU",
    "pytorch-converted/test_ReflectionPad2d",
    "pytorch-converted/test_ReplicationPad2d",
    "pytorch-converted/test_SELU",
    "pytorch-converted/test_Sigmoid",
    "pytorch-converted/test_Softmax",
    "pytorch-converted/test_Softmin",
    "pytorch-converted/test_Softplus",
    "pytorch-converted/test_Softsign",
    "pytorch-converted/test_Tanh",
    "pytorch-converted/test_ZeroPad2d",
    "pytorch-converted/test_log_softmax_dim3",
    "pytorch-converted/test_log_softmax_lastdim",
    "pytorch-converted/test_softmax_functional_dim3",
    "pytorch-converted/test_softmax_lastdim",
    "pytorch-operator/test_operator_addmm",
    "pytorch-operator/test_operator_basic",
    "pytorch-operator/test_operator_clip",
    "pytorch-operator/test_operator_concat2",
    "pytorch-operator/test_operator_convtranspose",
    "pytorch-operator/test_operator_exp",
    "pytorch-operator/test_operator_flatten",
    "pytorch-operator/test_operator_max",
    "pytorch-operator/test_operator_min",
    "pytorch-operator/test_operator_mm",
    "pytorch-operator/test_operator_pad",
    "pytorch-operator/test_operator_params",
    "pytorch-operator/test_operator_selu",
    "pytorch-operator/test_operator_sqrt",
    "pytorch-operator/test_operator_symbolic_override",
    "pytorch-operator/test_operator_symbolic_override_nested",
    "pytorch-operator/test_operator_view",
];

/// A case whose outputs did not match, or that could not be run at all.
#[derive(Debug)]
pub struct Failure {
    /// `<source>/<case>`, plus ` (optimized)` for the optimized run.
    pub case: String,
    /// What went wrong: an import/run error, a shape mismatch, or the worst element.
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.case, self.detail)
    }
}

/// The vendored test data.
fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
}

/// Reads a little-endian float32 C-order `.npy` file.
fn read_npy(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| format!("{}: {e}", path.display()))?;
    let want = npyz::DType::Plain("<f4".parse().map_err(|e| format!("dtype literal: {e}"))?);
    if npy.dtype() != want || npy.order() != npyz::Order::C {
        return Err(format!("{}: not a C-order <f4 array", path.display()));
    }
    let shape = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|e| format!("{}: {e}", path.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let data = npy
        .into_vec::<f32>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Tensor::new(shape, data).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads `<prefix>_0.npy`, `<prefix>_1.npy`, ... until the next index is missing.
fn read_numbered(dir: &Path, prefix: &str) -> Result<Vec<Tensor>, String> {
    let mut tensors = Vec::new();
    loop {
        let path = dir.join(format!("{prefix}_{}.npy", tensors.len()));
        if !path.exists() {
            return Ok(tensors);
        }
        tensors.push(read_npy(&path)?);
    }
}

/// Largest `|got - want|`, or why the two cannot be compared or differ beyond tolerance.
fn compare(want: &Tensor, got: &Tensor) -> Result<f32, String> {
    if want.shape() != got.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let mut max_diff = 0.0f32;
    let mut worst: Option<(usize, f32, f32)> = None;
    for (i, (&w, &g)) in want.data().iter().zip(got.data()).enumerate() {
        let same_special = (w.is_nan() && g.is_nan()) || (w.is_infinite() && w == g);
        if same_special {
            continue;
        }
        let diff = (g - w).abs();
        let ok = diff <= ATOL + RTOL * w.abs();
        if diff > max_diff || diff.is_nan() {
            max_diff = if diff.is_nan() { f32::INFINITY } else { diff };
        }
        if !ok && worst.is_none_or(|(_, _, d)| diff > d || diff.is_nan()) {
            worst = Some((i, w, g));
        }
    }
    match worst {
        None => Ok(max_diff),
        Some((i, w, g)) => Err(format!(
            "max abs diff {max_diff:e} (worst at flat index {i}: got {g}, expected {w})"
        )),
    }
}

/// Imports, optionally optimizes, runs and compares one case.
fn check_case(executor: &dyn Executor, dir: &Path, optimize: bool) -> Result<f32, String> {
    let mut graph: Graph = tile_engine::onnx::load_file(&dir.join("model.onnx"))
        .map_err(|e| format!("import: {e}"))?;
    if optimize {
        tile_engine::passes::optimize(&mut graph).map_err(|e| format!("optimize: {e}"))?;
    }
    let inputs = read_numbered(dir, "input")?;
    let want = read_numbered(dir, "output")?;
    let got = executor
        .run(&graph, &inputs)
        .map_err(|e| format!("run: {e}"))?;
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    let mut max_diff = 0.0f32;
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        let diff = compare(w, g).map_err(|e| format!("output {i}: {e}"))?;
        max_diff = max_diff.max(diff);
    }
    Ok(max_diff)
}

/// Runs every vendored case on `executor`, as imported and after
/// `passes::optimize`, and returns every mismatch (empty when all pass).
pub fn run_suite(executor: &dyn Executor) -> Vec<Failure> {
    let root = data_dir().join("onnx");
    let mut failures = Vec::new();
    for case in CASES {
        for optimize in [false, true] {
            // A panic in one case must not hide the results of the others.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check_case(executor, &root.join(case), optimize)
            }))
            .unwrap_or_else(|_| Err("panicked".to_string()));
            if let Err(detail) = outcome {
                let case = if optimize {
                    format!("{case} (optimized)")
                } else {
                    (*case).to_string()
                };
                failures.push(Failure { case, detail });
            }
        }
    }
    failures
}

/// Cases the CPU executor is known to get wrong, with the diagnosis; the test
/// insists they still fail, so a fix has to remove them from this list.
const CPU_KNOWN_FAILURES: &[(&str, &str)] = &[];

/// Cases the GPU executor is known to get wrong, as [`CPU_KNOWN_FAILURES`].
const GPU_KNOWN_FAILURES: &[(&str, &str)] = &[];

/// Runs the suite on `executor` and fails on any case outside `known`, or
/// any case in `known` that now passes.
fn assert_suite(executor: &dyn Executor, known: &[(&str, &str)]) {
    let failures = run_suite(executor);
    let is_known = |case: &str| {
        let base = case.trim_end_matches(" (optimized)");
        known.iter().any(|(k, _)| *k == base)
    };
    let report: Vec<String> = failures
        .iter()
        .filter(|f| !is_known(&f.case))
        .map(ToString::to_string)
        .collect();
    let fixed: Vec<&str> = known
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !failures.iter().any(|f| f.case == *k))
        .collect();
    assert!(
        report.is_empty() && fixed.is_empty(),
        "{}: {} of {} runs failed:\n{}\nknown failures that now pass (remove them from the list): {fixed:?}",
        executor.name(),
        report.len(),
        2 * CASES.len(),
        report.join("\n")
    );
}

#[test]
fn onnx_backend_cases_match_on_cpu() {
    assert_suite(&tile_engine::cpu::CpuExecutor, CPU_KNOWN_FAILURES);
}

/// The same suite on the wgpu executor (lavapipe in CI: `WGPU_BACKEND=vulkan`);
/// without an adapter it fails with the adapter error, it never skips.
/// Autotuning is off so the run neither reads nor writes the user's cache.
#[test]
fn onnx_backend_cases_match_on_gpu() {
    let gpu = tile_engine::gpu::GpuExecutor::new(tile_engine::gpu::GpuOptions {
        no_autotune: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| {
        panic!("the GPU suite needs an adapter (e.g. lavapipe with WGPU_BACKEND=vulkan): {e}")
    });
    assert_suite(&gpu, GPU_KNOWN_FAILURES);
}

#[test]
fn case_list_matches_vendored_folders() {
    let root = data_dir().join("onnx");
    let mut on_disk = Vec::new();
    for source in ["node", "pytorch-converted", "pytorch-operator"] {
        let entries = std::fs::read_dir(root.join(source)).expect("vendored data folder");
        for entry in entries {
            let entry = entry.expect("readable folder entry");
            on_disk.push(format!("{source}/{}", entry.file_name().to_string_lossy()));
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| (*c).to_string()).collect();
    listed.sort();
    assert_eq!(listed, on_disk);
}

#[test]
fn comparison_rejects_a_wrong_value_and_a_wrong_shape() {
    // The harness itself must be able to fail.
    let want = Tensor::new(vec![2], vec![1.0, 2.0]).expect("tensor");
    let close = Tensor::new(vec![2], vec![1.0, 2.0 + 1e-5]).expect("tensor");
    let off = Tensor::new(vec![2], vec![1.0, 2.01]).expect("tensor");
    let reshaped = Tensor::new(vec![1, 2], vec![1.0, 2.0]).expect("tensor");
    assert!(compare(&want, &close).is_ok());
    assert!(compare(&want, &off).is_err());
    assert!(compare(&want, &reshaped).is_err());
}

/// Runs a reference model on the CPU executor and compares it with ONNX
/// Runtime's stored output; returns the max abs difference.
fn reference_model_diff(name: &str, optimize: bool) -> Result<f32, String> {
    reference_model_diff_on(&tile_engine::cpu::CpuExecutor, name, optimize)
}

/// [`reference_model_diff`] on any executor.
fn reference_model_diff_on(
    executor: &dyn Executor,
    name: &str,
    optimize: bool,
) -> Result<f32, String> {
    let dir = data_dir().join("models");
    let mut graph = tile_engine::onnx::load_file(&dir.join(format!("{name}.onnx")))
        .map_err(|e| format!("import: {e}"))?;
    if optimize {
        tile_engine::passes::optimize(&mut graph).map_err(|e| format!("optimize: {e}"))?;
    }
    let input = read_npy(&dir.join(format!("{name}.input.npy")))?;
    let want = read_npy(&dir.join(format!("{name}.ort.npy")))?;
    let got = executor
        .run(&graph, &[input])
        .map_err(|e| format!("run: {e}"))?;
    let [got] = got.as_slice() else {
        return Err(format!("{} outputs, expected 1", got.len()));
    };
    compare(&want, got)
}

#[test]
fn pytorch_resnets_match_onnx_runtime_on_cpu() {
    let mut failures = Vec::new();
    for name in ["resnet_tiny", "resnet8"] {
        for optimize in [false, true] {
            match reference_model_diff(name, optimize) {
                Ok(diff) => {
                    println!("{name} (optimize: {optimize}): max abs diff vs ONNX Runtime {diff:e}")
                }
                Err(e) => failures.push(format!("{name} (optimize: {optimize}): {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// align_corners Resize by scales whose products with the lengths are not
/// whole (linear, cubic and nearest): coordinates over the output length
/// less one, as onnxruntime and PyTorch compute them (ONNX's reference
/// implementation, and with it its two such node tests, uses the unrounded
/// length; see scripts/make_resize_model.py).
#[test]
fn align_corners_resize_by_scales_matches_onnx_runtime() {
    let gpu = tile_engine::gpu::GpuExecutor::new(tile_engine::gpu::GpuOptions {
        no_autotune: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("this test needs a GPU adapter (e.g. lavapipe): {e}"));
    let executors: [(&str, &dyn Executor); 2] =
        [("cpu", &tile_engine::cpu::CpuExecutor), ("gpu", &gpu)];
    for (name, executor) in executors {
        match reference_model_diff_on(executor, "resize_align_corners", false) {
            Ok(diff) => println!("{name}: max abs diff vs ONNX Runtime {diff:e}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn tessera_infer_cpu_matches_onnx_runtime() {
    // The acceptance check, through the binary exactly as a user runs it.
    let dir = data_dir().join("models");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("resnet_tiny.cpu.npy");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("infer")
        .arg("--model")
        .arg(dir.join("resnet_tiny.onnx"))
        .arg("--input")
        .arg(dir.join("resnet_tiny.input.npy"))
        .arg("--output")
        .arg(&out)
        .args(["--backend", "cpu"])
        .status()
        .expect("tessera binary starts");
    assert!(status.success(), "tessera infer exited with {status}");
    let want = read_npy(&dir.join("resnet_tiny.ort.npy")).expect("ORT reference");
    let got = read_npy(&out).expect("tessera output");
    match compare(&want, &got) {
        Ok(diff) => println!("tessera infer --backend cpu vs ONNX Runtime: max abs diff {diff:e}"),
        Err(e) => panic!("tessera infer --backend cpu vs ONNX Runtime: {e}"),
    }
}
