//! Compiles `seam/v1/seam.proto` with protox, a pure-Rust protobuf compiler, so a build
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "seam/v1/seam.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    // prost's codec with smaller per-stream buffers (see src/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::codec::SeamCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
