//! Generates the Rust code for `proto/vclink/v1/link.proto` with protox, so no system
//! `protoc` is needed to build.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["vclink/v1/link.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Reauth carries a bearer token: its Debug is written by hand (redacted).
        .skip_debug(["vclink.v1.Reauth"])
        // Ordered maps: labels and quota entries compare, print and patch the same way
        // every time (the hub diffs them to decide whether a write is needed).
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
