//! Generates the tonic service from `proto/benchmark.proto`, with the `tonic` feature only (it
//! needs `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The feature, as Cargo tells a build script at run time; `generate` itself is compiled
    // only with the feature, which brings in its build dependency.
    if std::env::var_os("CARGO_FEATURE_TONIC").is_some() {
        generate()?;
    }
    Ok(())
}

#[cfg(feature = "tonic")]
fn generate() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/benchmark.proto");
    tonic_prost_build::configure().compile_protos(&["proto/benchmark.proto"], &["proto"])?;
    Ok(())
}

#[cfg(not(feature = "tonic"))]
fn generate() -> Result<(), Box<dyn std::error::Error>> {
    Err("the tonic feature is on but tonic-prost-build is not a build dependency".into())
}
