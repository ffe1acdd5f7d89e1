//! `vclink-hub` binary: everything lives in the library (see `vclink_hub::main_entry`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vclink_hub::main_entry()
}
