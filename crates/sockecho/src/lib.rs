//! sockecho: an echo server and client for TCP, UDP and Unix sockets over
//! IPv4 and IPv6.
//!
//! It began as the first lesson of socket programming (a server that binds
//! `127.0.0.1:9999`, listens and greets; a client that connects and prints
//! the greeting) and grows into the tool network engineers reach for first.
//! The binary is a thin shell over this library, so another project's tests
//! can start an echo server in-process:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sockecho::Error> {
//! use sockecho::{Handles, ServeConfig, Server};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = ServeConfig::new(vec!["tcp://127.0.0.1:0".parse()?]);
//! let server = Server::bind(config).await?;
//! let addr = server.local_endpoints()[0].to_string(); // the real port
//! let stop = CancellationToken::new();
//! let task = tokio::spawn(server.run(Handles::stop_on(stop.clone())));
//!
//! let mut client = tokio::net::TcpStream::connect(addr.trim_start_matches("tcp://"))
//!     .await
//!     .unwrap();
//! client.write_all(b"ping").await.unwrap();
//! let mut back = [0u8; 4];
//! client.read_exact(&mut back).await.unwrap();
//! assert_eq!(&back, b"ping");
//!
//! drop(client); // a connection still open at the stop gets the drain timeout
//! stop.cancel();
//! task.await.expect("server task")?;
//! # Ok(()) }
//! ```
//!
//! `examples/embedded_server.rs` does the same for TCP and UDP at once
//! (`cargo run -p sockecho --example embedded_server`).
//!
//! Start reading at [`endpoint`] (the address syntax every subcommand
//! shares), then `transport` (one stream type and one datagram type over
//! every socket family), then [`server`], [`service`] and [`client`]; the
//! load tools are [`ping`] and [`bench`](mod@bench), over the flow cores of
//! `sockecho-flow`, measuring into [`measure`] (`sockecho-measure`).
//!
//! This crate knows nothing of terminals, flags or exit codes: errors name
//! settings ([`error::Setting`]), events and trace lines go where the
//! caller's [`Events`] and [`trace::Tracer`] send them, and ping and bench
//! return what they measured for the caller to print.

// `unsafe` is denied everywhere but where a module says why it needs it
// (the io_uring drivers, TCP_INFO in `trace`, recvmmsg/sendmmsg and UDP GSO
// in `server::udp_batch`), each block with a `SAFETY:` note.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod client;
pub mod duration;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod guard;
pub mod metrics;
pub mod ping;
pub mod proxy;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod trace;
pub(crate) mod transport;

/// Latency histograms, statistics and bench reports (`sockecho-measure`).
pub use sockecho_measure as measure;

pub use client::{ConnectConfig, connect};
pub use endpoint::Endpoint;
pub use error::Error;
pub use events::{EventFormat, Events};
pub use server::{Handles, ServeConfig, Server};
pub use shutdown::Shutdown;
pub use transport::proxy::ProxyClient;
pub use transport::tls::{ClientTlsOptions, ServerTlsOptions, TlsFacts, parse_fingerprint};
