//! Compiles `cachelet/v1/cachelet.proto` with `protox` (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "cachelet/v1/cachelet.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        .bytes(".")
        // Malformed messages are the caller's error: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::Codec")
        .type_attribute(
            ".cachelet.v1.NodeStats",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .compile_fds(fds)?;
    Ok(())
}
