//! The compute lock: daemons sharing one machine (a loopback trial, the
//! demo) take turns on its cores, so each job's measured span is that of a
//! node running alone.
//!
//! The holder writes its process id into the lock file. A waiter that finds
//! the holder's process stopped (SIGSTOP, a debugger) runs without the lock:
//! a stopped holder would otherwise hold every daemon sharing it, and with
//! them the tiles the coordinator re-dispatched away from it, until it is
//! resumed.

use std::fs::{File, TryLockError};
use std::time::{Duration, Instant};

/// How often a waiter tries the lock again: a few milliseconds of the
/// demo's jobs of hundreds, and five waiters cost the cores nothing.
const POLL: Duration = Duration::from_millis(5);
/// How often a waiter looks whether the holder's process is stopped.
const CHECK_HOLDER: Duration = Duration::from_secs(1);

/// Runs `f` holding the lock in `file`, or without it where it cannot be
/// taken (the file system refuses it, or its holder is stopped), saying so.
pub fn with_lock(file: &File, f: &mut dyn FnMut()) {
    let locked = take(file);
    f();
    if locked {
        let _ = file.unlock();
    }
}

/// Takes the lock, waiting while a running process holds it; `false` where
/// the job is to run without it.
fn take(file: &File) -> bool {
    let mut checked = Instant::now();
    let started = checked;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => {
                record_holder(file, std::process::id());
                return true;
            }
            Err(TryLockError::WouldBlock) => {
                if checked.elapsed() >= CHECK_HOLDER {
                    checked = Instant::now();
                    // A daemon waiting here (at start-up, its calibration)
                    // said nothing for as long as another held the lock.
                    if !said && started.elapsed() >= 2 * CHECK_HOLDER {
                        said = true;
                        let who =
                            holder(file).map_or_else(String::new, |p| format!(" (process {p})"));
                        tracing::info!("compute lock: waiting for its holder{who}");
                    }
                    if let Some(pid) = stopped_holder(file) {
                        tracing::warn!(
                            "compute lock: its holder, process {pid}, is stopped; running this job without it"
                        );
                        return false;
                    }
                }
                std::thread::sleep(POLL);
            }
            Err(TryLockError::Error(e)) => {
                tracing::warn!("compute lock: {e}; running this job without it");
                return false;
            }
        }
    }
}

/// Writes `pid` into the lock file as its holder's.
#[cfg(unix)]
fn record_holder(file: &File, pid: u32) {
    use std::os::unix::fs::FileExt;
    // Padded to a fixed width, so a shorter id leaves no digits behind.
    let _ = file.write_at(format!("{pid:>12}\n").as_bytes(), 0);
}

#[cfg(not(unix))]
fn record_holder(_: &File, _: u32) {}

/// The holder's process id, as it wrote it.
#[cfg(unix)]
fn holder(file: &File) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 13];
    let n = file.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

#[cfg(not(unix))]
fn holder(_: &File) -> Option<u32> {
    None
}

/// The holder's process id, where that process is stopped.
#[cfg(unix)]
fn stopped_holder(file: &File) -> Option<u32> {
    let pid = holder(file)?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    is_stopped(&stat).then_some(pid)
}

#[cfg(not(unix))]
fn stopped_holder(_: &File) -> Option<u32> {
    None
}

/// Whether a `/proc/PID/stat` line says the process is stopped: its state,
/// the field after the parenthesised command name, is `T` (or `t`, stopped
/// by a tracer).
fn is_stopped(stat: &str) -> bool {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|s| s == "T" || s == "t")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_state_is_read_after_the_command_name() {
        assert!(is_stopped("1446 (tessera) T 1 1446 1 0 -1"));
        assert!(is_stopped("7 (a) b) t 1"));
        assert!(!is_stopped("1446 (tessera) S 1 1446"));
        // A command name that looks like a state does not count.
        assert!(!is_stopped("9 (T) R 1"));
        assert!(!is_stopped("garbage"));
    }

    /// A lock whose holder is stopped is run without, after about a second;
    /// one whose holder runs is waited for.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_job_runs_without_the_lock_while_its_holder_is_stopped() {
        let path = std::env::temp_dir().join(format!("tessera-lock-{}", std::process::id()));
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .expect("lock file")
        };
        let (mine, other) = (open(), open());
        // Held here (a running process): another handle waits for it.
        assert!(take(&mine));
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let locked = take(&other);
            (locked, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(1500));
        mine.unlock().expect("unlock");
        let (locked, waited) = waiter.join().expect("waiter");
        assert!(
            locked && waited >= Duration::from_millis(1400),
            "{waited:?}"
        );
        // A holder whose process is stopped: a child stopped with SIGSTOP,
        // its id written where a holder's goes.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(stopped.success());
        let held = open();
        held.try_lock().expect("free");
        record_holder(&held, child.id());
        // Give the kernel a moment to show the child stopped.
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert!(!take(&open()), "ran without the lock");
        assert!(started.elapsed() < Duration::from_secs(3));
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
    }
}
