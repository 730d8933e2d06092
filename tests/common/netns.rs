//! Network namespaces a test makes for itself (`ip netns`, root only):
//! loss by iptables, an MTU, extra addresses, counters no other test
//! touches. Without the privileges, a test skips with a note, unless
//! `SOCKECHO_REQUIRE_INTEROP=1` (as CI sets) makes that a failure.

use std::process::Command;

use super::{BIN, Proc, Server, interop_required, run, unique};

/// A network namespace with its loopback up, deleted on drop (declare it
/// before the processes that run in it, so that it drops after them).
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes the namespace; `None` (with a note) where that needs
    /// privileges this run lacks, unless interop tests are required.
    pub fn create() -> Option<Netns> {
        let name = unique("netns");
        let made = Command::new("ip").args(["netns", "add", &name]).output();
        match made {
            Ok(out) if out.status.success() => {}
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => format!("cannot run `ip` (iproute2): {e}"),
                };
                return skip(&format!("cannot make a network namespace: {why}"));
            }
        }
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// Gives the namespace's processes a hosts file of their own:
    /// `ip netns exec` mounts `/etc/netns/NAME/hosts` over `/etc/hosts`
    /// (removed with the namespace).
    pub fn hosts(&self, text: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
        std::fs::write(format!("{dir}/hosts"), text).unwrap_or_else(|e| panic!("{dir}/hosts: {e}"));
    }

    /// Its name, for `ip -n NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME ARGV...`, as arguments to `ip`.
    pub fn wrap<'a>(&'a self, argv: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(argv);
        args
    }

    /// Runs `ARGV...` in the namespace to its end (within the tests' wait).
    pub fn exec(&self, argv: &[&str], stdin: &[u8]) -> super::Output {
        run("ip", &self.wrap(argv), stdin)
    }

    /// [`exec`](Netns::exec), which must succeed; its standard output.
    #[track_caller]
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv, b"");
        assert!(
            out.status.success(),
            "{argv:?} in {}: {:?} {}",
            self.name,
            out.status,
            out.stderr
        );
        out.stdout_text()
    }

    /// A long-running `ARGV...` in the namespace.
    pub fn spawn(&self, argv: &[&str]) -> Proc {
        Proc::spawn("ip", &self.wrap(argv))
    }

    /// `sockecho serve ENDPOINTS... OPTIONS...` inside the namespace, once
    /// every endpoint's `listen ok` line came.
    pub fn serve(&self, endpoints: &[&str], options: &[&str]) -> Server {
        let mut argv = vec![BIN, "serve"];
        argv.extend_from_slice(endpoints);
        argv.extend_from_slice(options);
        if std::env::var("SOCKECHO_TEST_ENGINE").is_ok_and(|e| e == "epoll") {
            argv.push("--epoll");
        }
        let proc = self.spawn(&argv);
        let endpoints = endpoints.iter().map(|_| proc.listen_ok()).collect();
        Server::new(proc, endpoints)
    }

    /// A counter of the namespace's UDP stack (`/proc/net/snmp`, e.g.
    /// `InDatagrams`).
    pub fn udp_counter(&self, name: &str) -> u64 {
        let snmp = self.exec_ok(&["cat", "/proc/net/snmp"]);
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
            panic!("no Udp lines in /proc/net/snmp: {snmp}");
        };
        let index = names
            .split_whitespace()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no Udp counter {name}: {names}"));
        values
            .split_whitespace()
            .nth(index)
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// A note and `None`, or a failure when interop tests are required.
pub fn skip<T>(why: &str) -> Option<T> {
    assert!(
        !interop_required(),
        "{why}; SOCKECHO_REQUIRE_INTEROP=1 says this test must run"
    );
    eprintln!("note: {why}; skipping this test");
    None
}
