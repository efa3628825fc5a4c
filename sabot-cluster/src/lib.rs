//! The cluster control plane of the [Sabot](https://github.com/sabot-rs/sabot) stream
//! processor.
//!
//! - [`JobMaster`]: the coordinator's decisions as a pure state machine (no sockets,
//!   threads or clocks): worker registration with a job fingerprint check, heartbeats and
//!   their timeout, placement of subtasks on slots, attempts that fence older ones,
//!   failover (cancel every subtask of the attempt, restart from the newest complete
//!   checkpoint), waiting for slots with a timeout, and the job's status.
//! - [`RestartStrategy`]: none, fixed delay, or exponential delay, as Flink's.
//! - [`protocol`]: the control messages between the coordinator and its workers, as
//!   checksummed frames decoded as untrusted input.
//! - [`service`] (feature `service`, on by default): the coordinator's endpoint, the
//!   worker's loop, and attempts as child processes.
//!
//! ```
//! use std::time::Duration;
//! use sabot_cluster::{Command, Fingerprint, JobMaster, JobState, MasterConfig, Registration};
//!
//! let fp = Fingerprint::new().with("graph", "3f2a").with("parallelism", "2");
//! let mut master = JobMaster::new(MasterConfig::new(2), fp.clone(), None, 0);
//! let reg = |name: &str, port: u16| Registration {
//!     name: name.into(),
//!     instance: 1,
//!     data_addr: ([127, 0, 0, 1], port).into(),
//!     slots: 1,
//!     fingerprint: fp.clone(),
//!     wall_clock_ms: 0,
//! };
//! let a = master.register(reg("a", 7001), 0, 0).unwrap();
//! assert_eq!(master.state(), JobState::Created); // one slot of two
//! let b = master.register(reg("b", 7002), 10, 0).unwrap();
//! assert_eq!(master.state(), JobState::Running);
//! let deploys: Vec<Command> = std::iter::from_fn(|| master.next_command()).collect();
//! assert_eq!(deploys.len(), 2); // one per worker
//!
//! // Worker b's heartbeats stop: the attempt is cancelled and restarted once a
//! // replacement registers.
//! master.heartbeat(a, 15_000).unwrap();
//! master.tick(15_000);
//! assert_eq!(master.state(), JobState::Cancelling);
//! # let _ = b;
//! ```

mod master;
pub mod protocol;
mod restart;
#[cfg(all(feature = "service", not(sabot_loom)))]
pub mod service;

pub use master::{
    Attempt, Command, Deployment, Difference, Fingerprint, JobMaster, JobState, JobStatus,
    MasterConfig, Refusal, Registration, UnknownWorker, WorkerId, WorkerStatus,
};
pub use restart::{RestartStrategy, RestartTracker};
