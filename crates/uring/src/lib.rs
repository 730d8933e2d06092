//! The one io_uring layer of sockecho (Linux only): the server's engine and
//! both bench drivers build on it, so the kernel-shared memory rules live
//! here, once.
//!
//! - [`probe`]: what this kernel (and container) offers, asked once.
//! - [`Ring`]: a submission and completion queue, built with the fastest
//!   setup the kernel takes (single issuer, deferred task work) and the
//!   plain one otherwise. Queuing an entry that points at memory is
//!   [`Ring::push`], an `unsafe fn`: the caller promises the memory
//!   outlives the operation. Entries that point at nothing, or at memory
//!   the ring owns (cancels, timeouts, registered-file updates) have safe
//!   methods. The ring counts what is in flight, so a ring dropped with
//!   operations pending leaks the memory it owns rather than free it
//!   under the kernel.
//! - [`BufRing`]: a registered ring of provided receive buffers. The
//!   kernel picks a buffer when data arrives; the completion hands it out
//!   as an owned [`Buffer`] that gives itself back when dropped, so no
//!   path can forget to return one. The ring owns its buffer rings and
//!   unregisters them before their memory is freed.
//!
//! Entries are built with the `io-uring` crate's opcodes, re-exported here
//! so every user builds them against the same version. Errno values and
//! flags come from `libc`.

#![warn(missing_docs)]

#[cfg(target_os = "linux")]
mod bufring;
#[cfg(target_os = "linux")]
mod ring;

#[cfg(target_os = "linux")]
pub use bufring::{BufRing, Buffer};
#[cfg(target_os = "linux")]
pub use io_uring::{cqueue, opcode, squeue, types};
#[cfg(target_os = "linux")]
pub use ring::{Completion, Features, Ring, probe};
