//! The processes around the [`JobMaster`](crate::JobMaster) (feature `service`): the
//! coordinator's Arrow Flight endpoint, the worker's registration and heartbeat loop,
//! and attempts run as child processes.

mod coordinator;
mod process;
mod worker;

pub use coordinator::{Coordinator, CoordinatorConfig, StartError};
pub use process::{DEPLOYMENT_ENV, ProcessAttempts, deployment_from_env, exit_with_parent};
pub use worker::{Attempts, Reporter, WorkerConfig, WorkerError, run_worker};
