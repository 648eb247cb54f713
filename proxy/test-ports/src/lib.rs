//! Loopback ports for tests.
//!
//! nextest runs every test in a process of its own, many at once, and the tests start servers:
//! upstreams, `dime-edge` processes, PostgreSQL. A port found by binding port 0 comes from the
//! kernel's ephemeral range, the range every outgoing connection takes its local port from, and
//! once it is closed another test may be given it a moment later, as a listener or as the local
//! end of a connection. A test that then starts a server there, or restarts one there after
//! killing it, fails with "address in use"; a test that counts on nobody listening there
//! reaches a stranger.
//!
//! [`free_port`] hands out each port once across every process on the machine that asks: ports
//! come in turn from a counter kept in a locked file in the temporary directory, below the
//! ephemeral range (`net.ipv4.ip_local_port_range`), where no connection is given its local
//! port. A port something else already holds is skipped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lowest port handed out: above the ports `make run` and the test configs name (18080,
/// 18081, ...) and every port a browser refuses to fetch from.
const FIRST: u16 = 20_000;

/// The fewest ports a span below or above the ephemeral range must hold to be used.
const AT_LEAST: u16 = 1_000;

/// A loopback port no other caller of this function has been given since the counter last
/// went round (12,768 ports on a stock kernel), and that nothing held when it was handed
/// out.
///
/// Panics with the reason if the counter file cannot be used or every port is taken: a test
/// without a port cannot run.
pub fn free_port() -> u16 {
    take(
        &std::env::temp_dir().join("dime-test-ports"),
        span(&ephemeral_range()),
    )
}

/// The next free port of `span` by the counter in the file at `path`.
fn take(path: &Path, span: Range<u16>) -> u16 {
    let len = u32::from(span.end - span.start);
    let mut counter = Counter::lock(path);
    let mut next = counter.read();
    for _ in 0..len {
        let port = span.start + (next % len) as u16;
        next = next.wrapping_add(1);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            counter.write(next);
            return port;
        }
    }
    panic!(
        "no free loopback port in {}..{}: every one is in use",
        span.start, span.end
    );
}

/// The kernel's ephemeral port range, or Linux's default when it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(PATH).unwrap_or_default();
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    match (bounds.next(), bounds.next()) {
        (Some(Ok(low)), Some(Ok(high))) => (low, high),
        _ => (32_768, 60_999),
    }
}

/// Where test ports come from: below the ephemeral range, or above it when too little is left
/// below.
fn span(&(low, high): &(u16, u16)) -> Range<u16> {
    if low >= FIRST + AT_LEAST {
        FIRST..low
    } else if high <= u16::MAX - AT_LEAST {
        high + 1..u16::MAX
    } else {
        panic!(
            "the ephemeral port range {low}-{high} (net.ipv4.ip_local_port_range) leaves fewer \
             than {AT_LEAST} ports for tests on either side; narrow it"
        )
    }
}

/// The shared counter, held under an exclusive `flock` until dropped.
struct Counter {
    file: File,
    path: PathBuf,
}

impl Counter {
    fn lock(path: &Path) -> Counter {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap_or_else(|e| panic!("open the port counter {}: {e}", path.display()));
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            panic!(
                "lock the port counter {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Counter {
            file,
            path: path.to_path_buf(),
        }
    }

    /// The next turn; 0 for a new or unreadable counter (turns only spread ports out, a port
    /// handed out twice is still checked free).
    fn read(&mut self) -> u32 {
        let mut text = String::new();
        let _ = self.file.read_to_string(&mut text);
        text.trim().parse().unwrap_or(0)
    }

    fn write(&mut self, next: u32) {
        let written = self
            .file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.set_len(0))
            .and_then(|()| self.file.write_all(next.to_string().as_bytes()));
        if let Err(e) = written {
            panic!("write the port counter {}: {e}", self.path.display());
        }
    }
}
// The lock goes with the descriptor when `file` is dropped.

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ports_come_from_outside_the_ephemeral_range() {
        assert_eq!(span(&(32_768, 60_999)), 20_000..32_768);
        assert_eq!(span(&(1_024, 60_000)), 60_001..65_535);
        let (low, high) = ephemeral_range();
        let port = free_port();
        assert!(!(low..=high).contains(&port), "{port} in {low}-{high}");
    }

    #[test]
    #[should_panic(expected = "leaves fewer than 1000 ports for tests on either side")]
    fn an_ephemeral_range_over_every_port_is_refused_with_the_reason() {
        span(&(1_024, 65_000));
    }

    #[test]
    fn processes_asking_at_once_never_share_a_port() {
        // Threads stand in for test processes: each call opens and locks the file anew.
        let handles: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..50).map(|_| free_port()).collect::<Vec<_>>()))
            .collect();
        let ports: Vec<u16> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let distinct: HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
    }

    #[test]
    fn ports_are_handed_out_in_turn_and_one_in_use_is_skipped() {
        let dir = std::env::temp_dir().join(format!("dime-test-ports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let counter = dir.join("counter");
        // A port this test holds, and one nobody else is handed.
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let held_port = held.local_addr().unwrap().port();
        let freed = free_port();
        // Only the held port: nothing to hand out, and the message says so.
        let only_held = std::panic::catch_unwind(|| take(&counter, held_port..held_port + 1));
        let message = only_held.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("every one is in use"), "{message}");
        // A span of one free port: handed out, and the counter moved on.
        std::fs::write(&counter, "41").unwrap();
        assert_eq!(take(&counter, freed..freed + 1), freed);
        assert_eq!(std::fs::read_to_string(&counter).unwrap(), "42");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
