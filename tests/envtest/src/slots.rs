//! A machine-wide limit on how many tests run API servers at once, so unit tests can run
//! fully parallel while the tests that start etcd + kube-apiserver queue up instead of
//! all starting together on a small machine (where more than two at once only makes
//! every one of them slower and their deadlines flaky).
//!
//! The limit is `VCLINK_MAX_APISERVERS` (default 2; `0` means no limit) lock files
//! `slot-<i>.lock` under `~/.cache/vclink/slots` (`XDG_CACHE_HOME` honoured), each
//! taken with an exclusive `flock`, so it holds across test binaries and the kernel
//! frees a slot when its process dies.
//!
//! A slot belongs to a *test*, not to a server: the first [`crate::Cluster`] a test
//! thread starts takes one, every further cluster of that test shares it, and it is
//! freed when the test's last cluster is dropped. A test holding a slot therefore never
//! waits for a second one (which could deadlock two tests each holding one). Tests are
//! told apart by the thread that starts their clusters: the libtest test thread (a
//! `#[tokio::test]` body runs there, also with the multi-thread flavour). Clusters
//! started concurrently by one test (`join_all`) share the one acquisition.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Environment variable with the number of slots.
pub const MAX_APISERVERS_ENV: &str = "VCLINK_MAX_APISERVERS";
/// Slots when the variable is unset or not a number.
pub const DEFAULT_MAX_APISERVERS: usize = 2;
/// How often a waiting test retries, and how often it says it is still waiting.
const POLL: Duration = Duration::from_millis(200);
const NOTE_EVERY: Duration = Duration::from_secs(30);

/// Why no slot could be taken.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The lock directory or a lock file could not be created or locked.
    #[error("cannot use the API-server slot lock {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One test's share of the limit; the slot is freed when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Held, not read: the last clone's drop frees the slot.
    _group: Arc<Group>,
}

#[derive(Debug, Default)]
struct Group {
    /// The locked file (`None` when there is no limit), taken once per group.
    held: tokio::sync::OnceCell<Option<File>>,
}

/// Groups by test thread; a dead `Weak` means that test's clusters are all gone.
static GROUPS: Mutex<Option<HashMap<ThreadId, Weak<Group>>>> = Mutex::new(None);

impl Slot {
    /// This test's slot: shares the one its other clusters hold, or waits for a free
    /// one (printing a note every 30 s while it waits).
    pub async fn for_this_test() -> Result<Slot, SlotError> {
        Self::join(max_slots(), slot_dir()).await
    }

    /// [`Slot::for_this_test`] with `max` slots in `dir`.
    async fn join(max: usize, dir: PathBuf) -> Result<Slot, SlotError> {
        let group = {
            // Synchronously, so concurrent starts of one test join one group.
            let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
            let groups = groups.get_or_insert_with(HashMap::new);
            groups.retain(|_, g| g.strong_count() > 0);
            let id = std::thread::current().id();
            match groups.get(&id).and_then(Weak::upgrade) {
                Some(g) => g,
                None => {
                    let g = Arc::new(Group::default());
                    groups.insert(id, Arc::downgrade(&g));
                    g
                }
            }
        };
        group.held.get_or_try_init(|| acquire(max, &dir)).await?;
        Ok(Slot { _group: group })
    }
}

/// `VCLINK_MAX_APISERVERS`, default 2.
pub fn max_slots() -> usize {
    std::env::var(MAX_APISERVERS_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_APISERVERS)
}

fn slot_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("vclink").join("slots")
}

/// Takes the first free of `max` lock files in `dir`, polling until one is free;
/// `Ok(None)` when `max` is 0 (no limit).
async fn acquire(max: usize, dir: &std::path::Path) -> Result<Option<File>, SlotError> {
    if max == 0 {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).map_err(|source| SlotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = (0..max)
        .map(|i| {
            let path = dir.join(format!("slot-{i}.lock"));
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map(|f| (path.clone(), f))
                .map_err(|source| SlotError::Io { path, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let mut next_note = start + NOTE_EVERY;
    loop {
        for (path, file) in &files {
            match file.try_lock() {
                Ok(()) => {
                    let held = file.try_clone().map_err(|source| SlotError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    return Ok(Some(held));
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(source)) => {
                    return Err(SlotError::Io {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        if Instant::now() >= next_note {
            eprintln!(
                "[vclink envtest] waiting for an API-server slot ({max} in use by other tests, {}s so far; {MAX_APISERVERS_ENV} sets the limit)",
                start.elapsed().as_secs()
            );
            next_note += NOTE_EVERY;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_exclusive_and_freed_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = acquire(2, dir.path()).await.expect("a").expect("limited");
        let b = acquire(2, dir.path()).await.expect("b").expect("limited");
        // Both slots taken: a third waits until one is dropped.
        let third = tokio::spawn({
            let dir = dir.path().to_path_buf();
            async move { acquire(2, &dir).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !third.is_finished(),
            "a third test must wait while both slots are held"
        );
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("the freed slot is taken in time")
            .expect("join")
            .expect("acquire");
        assert!(c.is_some());
        drop((b, c));
    }

    #[tokio::test]
    async fn no_limit_takes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(acquire(0, dir.path()).await.expect("ok").is_none());
        assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none());
    }

    #[tokio::test]
    async fn one_test_shares_one_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        // One slot only: a second acquisition by this test would wait forever.
        let a = Slot::join(1, path.clone()).await.expect("slot");
        let (b, c) = tokio::join!(Slot::join(1, path.clone()), Slot::join(1, path.clone()));
        let (b, c) = (b.expect("b"), c.expect("c"));
        assert!(Arc::ptr_eq(&a._group, &b._group) && Arc::ptr_eq(&a._group, &c._group));
        // Another test (thread) needs its own slot, so it waits until this test's
        // clusters are all gone.
        let other = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(Slot::join(1, path))
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(!other.is_finished(), "another test waits for the only slot");
        drop((a, b, c));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !other.is_finished() {
            assert!(Instant::now() < deadline, "the freed slot was not taken");
            std::thread::sleep(Duration::from_millis(50));
        }
        other.join().expect("thread").expect("slot");
    }
}
