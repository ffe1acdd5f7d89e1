//! CONTRACT STUB — to be implemented. Signatures are the agreed API; keep them.

/// True if a process with this PID is still alive (not a zombie).
pub fn is_alive(pid: u32) -> bool {
    let _ = pid;
    todo!()
}
