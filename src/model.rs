//! Finding and loading a model by the name a user gives on the command line,
//! and the pixel convention its PNG inputs and outputs use.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tile_engine::{Graph, Tensor, default_model};

use crate::tensor_io::{self, Format, PixelRange};

/// What the user named: a file of a known format, or the embedded default model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// An `.onnx` file.
    Onnx,
    /// A TF.js layers model (`model.json` with its shards beside it).
    Tfjs,
    /// The embedded super-resolution model (`default`).
    Default,
}

/// Classifies a `--model` argument.
pub fn kind_of(spec: &str) -> Result<ModelKind> {
    if spec == "default" {
        return Ok(ModelKind::Default);
    }
    let path = Path::new(spec);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("onnx") => Ok(ModelKind::Onnx),
        Some("json") => Ok(ModelKind::Tfjs),
        _ if path.join("model.json").is_file() => bail!(
            "{spec} is a folder: give its TF.js model file, {}",
            path.join("model.json").display()
        ),
        _ if path.is_dir() => bail!(
            "{spec} is a folder without a model.json: give an .onnx file, a TF.js model.json, or `default`"
        ),
        Some("keras" | "h5") if spec.ends_with(".weights.h5") => bail!(
            "{spec} holds a Keras model's weights only; tessera reads the model converted to TF.js \
             (tensorflowjs_converter on the saved .keras or .h5 model) or to ONNX (tf2onnx)"
        ),
        Some("keras" | "h5") => bail!(
            "{spec}: tessera does not read Keras files; convert it to a TF.js layers model \
             (tensorflowjs_converter --input_format=keras {spec} OUT_DIR, then give \
             OUT_DIR/model.json) or to ONNX (tf2onnx)"
        ),
        _ => bail!(
            "{spec}: unknown model format (expected an .onnx file, a TF.js model.json, or `default`)"
        ),
    }
}

/// Reads an input tensor with the pixel convention of the model it is for.
pub fn read_input(kind: ModelKind, path: &Path, pixel_scale: Option<f32>) -> Result<Tensor> {
    if kind == ModelKind::Default && tensor_io::format_of(path)? == Format::Png {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        return default_model::png_to_tensor(&bytes).with_context(|| format!("{}", path.display()));
    }
    tensor_io::read_tensor(path, range(pixel_scale))
}

/// Loads the model for `input`, read from `path`, and fits a PNG's channels
/// to it ([`fit_image_channels`]). A PNG is read as three channels; a model
/// whose loader checks the input's channel count (a TF.js model) and
/// refuses three is loaded at four, then one, as the image can feed those.
pub fn load_for_input(
    spec: &str,
    path: &Path,
    input: Tensor,
    pixel_scale: Option<f32>,
) -> Result<(Graph, Tensor)> {
    let graph = match load(spec, input.shape()) {
        Ok(g) => g,
        Err(e) => {
            let png = tensor_io::format_of(path).is_ok_and(|f| f == Format::Png);
            let &[n, 3, h, w] = input.shape() else {
                return Err(e);
            };
            if !png {
                return Err(e);
            }
            match [4, 1]
                .into_iter()
                .find_map(|c| load(spec, &[n, c, h, w]).ok())
            {
                Some(g) => g,
                None => return Err(e),
            }
        }
    };
    let input = fit_image_channels(path, &graph, input, pixel_scale)?;
    Ok((graph, input))
}

