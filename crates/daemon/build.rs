//! Generates the gRPC code from `proto/tiffany/v1/tiffany.proto` with the
//! `protoc` shipped by `protoc-bin-vendored` (ADR 8): nothing to install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_dir.join("tiffany/v1/tiffany.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[proto], &[proto_dir])?;
    Ok(())
}
