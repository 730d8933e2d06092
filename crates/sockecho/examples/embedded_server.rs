//! sockecho as a library: start an echo server inside your own program (or
//! your own tests) on ephemeral ports, find out where it listens, talk to it
//! with plain tokio sockets, and shut it down.
//!
//! ```sh
//! cargo run -p sockecho --example embedded_server
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use sockecho::endpoint::Host;
use sockecho::{Endpoint, Handles, ServeConfig, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Port 0: the kernel picks free ports, so tests running side by side
    // never collide.
    let endpoints = vec!["tcp://127.0.0.1:0".parse()?, "udp://127.0.0.1:0".parse()?];
    let mut config = ServeConfig::new(endpoints);
    // Connections still open at the stop get this long to finish.
    config.limits.drain_timeout = Duration::from_secs(1);

    // `bind` returns once every socket is listening: no sleep, no polling.
    let server = Server::bind(config).await?;
    let tcp = socket_addr(&server.local_endpoints()[0]);
    let udp = socket_addr(&server.local_endpoints()[1]);
    println!("serving tcp on {tcp} and udp on {udp}");

    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.run(Handles::stop_on(stop.clone())));

    // A stream round trip: what goes in comes back, byte for byte.
    let mut client = TcpStream::connect(tcp).await?;
    let message = b"hello from an embedded sockecho";
    client.write_all(message).await?;
    let mut echoed = vec![0; message.len()];
    client.read_exact(&mut echoed).await?;
    assert_eq!(echoed, message);
    println!("tcp echoed {:?}", String::from_utf8_lossy(&echoed));
    drop(client);

    // A datagram round trip. The server answers only ports above 1023 (its
    // reflection guard); an ephemeral client port always is.
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(b"one datagram", udp).await?;
    let mut buf = [0u8; 64];
    let (len, from) =
        tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf)).await??;
    assert_eq!((&buf[..len], from), (&b"one datagram"[..], udp));
    println!("udp echoed {:?}", String::from_utf8_lossy(&buf[..len]));

    // Stop accepting, drain, and wait for the server to finish.
    stop.cancel();
    serving.await??;
    println!("server stopped");
    Ok(())
}

/// The socket address of an IP endpoint that a server reported: always an
/// address literal, since the server fills in what it really bound.
fn socket_addr(endpoint: &Endpoint) -> SocketAddr {
    match endpoint.host_port().map(|hp| (&hp.host, hp.port)) {
        Some((Host::Ip(ip), port)) => SocketAddr::new(*ip, port),
        _ => panic!("{endpoint} is not an IP address"),
    }
}