/// A PNG is read as RGB; for a model that takes four channels it is read
/// again as RGBA (scaled by `pixel_scale` as the colours were), for one that
/// takes one channel (a grayscale super-resolution or digit model) a grey
/// image (all three channels equal, as a grey PNG decodes) becomes that one
/// channel, and a colour image is refused with what to do. Anything else is
/// returned as it is; a PNG whose alpha is dropped with transparent pixels
/// in it is warned about.
pub fn fit_image_channels(
    path: &Path,
    graph: &Graph,
    input: Tensor,
    pixel_scale: Option<f32>,
) -> Result<Tensor> {
    let png = tensor_io::format_of(path).is_ok_and(|f| f == Format::Png);
    let &[1, 3, h, w] = input.shape() else {
        return Ok(input);
    };
    if !png {
        return Ok(input);
    }
    let channels = match graph.inputs.as_slice() {
        [x] => match graph.shape(*x) {
            [_, c, _, _] => Some(*c),
            _ => None,
        },
        _ => None,
    };
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if channels == Some(4) {
        return tensor_io::png_to_rgba_tensor(&bytes, range(pixel_scale))
            .with_context(|| format!("{}", path.display()));
    }
    if default_model::png_is_transparent(&bytes).with_context(|| format!("{}", path.display()))? {
        // A cut-out's transparent pixels keep whatever colour they hold,
        // which is rarely what the user sees.
        eprintln!(
            "{}: the PNG has transparent pixels; the model takes no alpha channel, so it is dropped and the colour under each transparent pixel is used as it is",
            path.display()
        );
    }
    if channels != Some(1) {
        return Ok(input);
    }
    let plane = h * w;
    let d = input.data();
    let (r, rest) = d.split_at(plane);
    if rest[..plane] != *r || rest[plane..] != *r {
        bail!(
            "{}: the model takes one channel and this PNG is in colour; convert it to grayscale first",
            path.display()
        );
    }
    Ok(Tensor::new(vec![1, 1, h, w], r.to_vec())?)
}

/// Writes each output to its path, in order (see [`write_output`]).
pub fn write_outputs(
    kind: ModelKind,
    paths: &[PathBuf],
    outputs: &[Tensor],
    pixel_scale: Option<f32>,
) -> Result<()> {
    anyhow::ensure!(
        paths.len() == outputs.len(),
        "{} outputs for {} paths",
        outputs.len(),
        paths.len()
    );
    for (path, t) in paths.iter().zip(outputs) {
        write_output(kind, path, t, pixel_scale)?;
    }
    Ok(())
}

/// Says on stderr how many of `t`'s values (read from or written to
/// `path`) are NaN, with what that means, if any are.
fn say_nans(path: &Path, t: &Tensor, which: &str, meaning: &str) {
    let n = t.data().iter().filter(|v| v.is_nan()).count();
    if n > 0 {
        eprintln!(
            "{}: {n} of {} {which} values are NaN{meaning}",
            path.display(),
            t.data().len()
        );
    }
}

/// Says on stderr that an input holds NaN values: they propagate through
/// the model as ONNX Runtime propagates them, so the output may be mostly
/// NaN, which is easier to place with a word at the start.
pub fn warn_nan_input(path: &Path, t: &Tensor) {
    say_nans(path, t, "input", "; they propagate through the model");
}

/// Writes an output tensor with the pixel convention of the model it came
/// from; a PNG has no NaN, so NaN values written to one are said.
pub fn write_output(
    kind: ModelKind,
    path: &Path,
    t: &Tensor,
    pixel_scale: Option<f32>,
) -> Result<()> {
    if tensor_io::format_of(path)? == Format::Png {
        say_nans(
            path,
            t,
            "output",
            ", written as 0 (write .npy to keep them)",
        );
    }
    if kind == ModelKind::Default && tensor_io::format_of(path)? == Format::Png {
        let bytes = default_model::tensor_to_png(t)?;
        return std::fs::write(path, bytes)
            .with_context(|| format!("cannot write {}", path.display()));
    }
    tensor_io::write_tensor(path, t, range(pixel_scale))
}

/// Checks `--pixel-scale` against what it applies to: a positive scale, a
/// PNG on at least one side, and a model other than the embedded one
/// (whose pixel convention is fixed). A scale that would be ignored is
/// refused, so a user does not believe it was used.
pub fn check_pixel_scale(
    kind: ModelKind,
    input: &Path,
    outputs: &[PathBuf],
    pixel_scale: Option<f32>,
) -> Result<()> {
    let Some(scale) = pixel_scale else {
        return Ok(());
    };
    if !(scale.is_finite() && scale > 0.0) {
        bail!("--pixel-scale {scale}: expected a positive number");
    }
    if kind == ModelKind::Default {
        bail!("--pixel-scale does not apply to the default model, whose PNGs are RGB in [0, 255]");
    }
    let png = |p: &Path| tensor_io::format_of(p).is_ok_and(|f| f == Format::Png);
    if !png(input) && !outputs.iter().any(|o| png(o)) {
        bail!("--pixel-scale applies to PNG images; neither --input nor --output is a .png");
    }
    Ok(())
}

