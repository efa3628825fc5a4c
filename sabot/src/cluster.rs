//! Cluster mode for any job (feature `cluster`): one call gives a binary built on the
//! facade the roles of a Sabot cluster.
//!
//! ```no_run
//! use std::time::Duration;
//! use sabot::{Aggregate, StreamEnv, TumblingWindow};
//! use std::sync::Arc;
//! use sabot::arrow::array::Int64Array;
//! use sabot::arrow::datatypes::{DataType, Field, Schema};
//! use sabot::arrow::record_batch::RecordBatch;
//! use sabot::operators::{CollectSink, VecSource};
//!
//! /// Three payments (account, amount, ts); a real job reads Kafka or files.
//! fn my_source() -> VecSource {
//!     let schema = Arc::new(Schema::new(vec![
//!         Field::new("account", DataType::Int64, false),
//!         Field::new("amount", DataType::Int64, false),
//!         Field::new("ts", DataType::Int64, false),
//!     ]));
//!     let batch = RecordBatch::try_new(schema.clone(), vec![
//!         Arc::new(Int64Array::from(vec![1, 2, 1])),
//!         Arc::new(Int64Array::from(vec![500, 70, 900])),
//!         Arc::new(Int64Array::from(vec![1_000, 2_000, 3_000])),
//!     ]).expect("columns match the schema");
//!     VecSource::new(schema, vec![batch])
//! }
//!
//! fn my_sink() -> CollectSink {
//!     CollectSink::new().0
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     sabot::cluster::main(|env: &StreamEnv| {
//!         env.set_parallelism(4);
//!         env.source(my_source())
//!             .with_watermarks("ts", Duration::from_secs(1))
//!             .key_by(&["account"])
//!             .window(TumblingWindow::of(Duration::from_secs(60)))
//!             .aggregate([Aggregate::sum("amount")])
//!             .sink(my_sink());
//!         Ok(())
//!     })
//! }
//! ```
//!
//! The binary then has three commands:
//! - `run`: the whole job in this process.
//! - `coordinator [--listen ADDR]`: builds the job (for its fingerprint and
//!   parallelism), waits for workers, places the job's subtasks on their slots, watches
//!   them, and restarts the job when a worker fails or is lost (its restart strategy:
//!   `--restart-attempts`, `--restart-delay-ms`). It prints every change of the job's
//!   state and ends when the job does: status 0 when it finished.
//! - `worker --coordinator ADDR [--data ADDR] [--slots N]`: registers with the
//!   coordinator (which refuses a worker whose job differs, naming each difference) and
//!   runs each attempt it is given as a child process of the same binary and arguments,
//!   so that cancelling an attempt is killing that process.
//!
//! One coordinator runs one job (as Flink's application mode). A job with checkpoints
//! (into a folder every worker sees) continues a restarted attempt from the newest
//! checkpoint: worker 0 of the attempt runs the checkpoint coordinator, the others
//! report to it over the network. Without checkpoints a restarted attempt starts its
//! input again, so its sinks must tolerate a rerun (files rewritten per subtask, or an
//! idempotent store).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use sabot_cluster::service::{
    Coordinator, CoordinatorConfig, ProcessAttempts, WorkerConfig, deployment_from_env,
    exit_with_parent, run_worker,
};
use sabot_cluster::{Deployment, Fingerprint, JobState, MasterConfig, RestartStrategy};
use sabot_runtime::Cluster;

use crate::{Error, StreamEnv};

/// The coordinator's options.
#[derive(clap::Args, Clone, Debug)]
pub struct CoordinatorArgs {
    /// Where to listen for workers.
    #[arg(long, default_value = "0.0.0.0:6123")]
    pub listen: SocketAddr,
    /// How failures are retried: `fixed` (each restart after --restart-delay-ms),
    /// `exponential` (the delay doubles per failure up to --restart-max-delay-ms, and
    /// resets after an hour up) or `none` (the first failure fails the job).
    #[arg(long, value_enum, default_value_t = RestartKind::Fixed)]
    pub restart_strategy: RestartKind,
    /// Restarts allowed (in a row, for `exponential`).
    #[arg(long, default_value_t = 3)]
    pub restart_attempts: u32,
    /// Wait before a restart (the first one, for `exponential`), in ms.
    #[arg(long, default_value_t = 1000)]
    pub restart_delay_ms: u64,
    /// The longest wait before a restart with `exponential`, in ms.
    #[arg(long, default_value_t = 300_000)]
    pub restart_max_delay_ms: u64,
    /// A worker not heard from for this long is lost, in ms.
    #[arg(long, default_value_t = 5000)]
    pub heartbeat_timeout_ms: u64,
    /// Fail the job after waiting this long for enough slots, in seconds.
    #[arg(long, default_value_t = 300)]
    pub slot_timeout_s: u64,
}

/// A restart strategy's kind (see [`CoordinatorArgs::restart_strategy`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartKind {
    /// The same delay before each restart.
    Fixed,
    /// A delay doubling per failure.
    Exponential,
    /// No restarts.
    None,
}

