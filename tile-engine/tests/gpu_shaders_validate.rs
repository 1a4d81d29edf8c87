//! Parses and validates every WGSL kernel in `shaders/` with naga, the way
//! the executor loads it (`common.wgsl` prepended), so a broken shader fails
//! `cargo test` with naga's own message. Needs no GPU adapter.

use std::path::PathBuf;

fn shader_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shaders")
}

fn validate(name: &str, source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: parse error:\n{}", e.emit_to_string(source)))?;
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    );
    validator
        .validate(&module)
        .map_err(|e| format!("{name}: validation error:\n{}", e.emit_to_string(source)))?;
    Ok(())
}

#[test]
fn every_shader_parses_and_validates() {
    let dir = shader_dir();
    let common = std::fs::read_to_string(dir.join("common.wgsl")).expect("shaders/common.wgsl");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("shaders/ directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 10,
        "expected the kernel files in {dir:?}, found {names:?}"
    );
    let mut failures = Vec::new();
    for path in &names {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = std::fs::read_to_string(path).expect("readable shader");
        let source = if name == "common.wgsl" {
            body
        } else {
            format!("{common}\n{body}")
        };
        if let Err(e) = validate(&name, &source) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_validator_rejects_a_broken_shader() {
    let broken = "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }";
    let err = validate("broken.wgsl", broken).expect_err("type mismatch must be reported");
    assert!(err.contains("broken.wgsl"), "{err}");
}