fn range(pixel_scale: Option<f32>) -> PixelRange {
    pixel_scale.map_or_else(PixelRange::default, |scale| PixelRange { scale })
}

/// Loads the model for an input of `input_shape` (models with a dynamic
/// spatial size, like the default one, are instantiated for it; an empty
/// shape takes the one an ONNX or TF.js file declares), then runs the IR
/// passes.
pub fn load(spec: &str, input_shape: &[usize]) -> Result<Graph> {
    let kind = kind_of(spec)?;
    if kind != ModelKind::Default && !Path::new(spec).is_file() {
        bail!("{spec}: no such model file");
    }
    let mut graph = match kind {
        ModelKind::Default => {
            let [1, 3, h, w] = input_shape else {
                bail!(
                    "the default model takes a [1, 3, H, W] image, got an input of shape {input_shape:?}"
                );
            };
            default_model::graph([*h, *w])?
        }
        ModelKind::Onnx => {
            let path = Path::new(spec);
            // The input's shape sizes the model's symbolic dimensions.
            tile_engine::onnx::load_file_for_input(path, input_shape)
                .with_context(|| spec.to_string())?
        }
        ModelKind::Tfjs => {
            let path = Path::new(spec);
            if input_shape.is_empty() {
                tile_engine::tfjs::load_dir(path)
            } else {
                tile_engine::tfjs::load_dir_with_input(path, input_shape)
            }
            .with_context(|| spec.to_string())?
        }
    };
    tile_engine::passes::optimize(&mut graph)
        .with_context(|| format!("{spec}: optimising the graph"))?;
    Ok(graph)
}

/// Checks that `graph` (loaded from `spec`) has one input: `infer`, `run`
/// and `plan` (whose plans `run` carries out) refuse others alike.
pub fn check_one_input(spec: &str, graph: &Graph) -> Result<()> {
    if graph.inputs.len() != 1 {
        bail!(
            "{spec}: the model has {} inputs; tessera feeds exactly one",
            graph.inputs.len()
        );
    }
    Ok(())
}

/// Checks that `graph` (loaded from `spec`) takes `input` as its one input
/// and has one output per path in `outputs`, each a file type tessera
/// writes: what `tessera infer` and `tessera run` read and write. Run before
/// any work, so a wrong file fails at once and says why.
pub fn check_io(spec: &str, graph: &Graph, input: &Tensor, outputs: &[PathBuf]) -> Result<()> {
    check_one_input(spec, graph)?;
    if graph.outputs.len() != outputs.len() {
        let names: Vec<&str> = graph
            .outputs
            .iter()
            .map(|&v| graph.values[v].name.as_str())
            .collect();
        let n = names.len();
        bail!(
            "{spec}: the model has {n} output{} ({}) and {} --output path{} given; give one per output, in that order",
            if n == 1 { "" } else { "s" },
            names.join(", "),
            outputs.len(),
            if outputs.len() == 1 { " was" } else { "s were" }
        );
    }
    for (i, o) in outputs.iter().enumerate() {
        // Found at the write, it cost the user the whole request first.
        if o.is_dir() {
            bail!("--output {} is a folder: give a file path", o.display());
        }
        // The later output would silently replace the earlier one.
        if outputs[..i].contains(o) {
            bail!(
                "{}: given as --output twice; give one path per model output",
                o.display()
            );
        }
    }
    for (o, &v) in outputs.iter().zip(&graph.outputs) {
        if tensor_io::format_of(o)? == Format::Png {
            tensor_io::check_png_shape(graph.shape(v)).with_context(|| {
                format!(
                    "{}: model output {}",
                    o.display(),
                    graph.values[v].name.as_str()
                )
            })?;
        }
        // A missing folder would otherwise show only after the whole run.
        let dir = o.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            bail!(
                "{}: the folder {} does not exist",
                o.display(),
                dir.display()
            );
        }
    }
    check_input(spec, graph, input)
}