impl CoordinatorArgs {
    /// The restart strategy these options name.
    pub fn restart(&self) -> RestartStrategy {
        let delay = Duration::from_millis(self.restart_delay_ms);
        match self.restart_strategy {
            RestartKind::Fixed => RestartStrategy::fixed_delay(self.restart_attempts, delay),
            RestartKind::Exponential => RestartStrategy::ExponentialDelay {
                initial: delay,
                max: Duration::from_millis(self.restart_max_delay_ms).max(delay),
                multiplier: 2.0,
                reset_after: Duration::from_secs(3600),
                attempts: self.restart_attempts,
            },
            RestartKind::None => RestartStrategy::None,
        }
    }
}

/// A worker's options.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerArgs {
    /// The coordinator's address.
    #[arg(long)]
    pub coordinator: SocketAddr,
    /// Where this worker's data plane listens: the address its peers reach it at (port
    /// 0: a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub data: SocketAddr,
    /// Subtask slots offered (default: the number of cores).
    #[arg(long)]
    pub slots: Option<usize>,
    /// The worker's name, unique in the cluster (default: its data address).
    #[arg(long)]
    pub name: Option<String>,
    /// How long to keep trying to reach the coordinator, in seconds.
    #[arg(long, default_value_t = 60)]
    pub reconnect_timeout_s: u64,
}

/// What this process is in the cluster.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum Role {
    /// Run the whole job in this process.
    Run,
    /// Coordinate the job's workers.
    Coordinator(CoordinatorArgs),
    /// Offer slots to a coordinator and run the attempts it deploys.
    Worker(WorkerArgs),
}

#[derive(clap::Parser, Debug)]
#[command(about = "A Sabot job: run it here, or as a coordinator or worker of a cluster")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

