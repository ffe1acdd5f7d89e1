//! Thin binary: everything lives in the `vclink_agent` library so tests can reach it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vclink_agent::main_entry()
}
