//! `vclink-hub` binary: everything lives in the library (see `vclink_hub::main_entry`).
#![forbid(unsafe_code)]

/// jemalloc instead of glibc's malloc: the hub holds one small long-lived record per
/// vCluster among short-lived watch-event garbage, which fragments glibc's heap (see the
/// comment in Cargo.toml and `./bench.sh`'s hub memory figures).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    vclink_hub::main_entry()
}