/// Checks that `graph` (loaded from `spec`) takes `input` as its one
/// input; a channels-last file is told to be transposed.
pub fn check_input(spec: &str, graph: &Graph, input: &Tensor) -> Result<()> {
    let checked = graph.check_inputs(std::slice::from_ref(input));
    if let (Err(e), [_, c, _, _], [_, _, _, last]) =
        (&checked, graph.shape(graph.inputs[0]), input.shape())
        && last == c
        && input.shape()[1] != *c
    {
        bail!(
            "{spec}: {e} (the file looks channels-last; tessera reads NCHW tensors, transpose it to [N, C, H, W])"
        );
    }
    checked.with_context(|| spec.to_string())
}

/// Loads a model for planning or benchmarking at `input_shape`, else the
/// default model at its fixture's size and other models at the input shape
/// they declare (one with a free spatial size at 224×224).
pub fn load_for_planning(spec: &str, input_shape: Option<&[usize]>) -> Result<Graph> {
    if let Some(shape) = input_shape {
        // The importer keeps the dims a file fixes whatever the input says
        // (an input file is checked against them later); a shape typed for
        // planning is checked here.
        if kind_of(spec)? == ModelKind::Onnx
            && let Some(declared) = std::fs::read(spec)
                .ok()
                .and_then(|b| tile_engine::onnx::declared_input_dims(&b))
            && declared.len() == shape.len()
            && let Some((i, fixed)) = declared
                .iter()
                .zip(shape)
                .enumerate()
                .find_map(|(i, (d, &s))| d.filter(|&d| d != s).map(|d| (i, d)))
        {
            bail!(
                "{spec}: --input-shape {}: the model fixes dimension {i} at {fixed}",
                dims_text(shape)
            );
        }
        return load(spec, shape);
    }
    let shape = match kind_of(spec)? {
        ModelKind::Default => {
            let t = default_model::png_to_tensor(default_model::fixture_png())?;
            t.shape().to_vec()
        }
        // An ONNX model with a symbolic height or width is planned for a
        // 224×224 image, as a TF.js one is.
        ModelKind::Onnx => {
            let bytes = std::fs::read(spec).ok();
            let shape = bytes
                .as_deref()
                .and_then(tile_engine::onnx::planning_shape)
                .unwrap_or_default();
            let symbolic = bytes
                .as_deref()
                .and_then(tile_engine::onnx::declared_input_dims)
                .is_some_and(|d| d.iter().any(Option::is_none));
            // A model whose graph holds at one size only (a fixed position
            // embedding, a reshape to fixed patches) fails at the assumed
            // one; say which size was assumed and how to give the real one.
            // Any other failure (no file, a bad file, an unsupported op) is
            // the model's own and is told as `infer` tells it.
            if !symbolic {
                return load(spec, &shape);
            }
            return load(spec, &shape).with_context(|| {
                format!(
                    "planned at input shape {} because the model leaves dimensions open; give its real shape with --input-shape N,C,H,W",
                    dims_text(&shape)
                )
            });
        }
        // A TF.js model runs at the shape it declares; one with a free
        // spatial size is planned for a 224×224 RGB image.
        ModelKind::Tfjs => {
            // Only a declared open size (channels, height, width) is filled in: any other
            // failure is the model's own, and 224×224 would not mend it.
            let declared = std::fs::read(spec)
                .ok()
                .and_then(|b| tile_engine::tfjs::declared_input_dims(&b));
            let shape: Vec<usize> = match declared.as_deref() {
                Some([n, c, h, w]) if [c, h, w].iter().any(|d| d.is_none()) => vec![
                    n.unwrap_or(1),
                    c.unwrap_or(3),
                    h.unwrap_or(224),
                    w.unwrap_or(224),
                ],
                _ => return load(spec, &[]),
            };
            return load(spec, &shape).with_context(|| {
                format!(
                    "planned at input shape {} as the model leaves its size open (--input-shape N,C,H,W gives another)",
                    dims_text(&shape)
                )
            });
        }
    };
    load(spec, &shape)
}

