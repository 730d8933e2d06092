//! Descriptors for a bench's connections: each is a socket, and a run with
//! more connections than the process may open would otherwise fail part
//! way, with thousands of errors that say nothing about why.
//!
//! As load tools do (wrk, iperf3, h2load), the soft `RLIMIT_NOFILE` is
//! raised towards the hard limit when the run needs it; a run needing more
//! than even the hard limit allows is refused before anything starts,
//! with both numbers and what to do.
//!
//! The only `unsafe` is the two libc calls (`getrlimit`, `setrlimit`):
//! they take a pointer to a local `rlimit` that lives across the call.
#![allow(unsafe_code)]

use crate::error::{Error, Setting};

/// Descriptors each bench thread holds besides its connections: its
/// runtime's epoll instance and waker, an io_uring ring, and slack.
const PER_THREAD: u64 = 4;

/// Descriptors beyond the connections and threads: the main runtime,
/// standard streams, name resolution, the progress display.
const SLACK: u64 = 32;

/// Makes sure `connections` sockets on `threads` threads can be opened:
/// raises the soft descriptor limit if that is needed and allowed, or
/// says why not.
pub(super) fn ensure(connections: usize, threads: usize) -> Result<(), Error> {
    let open = open_now();
    let needed = open
        .saturating_add(connections as u64)
        .saturating_add(PER_THREAD.saturating_mul(threads as u64))
        .saturating_add(SLACK);
    let Some((soft, hard)) = limits() else {
        return Ok(()); // Cannot tell: let the run find out.
    };
    if needed <= soft {
        return Ok(());
    }
    if hard != libc::RLIM_INFINITY && needed > hard {
        return Err(Error::setting(
            Setting::Connections,
            format!(
                "{connections} connections need about {needed} file descriptors, but this \
                 process may open at most {hard} (its hard RLIMIT_NOFILE); raise it \
                 (`ulimit -n`, LimitNOFILE=) or use fewer connections"
            ),
        ));
    }
    // Up to the hard limit, as other load tools do; an unlimited hard
    // limit cannot be a soft one (the kernel caps it at nr_open), so then
    // only what the run needs.
    let raised = if hard == libc::RLIM_INFINITY {
        needed
    } else {
        hard
    };
    match set_soft(raised, hard) {
        Ok(()) => {
            tracing::debug!(from = soft, to = raised, "raised the descriptor limit");
            Ok(())
        }
        Err(e) => Err(Error::setting(
            Setting::Connections,
            format!(
                "{connections} connections need about {needed} file descriptors, but this \
                 process may open {soft} and raising that failed ({}); raise it \
                 (`ulimit -n`) or use fewer connections",
                crate::error::reason(&e)
            ),
        )),
    }
}

/// Descriptors open now, from `/proc/self/fd` (the listing's own one
/// included, a slight overcount); a guess where that cannot be read.
fn open_now() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(16, |dir| dir.count() as u64)
}

/// The soft and hard `RLIMIT_NOFILE`.
fn limits() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the whole call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some((limit.rlim_cur, limit.rlim_max))
}

/// Sets the soft `RLIMIT_NOFILE` to `soft`, keeping the hard one.
fn set_soft(soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit that outlives the call, which
    // only reads it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_fits_changes_nothing() {
        let before = limits().expect("getrlimit");
        ensure(1, 1).expect("one connection fits");
        assert_eq!(limits(), Some(before));
    }

    #[test]
    fn more_than_the_hard_limit_is_refused_with_the_numbers() {
        let (_, hard) = limits().expect("getrlimit");
        if hard == libc::RLIM_INFINITY || hard > 1 << 40 {
            return; // Nothing is more than an unlimited hard limit.
        }
        let err = ensure(hard as usize + 1, 1).expect_err("cannot fit");
        let text = err.to_string();
        assert!(text.starts_with("connections: "), "{text}");
        assert!(text.contains(&format!("at most {hard}")), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}