/// Why a cluster role failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The coordinator could not start.
    #[error(transparent)]
    Coordinator(#[from] sabot_cluster::service::StartError),
    /// The worker stopped.
    #[error(transparent)]
    Worker(#[from] sabot_cluster::service::WorkerError),
    /// An attempt's process got a bad deployment.
    #[error(transparent)]
    Deployment(#[from] sabot_cluster::protocol::ProtocolError),
    /// The job failed or was cancelled.
    #[error("the job ended {state}: {}", failure.as_deref().unwrap_or("no failure recorded"))]
    JobEnded {
        /// Its final state.
        state: JobState,
        /// Its last failure.
        failure: Option<String>,
    },
    /// This program's own path is unknown (attempts run it again).
    #[error("cannot find this program's executable to run attempts")]
    Executable(#[source] std::io::Error),
    /// The data address could not be resolved to a free port.
    #[error("cannot pick a data port on {addr}")]
    DataPort {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Parses the command line (`run`, `coordinator`, `worker`) and plays that role for the
/// job `build` makes; prints the error chain of a failure and returns its status.
pub fn main(build: impl Fn(&StreamEnv) -> Result<(), Error>) -> ExitCode {
    // An attempt's process has the worker's arguments: it runs its part first.
    let role = if deployment_from_env().is_some() {
        Role::Run
    } else {
        <Cli as clap::Parser>::parse().role
    };
    match run(role, build) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", sabot_core::ErrorChain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Plays `role` for the job `build` makes (for binaries with their own command line;
/// [`main`] parses one). In an attempt's process (started by a worker) it runs that
/// attempt, whatever `role` says.
pub fn run(role: Role, build: impl Fn(&StreamEnv) -> Result<(), Error>) -> Result<(), Error> {
    if let Some(deployment) = deployment_from_env() {
        let (index, deployment) = deployment.map_err(ClusterError::from)?;
        return run_attempt(index, &deployment, &build);
    }
    match role {
        Role::Run => {
            let env = StreamEnv::new();
            build(&env)?;
            env.execute()?;
            Ok(())
        }
        Role::Coordinator(args) => coordinate(&args, &build),
        Role::Worker(args) => work(&args, &build),
    }
}

/// The job's fingerprint and parallelism, from a build without a cluster.
fn describe(
    build: &impl Fn(&StreamEnv) -> Result<(), Error>,
) -> Result<(Fingerprint, usize), Error> {
    let env = StreamEnv::new();
    build(&env)?;
    let job = env.build()?;
    let fingerprint = job
        .fingerprint()
        .into_iter()
        .fold(Fingerprint::new(), |f, (k, v)| f.with(k, v));
    Ok((fingerprint, job.config().parallelism))
}

fn coordinate(
    args: &CoordinatorArgs,
    build: &impl Fn(&StreamEnv) -> Result<(), Error>,
) -> Result<(), Error> {
    let (fingerprint, parallelism) = describe(build)?;
    let mut master = MasterConfig::new(parallelism);
    master.restart = args.restart();
    master.heartbeat_timeout = Duration::from_millis(args.heartbeat_timeout_ms);
    master.slot_timeout = Duration::from_secs(args.slot_timeout_s);
    let mut config = CoordinatorConfig::new(master, fingerprint);
    config.heartbeat_interval = Duration::from_millis((args.heartbeat_timeout_ms / 5).max(50));
    let coordinator = Coordinator::start(args.listen, config).map_err(ClusterError::from)?;
    eprintln!(
        "sabot coordinator: listening on {}, the job needs {parallelism} slots",
        coordinator.local_addr()
    );
    let mut shown = None;
    let state = loop {
        let state = coordinator.wait(Duration::from_millis(250));
        let status = coordinator.status();
        let line = format!(
            "job {}: attempt {}, {} restarts, slots {}/{}, workers [{}]",
            status.state,
            status.attempt.map_or(0, |a| a.0),
            status.restarts,
            status.slots.0,
            status.slots.1,
            status
                .workers
                .iter()
                .map(|w| format!("{} ({}, {} of {} slots)", w.name, w.id, w.used, w.slots))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if shown.as_ref() != Some(&line) {
            eprintln!("{line}");
            shown = Some(line);
        }
        if state.is_terminal() {
            break state;
        }
    };
    // The workers are told the job is over: let that reach them before the service stops.
    std::thread::sleep(Duration::from_millis(300));
    match state {
        JobState::Finished => Ok(()),
        state => Err(ClusterError::JobEnded {
            state,
            failure: coordinator.status().failure,
        }
        .into()),
    }
}

fn work(args: &WorkerArgs, build: &impl Fn(&StreamEnv) -> Result<(), Error>) -> Result<(), Error> {
    let (fingerprint, _) = describe(build)?;
    let data = if args.data.port() == 0 {
        // A port of its own, the same for every attempt (peers are told it).
        let l =
            std::net::TcpListener::bind(args.data).map_err(|source| ClusterError::DataPort {
                addr: args.data,
                source,
            })?;
        l.local_addr().map_err(|source| ClusterError::DataPort {
            addr: args.data,
            source,
        })?
    } else {
        args.data
    };
    let slots = args
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let name = args.name.clone().unwrap_or_else(|| data.to_string());
    eprintln!(
        "sabot worker `{name}`: {slots} slots, data plane on {data}, coordinator {}",
        args.coordinator
    );
    let program = std::env::current_exe().map_err(ClusterError::Executable)?;
    let attempts = ProcessAttempts::new(
        program,
        std::env::args_os().skip(1).collect::<Vec<OsString>>(),
    );
    let config = WorkerConfig {
        coordinator: args.coordinator,
        name,
        slots,
        data_addr: data,
        fingerprint,
        reconnect_timeout: Duration::from_secs(args.reconnect_timeout_s),
    };
    run_worker(config, attempts).map_err(ClusterError::from)?;
    Ok(())
}

fn run_attempt(
    index: usize,
    deployment: &Deployment,
    build: &impl Fn(&StreamEnv) -> Result<(), Error>,
) -> Result<(), Error> {
    exit_with_parent();
    let env = StreamEnv::new();
    build(&env)?;
    let workers = deployment.workers.iter().map(|(_, a)| *a).collect();
    // Channels of this attempt only: a subtask left over from an earlier one is refused.
    let flight = sabot_shuffle::flight::FlightConfig::default().with_session(deployment.attempt.0);
    env.set_cluster(
        Cluster::new(workers, index)
            .with_owners(deployment.owners.clone())
            .with_flight(flight),
    );
    env.execute()?;
    Ok(())
}