/// A shape as `--input-shape` takes it (`1,3,224,224`), to paste back.
fn dims_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::{fit_image_channels, load_for_planning};
    use crate::tensor_io::{PixelRange, read_tensor};

    #[test]
    fn a_grey_png_feeds_a_one_channel_model_and_a_colour_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("tessera-fit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut g = tile_engine::Graph::default();
        let x = g.add_value("x", vec![1, 1, 2, 3]);
        g.inputs.push(x);
        let grey = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 40 + y * 100) as u8]));
        let colour = image::RgbImage::from_fn(3, 2, |x, _| image::Rgb([x as u8, 9, 200]));
        let (gp, cp) = (dir.join("grey.png"), dir.join("colour.png"));
        grey.save(&gp).expect("grey png");
        colour.save(&cp).expect("colour png");
        let read = |p: &std::path::Path| read_tensor(p, PixelRange::default()).expect("read");
        let t = fit_image_channels(&gp, &g, read(&gp), None).expect("grey fits");
        assert_eq!(t.shape(), &[1, 1, 2, 3]);
        let want: Vec<f32> = grey.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect();
        assert_eq!(t.data(), want.as_slice());
        let e = fit_image_channels(&cp, &g, read(&cp), None).expect_err("colour refused");
        assert!(e.to_string().contains("grayscale"), "{e}");
        // A three-channel model gets the image as it was read.
        let mut rgb = tile_engine::Graph::default();
        let x = rgb.add_value("x", vec![1, 3, 2, 3]);
        rgb.inputs.push(x);
        let t = fit_image_channels(&gp, &rgb, read(&gp), None).expect("rgb model");
        assert_eq!(t.shape(), &[1, 3, 2, 3]);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A model that takes four channels gets an RGBA PNG's alpha as its
    /// fourth, scaled as the colours are (it got RGB and a shape error),
    /// and an RGB PNG fully opaque.
    #[test]
    fn an_rgba_png_feeds_a_four_channel_model_with_its_alpha() {
        let dir = std::env::temp_dir().join(format!("tessera-rgba-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut g = tile_engine::Graph::default();
        let x = g.add_value("x", vec![1, 4, 2, 3]);
        g.inputs.push(x);
        let rgba = image::RgbaImage::from_fn(3, 2, |x, y| {
            image::Rgba([x as u8, 9, 200, (x * 100 + y * 20) as u8])
        });
        let rgb = image::RgbImage::from_fn(3, 2, |x, _| image::Rgb([x as u8, 9, 200]));
        let (ap, cp) = (dir.join("rgba.png"), dir.join("rgb.png"));
        rgba.save(&ap).expect("rgba png");
        rgb.save(&cp).expect("rgb png");
        let read = |p: &std::path::Path| read_tensor(p, PixelRange::default()).expect("read");
        let t = fit_image_channels(&ap, &g, read(&ap), Some(255.0)).expect("rgba fits");
        assert_eq!(t.shape(), &[1, 4, 2, 3]);
        let plane = |c: usize| -> Vec<f32> { rgba.pixels().map(|p| f32::from(p.0[c])).collect() };
        assert_eq!(&t.data()[..6], plane(0).as_slice());
        assert_eq!(&t.data()[18..], plane(3).as_slice());
        let t = fit_image_channels(&cp, &g, read(&cp), None).expect("rgb fits");
        assert_eq!(&t.data()[18..], &[1.0; 6]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_tfjs_model_is_planned_at_the_shape_it_declares() {
        let fixtures = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tile-engine/tests/tfjs_fixtures"
        );
        // Keras NHWC [null, 13, 17, 3] and [null, 7, 6, 2], in IR layout.
        for (name, want) in [("dag", [1, 3, 13, 17]), ("classifier", [1, 2, 7, 6])] {
            let g = load_for_planning(&format!("{fixtures}/{name}/model.json"), None).expect(name);
            assert_eq!(g.shape(g.inputs[0]), want, "{name}");
        }
    }
}
