//! The `sabot` command-line tool.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use sabot::StreamEnv;
use sabot::arrow::array::{AsArray, RecordBatch};
use sabot::arrow::compute::concat_batches;
use sabot::arrow::datatypes::{Float64Type, Int64Type};
use sabot::arrow::util::display::array_value_to_string;
use sabot::demo::{
    BASE_TIME_MS, FraudRules, GeneratorConfig, KafkaDemo, SPIKE_LATE_RECORDS, TransactionGenerator,
    fraud_job, fraud_job_with_output,
};
use sabot::kafka::admin::OutRecord;
use sabot::operators::LATE_RECORDS_DROPPED;
use sabot::runtime::{Cluster, SOURCE_RECORDS};
use sabot::state::{RocksDbConfig, StateConfig};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: operators allocate and drop Arrow buffers of
/// a few hundred KiB at every batch, which glibc's allocator hands back to the kernel and
/// faults in again (the windowed count over 1M keys runs about 1.4x faster on mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sabot: stream processing with Flink's guarantees on Arrow columnar batches.
#[derive(Debug, Parser)]
#[command(name = "sabot", version, about, long_about = None)]
struct Cli {
    /// Log level filter (error, warn, info, debug, trace, or a tracing directive).
    /// The RUST_LOG environment variable overrides it.
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the fraud-detection demo on a built-in, seeded transaction generator.
    ///
    /// Transactions are keyed by account; the job flags accounts whose spend in a
    /// tumbling event-time window exceeds a threshold, and transactions far above the
    /// account's running average. It ends with throughput, alert counts and a sample.
    Demo(DemoArgs),
    /// Run one worker process of the fraud demo split over several processes.
    ///
    /// Start one `sabot worker` per address in --workers, each with its --index and the
    /// same demo options. Subtask s of every operator runs on worker s % (number of
    /// workers); the workers exchange batches, watermarks and end-of-stream over Arrow
    /// Flight. Each worker reports (and with --output writes) the alerts of its own
    /// subtasks: together they are the alerts of `sabot demo` with the same options.
    Worker(WorkerArgs),
    /// Show the checkpoints in a checkpoint folder.
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
    /// Nexmark, the benchmark streaming engines are compared on: run a query on the
    /// built-in generator, or write the generator's events to files.
    #[command(subcommand)]
    Nexmark(NexmarkCommand),
    /// List or create Kafka topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Send lines from standard input to a Kafka topic, one message per line
    /// (`KEY<sep>VALUE` with --key-separator).
    Produce(ProduceArgs),
    /// Print the messages of a Kafka topic up to its current end, one per line.
    Consume(ConsumeArgs),
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// List the topics and their partition counts.
    List {
        /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT].
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
    },
    /// Create a topic.
    Create {
        /// The topic's name.
        name: String,
        /// Its number of partitions.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100_000))]
        partitions: i32,
        /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT].
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
    },
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// The topic to write to.
    #[arg(long)]
    topic: String,
    /// Split each line at the first occurrence of this text into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// A librdkafka producer property, KEY=VALUE (repeatable), such as
    /// compression.type=zstd.
    #[arg(long = "producer-property", value_parser = parse_property)]
    producer_properties: Vec<(String, String)>,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT].
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
}

fn parse_property(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    /// The topic to read.
    #[arg(long)]
    topic: String,
    /// Show only committed transactions' records (read_committed).
    #[arg(long)]
    read_committed: bool,
    /// Print keys too, as KEY<TAB>VALUE.
    #[arg(long)]
    keys: bool,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT].
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
}

#[derive(Debug, Subcommand)]
enum NexmarkCommand {
    /// Run one query on generated events; ends with events/s, result rows and
    /// checkpoints.
    Run(NexmarkRunArgs),
    /// Write persons, auctions and bids to person.*, auction.* and bid.* files, so other
    /// systems can run the same input.
    Generate(NexmarkGenerateArgs),
}

#[derive(Debug, Args)]
struct NexmarkRunArgs {
    /// The query: q0, q1, q2, q3, q4, q5, q7, q8, q11 or q12.
    #[arg(long, value_parser = parse_query)]
    query: sabot::nexmark::Query,

    /// Events to generate, all kinds together (46 of every 50 are bids).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,

    /// Events per second of event time.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    rate: u64,

    /// Subtasks per operator (default: the number of cores).
    #[arg(long)]
    parallelism: Option<usize>,

    /// Seed of the generator: the same seed gives the same events.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Where stateful operators keep their state.
    #[arg(long, value_enum, default_value_t = StateKind::Memory)]
    state: StateKind,

    /// Folder for RocksDB's working files (with --state rocksdb).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,

    /// Take checkpoints into this folder; a run on a folder that holds a complete
    /// checkpoint continues from the newest one.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<std::path::PathBuf>,

    /// Milliseconds between checkpoints.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_interval: u64,

    /// Continue from this checkpoint of --checkpoint-dir instead of the newest one. For
    /// when the newest checkpoint is damaged: remove the output committed after this
    /// checkpoint first (the file sink refuses to start while it is there).
    #[arg(long, value_name = "ID", requires = "checkpoint_dir")]
    restore_from: Option<u64>,

    /// Write the results as CSV part files (with a header) into this folder, through the
    /// exactly-once file sink: `<query>-<subtask>-<checkpoint>.csv`, or
    /// `<query>-<subtask>-final.csv` without checkpoints. Without it the results are
    /// counted and dropped.
    #[arg(long, value_name = "DIR")]
    output: Option<std::path::PathBuf>,

    /// Do not show a progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
struct NexmarkGenerateArgs {
    /// Events to generate, all kinds together.
    #[arg(long)]
    events: u64,

    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Events per second of event time.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    rate: u64,

    /// The folder to write person, auction and bid files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: std::path::PathBuf,

    /// File format: CSV with a header, or Arrow IPC files.
    #[arg(long, value_enum, default_value_t = FileFormat::Csv)]
    format: FileFormat,
}

/// Output file format of `sabot nexmark generate`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum FileFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// Arrow IPC files.
    Arrow,
}

fn parse_query(s: &str) -> std::result::Result<sabot::nexmark::Query, String> {
    sabot::nexmark::Query::parse(s).ok_or_else(|| {
        format!(
            "unknown query `{s}`: one of {}",
            sabot::nexmark::Query::ALL
                .iter()
                .map(|q| q.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

#[derive(Debug, Subcommand)]
enum CheckpointsCommand {
    /// List every checkpoint in the folder, complete or not, oldest first.
    List {
        /// The checkpoint folder (a job's --checkpoint-dir).
        dir: std::path::PathBuf,
    },
    /// Show one checkpoint: its metadata and files, and whether every file is intact.
    Inspect {
        /// The checkpoint folder (a job's --checkpoint-dir).
        dir: std::path::PathBuf,
        /// The checkpoint to show (default: the newest complete one).
        #[arg(long)]
        id: Option<u64>,
    },
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// Every worker's shuffle address (host:port), comma-separated, in worker order; the
    /// same list for every worker.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "ADDR,ADDR,..."
    )]
    workers: Vec<std::net::SocketAddr>,

    /// This worker's position in --workers (from 0); it listens on that address.
    #[arg(long)]
    index: usize,

    /// Seconds to keep trying to reach the other workers before giving up.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,

    #[command(flatten)]
    demo: DemoArgs,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Number of transactions to generate.
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,

    /// Subtasks per operator, each on its own thread (default: the number of cores; for
    /// `sabot worker`, the number of cores times the number of workers).
    #[arg(long)]
    parallelism: Option<usize>,

    /// Seed of the generator: the same seed gives the same transactions and alerts.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Distinct card accounts.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    accounts: u64,

    /// Transactions per second of event time.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,

    /// Transactions per batch.
    #[arg(long, default_value_t = 8_192, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch_size: u64,

    /// Window length in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    window_secs: u64,

    /// Window alert threshold: spend per account and window, in dollars.
    #[arg(long, default_value_t = 5_000.0)]
    threshold: f64,

    /// Spike alert: a transaction above this many times the account's average.
    #[arg(long, default_value_t = 10.0)]
    spike_factor: f64,

    /// Alerts of each kind to print at the end.
    #[arg(long, default_value_t = 5)]
    show: usize,

    /// Where the window operator keeps its state: in memory, or in RocksDB on disk.
    #[arg(long, value_enum, default_value_t = StateKind::Memory)]
    state: StateKind,

    /// Folder for RocksDB's working files (default: the system's temporary folder).
    /// Each operator subtask gets a subfolder, removed when the demo ends.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,

    /// Write the alerts as CSV files into this folder (window-alerts.csv and
    /// spike-alerts.csv; a worker adds its index: window-alerts-0.csv). With
    /// --checkpoint-dir, part files committed with each checkpoint instead
    /// (window-alerts-<subtask>-<checkpoint>.csv, ...): exactly once across crashes.
    #[arg(long, value_name = "DIR")]
    output: Option<std::path::PathBuf>,

    /// Take checkpoints into this folder; started on a folder that holds a complete
    /// checkpoint, the job continues from the newest one (same --parallelism, same
    /// options). Needs --output.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<std::path::PathBuf>,

    /// Milliseconds between checkpoints.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_interval: u64,

    /// Continue from this checkpoint of --checkpoint-dir instead of the newest one. For
    /// when the newest checkpoint is damaged: remove the output committed after this
    /// checkpoint first (the file sink refuses to start while it is there).
    #[arg(long, value_name = "ID", requires = "checkpoint_dir")]
    restore_from: Option<u64>,

    /// Run from and to Kafka at these bootstrap servers (HOST:PORT[,HOST:PORT]): the
    /// transactions are loaded into <prefix>-transactions (resuming an interrupted
    /// load), the job reads them from there and writes its alerts as JSON to
    /// <prefix>-window-alerts and <prefix>-spike-alerts; with --checkpoint-dir, exactly
    /// once (Kafka transactions committed with the checkpoints).
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,

    /// With --brokers: prefix of the topic names.
    #[arg(long, default_value = "sabot-demo")]
    topic_prefix: String,

    /// With --brokers: partitions of the transactions topic when it is created.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    topic_partitions: i32,

    /// With --brokers: a librdkafka producer property, KEY=VALUE (repeatable).
    #[arg(long = "producer-property", value_parser = parse_property)]
    producer_properties: Vec<(String, String)>,

    /// Do not show a progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// The state backend to use.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum StateKind {
    /// Hash maps in memory.
    Memory,
    /// RocksDB on local disk.
    Rocksdb,
}

fn main() {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo(args) => demo(args, None),
        Command::Checkpoints(c) => checkpoints(c),
        Command::Nexmark(NexmarkCommand::Run(args)) => nexmark_run(args),
        Command::Nexmark(NexmarkCommand::Generate(args)) => nexmark_generate(args),
        Command::Topics(t) => topics(t),
        Command::Produce(args) => produce(args),
        Command::Consume(args) => consume(args),
        Command::Worker(w) => {
            if w.index >= w.workers.len() {
                Err(anyhow::anyhow!(
                    "--index {} is not a position in --workers (0..{})",
                    w.index,
                    w.workers.len()
                ))
            } else {
                let flight = sabot::shuffle::flight::FlightConfig::default()
                    .with_connect_timeout(Duration::from_secs(w.connect_timeout));
                let cluster = Cluster::new(w.workers, w.index).with_flight(flight);
                demo(w.demo, Some(cluster))
            }
        }
    };
    if let Err(e) = result {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, skipping a cause whose text its parent already
/// includes (Sabot's errors name their source in their own message).
fn topics(cmd: TopicsCommand) -> Result<()> {
    match cmd {
        TopicsCommand::List { brokers } => {
            for t in sabot::kafka::admin::list_topics(&brokers)? {
                println!("{}\t{} partitions", t.name, t.partitions);
            }
        }
        TopicsCommand::Create {
            name,
            partitions,
            brokers,
        } => {
            sabot::kafka::admin::create_topic(&brokers, &name, partitions)?;
            println!("created topic {name} with {partitions} partitions");
        }
    }
    Ok(())
}

fn produce(args: ProduceArgs) -> Result<()> {
    use std::io::BufRead;
    let mut lines = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.with_context(|| format!("reading standard input, line {}", n + 1))?;
        if let Some(sep) = &args.key_separator
            && !line.contains(sep.as_str())
        {
            anyhow::bail!("line {}: no key separator `{sep}` in it", n + 1);
        }
        lines.push(line);
    }
    let records: Vec<OutRecord<'_>> = lines
        .iter()
        .map(|line| {
            let (key, value) = match args
                .key_separator
                .as_deref()
                .and_then(|sep| line.split_once(sep))
            {
                Some((k, v)) => (Some(k.as_bytes()), v),
                None => (None, line.as_str()),
            };
            OutRecord {
                topic: &args.topic,
                partition: None,
                key,
                value: Some(value.as_bytes()),
                headers: &[],
            }
        })
        .collect();
    let settings: Vec<(&str, &str)> = args
        .producer_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sabot::kafka::admin::produce(&args.brokers, &records, &settings)?;
    eprintln!("sent {} messages to {}", records.len(), args.topic);
    Ok(())
}

fn consume(args: ConsumeArgs) -> Result<()> {
    let records = sabot::kafka::admin::read_topic(&args.brokers, &args.topic, args.read_committed)?;
    for r in &records {
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
        if args.keys {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default());
            println!("{key}\t{value}");
        } else {
            println!("{value}");
        }
    }
    eprintln!("read {} messages from {}", records.len(), args.topic);
    Ok(())
}

/// Checkpoints into `dir` every `interval_ms`, from checkpoint `restore_from` if given.
fn checkpoint_settings(
    dir: &std::path::Path,
    interval_ms: u64,
    restore_from: Option<u64>,
) -> sabot::runtime::CheckpointSettings {
    let settings = sabot::runtime::CheckpointSettings::new(dir, Duration::from_millis(interval_ms));
    match restore_from {
        Some(id) => settings.with_restore_from(sabot::core::CheckpointId(id)),
        None => settings,
    }
}

fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out
}

fn demo(args: DemoArgs, cluster: Option<Cluster>) -> Result<()> {
    if !(args.threshold.is_finite() && args.threshold >= 0.0) {
        anyhow::bail!(
            "--threshold must be a non-negative number of dollars, got {}",
            args.threshold
        );
    }
    if !(args.spike_factor.is_finite() && args.spike_factor > 0.0) {
        anyhow::bail!(
            "--spike-factor must be a positive number, got {}",
            args.spike_factor
        );
    }
    let workers = cluster.as_ref().map_or(1, |c| c.workers.len());
    let parallelism = args
        .parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from) * workers);
    // The share of the sources this process runs (all of them outside a cluster).
    let local_share = match &cluster {
        Some(c) => (0..parallelism).filter(|&s| c.owner(s) == c.me).count() as f64,
        None => parallelism as f64,
    } / parallelism.max(1) as f64;
    let suffix = cluster
        .as_ref()
        .map(|c| format!("-{}", c.me))
        .unwrap_or_default();
    if let Some(dir) = &args.output {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
    }
    let mut config = GeneratorConfig::default();
    config.events = args.events;
    config.seed = args.seed;
    config.accounts = args.accounts;
    config.rate = args.rate;
    config.batch_size = args.batch_size as usize;
    let generator = TransactionGenerator::new(config).context("invalid generator settings")?;
    let mut rules = FraudRules::default();
    rules.window = Duration::from_secs(args.window_secs);
    rules.threshold_cents = (args.threshold * 100.0).round() as i64;
    rules.spike_factor = args.spike_factor;

    let mut state = match args.state {
        StateKind::Memory => StateConfig::memory(),
        StateKind::Rocksdb => StateConfig::rocksdb(RocksDbConfig::default()),
    };
    if let Some(dir) = &args.state_dir {
        if args.state != StateKind::Rocksdb {
            anyhow::bail!("--state-dir is for --state rocksdb (memory state has no files)");
        }
        state = state.with_working_dir(dir);
    }
    let env = StreamEnv::new();
    env.set_parallelism(parallelism)
        .set_name("fraud-demo")
        .set_state(state);
    if args.brokers.is_some() && cluster.is_some() {
        anyhow::bail!("--brokers is not supported with sabot worker yet");
    }
    if args.brokers.is_some() && args.output.is_some() {
        anyhow::bail!("--output is for alerts as files; with --brokers they go to Kafka topics");
    }
    let transactional = match (&args.checkpoint_dir, &args.output) {
        (Some(dir), None) if args.brokers.is_some() => {
            env.set_checkpoints(checkpoint_settings(
                dir,
                args.checkpoint_interval,
                args.restore_from,
            ));
            true
        }
        (Some(_), None) => anyhow::bail!(
            "--checkpoint-dir needs --output: the alerts are committed there with each checkpoint"
        ),
        (Some(_), Some(_)) if cluster.is_some() => {
            anyhow::bail!("--checkpoint-dir is not supported with sabot worker yet")
        }
        (Some(dir), Some(_)) => {
            env.set_checkpoints(checkpoint_settings(
                dir,
                args.checkpoint_interval,
                args.restore_from,
            ));
            true
        }
        _ => false,
    };
    let role = match &cluster {
        Some(c) => format!(
            ", worker {} of {} on {}",
            c.me,
            c.workers.len(),
            c.workers[c.me]
        ),
        None => String::new(),
    };
    if let Some(c) = cluster {
        env.set_cluster(c);
    }
    let outputs = if let Some(brokers) = &args.brokers {
        let mut kafka = KafkaDemo::new(brokers, args.topic_partitions);
        kafka.prefix = args.topic_prefix.clone();
        kafka.exactly_once = transactional;
        kafka.producer = args.producer_properties.clone();
        eprintln!(
            "sabot demo: loading {} transactions into {} on {brokers}",
            args.events,
            kafka.transactions()
        );
        let sent = kafka
            .load(&generator)
            .context("loading the transactions into Kafka")?;
        eprintln!("sabot demo: {sent} sent (the rest were there from an earlier load)");
        kafka.job(&env, &generator, &rules)?
    } else if transactional {
        fraud_job_with_output(&env, generator, &rules, args.output.as_deref())?
    } else {
        fraud_job(&env, generator, &rules)?
    };
    let job = env.build().context("invalid job")?;

    eprintln!(
        "sabot demo: {} transactions, {} accounts, parallelism {}, seed {}, {} state{role}",
        args.events,
        args.accounts,
        parallelism,
        args.seed,
        env.config().state.name()
    );
    let started = Instant::now();
    let cpu_before = cpu_time();
    let handle = job.start()?;
    let progress = (!args.no_progress && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new((args.events as f64 * local_share).round() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} txns ({rate}, eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.2} M/s", s.per_sec() / 1e6);
            }),
        );
        bar
    });
    let counter = handle.metrics().counter(SOURCE_RECORDS);
    while !handle.is_finished() {
        if let Some(bar) = &progress {
            bar.set_position(counter.get());
            let wm = handle.watermark().millis();
            if wm > BASE_TIME_MS && wm < i64::MAX {
                let secs = (wm - BASE_TIME_MS) / 1000;
                bar.set_message(format!(
                    "event time {:02}:{:02}:{:02}",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let result = handle.join().context("the demo job failed")?;
    let elapsed = started.elapsed();
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let events = result.metric(SOURCE_RECORDS);
    let window_alerts = outputs.window_alerts.batches();
    let spike_alerts = outputs.spike_alerts.batches();
    let rate = events as f64 / elapsed.as_secs_f64().max(1e-9);

    println!(
        "Processed {events} transactions in {:.2} s",
        elapsed.as_secs_f64()
    );
    match cpu {
        Some(cpu) if !cpu.is_zero() => println!(
            "Throughput: {:.0} events/s; {:.0} events per CPU-second ({:.2} s of CPU, parallelism {parallelism})",
            rate,
            events as f64 / cpu.as_secs_f64(),
            cpu.as_secs_f64()
        ),
        _ => println!("Throughput: {rate:.0} events/s (parallelism {parallelism})"),
    }
    println!(
        "Window alerts (over ${:.2} in {} s): {}",
        args.threshold,
        args.window_secs,
        rows(&window_alerts)
    );
    println!(
        "Spike alerts (over {}x the account's average): {}",
        args.spike_factor,
        rows(&spike_alerts)
    );
    println!(
        "Late records dropped: {}",
        result.metric(LATE_RECORDS_DROPPED) + result.metric(SPIKE_LATE_RECORDS)
    );
    if let Some(restored) = result.restored_from {
        println!("Continued from checkpoint {}", restored.0);
        if events == 0 {
            println!(
                "All the input was already covered by checkpoint {}: this run only finished the job (no new output rows)",
                restored.0
            );
        }
    }
    if args.checkpoint_dir.is_some() {
        println!("Checkpoints completed: {}", result.checkpoints.len());
    }
    if let (Some(dir), false) = (&args.output, transactional) {
        for (name, batches) in [
            ("window-alerts", &window_alerts),
            ("spike-alerts", &spike_alerts),
        ] {
            let path = dir.join(format!("{name}{suffix}.csv"));
            write_csv(&path, batches)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!("Alerts written to {}", dir.display());
    }
    if args.show > 0 {
        print_window_alerts(&window_alerts, args.show)?;
        print_spike_alerts(&spike_alerts, args.show)?;
    }
    Ok(())
}

fn checkpoints(command: CheckpointsCommand) -> Result<()> {
    use sabot::checkpoint::storage::{Listed, LocalStorage};
    let dir = match &command {
        CheckpointsCommand::List { dir } | CheckpointsCommand::Inspect { dir, .. } => dir,
    };
    if !dir.is_dir() {
        anyhow::bail!("{} is not a folder", dir.display());
    }
    let storage = LocalStorage::open(dir)
        .with_context(|| format!("cannot open the checkpoint folder {}", dir.display()))?;
    match command {
        CheckpointsCommand::List { .. } => {
            let all = storage.list()?;
            if all.is_empty() {
                println!("No checkpoints in {}", dir.display());
                return Ok(());
            }
            println!(
                "{:>8}  {:<10}  {:>6}  {:>14}  {:>15}",
                "id", "status", "files", "bytes", "created (ms)"
            );
            for l in all {
                match l {
                    Listed::Complete(m) => println!(
                        "{:>8}  {:<10}  {:>6}  {:>14}  {:>15}",
                        m.id.0,
                        "complete",
                        m.files.len(),
                        m.bytes(),
                        m.created_ms
                    ),
                    Listed::Incomplete { id, reason } => {
                        println!("{:>8}  {:<10}  {reason}", id.0, "incomplete")
                    }
                }
            }
        }
        CheckpointsCommand::Inspect { id, .. } => {
            let manifest = match id {
                Some(id) => storage.manifest(sabot::core::CheckpointId(id))?,
                None => storage
                    .completed()?
                    .pop()
                    .with_context(|| format!("no complete checkpoint in {}", dir.display()))?,
            };
            println!(
                "Checkpoint {} in {}",
                manifest.id.0,
                storage.dir(manifest.id).display()
            );
            println!("Created: {} ms since the epoch", manifest.created_ms);
            match storage.verify(&manifest) {
                Ok(()) => println!(
                    "Files: {} ({} bytes), all intact",
                    manifest.files.len(),
                    manifest.bytes()
                ),
                Err(e) => println!(
                    "Files: {} ({} bytes), DAMAGED: {e}",
                    manifest.files.len(),
                    manifest.bytes()
                ),
            }
            if !manifest.meta.is_empty() {
                println!("\nMetadata:");
                for (k, v) in &manifest.meta {
                    println!("  {k} = {v}");
                }
            }
            println!("\n  {:>12}  {:>8}  path", "bytes", "crc32");
            for f in &manifest.files {
                println!("  {:>12}  {:08x}  {}", f.len, f.crc32, f.path);
            }
        }
    }
    Ok(())
}

/// CPU time (user + system) this process used so far.
#[cfg(unix)]
fn cpu_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points
    // to enough initialized (zeroed) memory for one; we read it only on success.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

#[cfg(not(unix))]
fn cpu_time() -> Option<Duration> {
    None
}

/// Writes `batches` as CSV with a header row (values as Arrow displays them), through a
/// temporary file renamed into place.
/// A sink that only counts (the runtime's sink counter) and drops the rows.
#[derive(Debug)]
struct Discard;

impl sabot::operators::SinkFactory for Discard {
    fn name(&self) -> String {
        "discard".into()
    }
    fn create(
        &self,
        _: &sabot::arrow::datatypes::SchemaRef,
        _: &sabot::operators::TaskContext,
    ) -> sabot::operators::Result<Box<dyn sabot::operators::Sink>> {
        Ok(Box::new(Discard))
    }
}

impl sabot::operators::Sink for Discard {
    fn write(&mut self, _: RecordBatch) -> sabot::operators::Result<()> {
        Ok(())
    }
}

fn nexmark_run(args: NexmarkRunArgs) -> Result<()> {
    use sabot::nexmark::NexmarkConfig;
    let parallelism = args
        .parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let config = NexmarkConfig::new(args.events, args.seed, args.rate);
    config.validate().context("invalid generator settings")?;
    let mut state = match args.state {
        StateKind::Memory => StateConfig::memory(),
        StateKind::Rocksdb => StateConfig::rocksdb(RocksDbConfig::default()),
    };
    if let Some(dir) = &args.state_dir {
        if args.state != StateKind::Rocksdb {
            anyhow::bail!("--state-dir is for --state rocksdb (memory state has no files)");
        }
        state = state.with_working_dir(dir);
    }
    let env = StreamEnv::new();
    env.set_parallelism(parallelism)
        .set_name(format!("nexmark-{}", args.query.name()))
        .set_state(state);
    if let Some(dir) = &args.checkpoint_dir {
        if args.output.is_none() {
            anyhow::bail!(
                "--checkpoint-dir needs --output: results are committed there with each checkpoint"
            );
        }
        env.set_checkpoints(checkpoint_settings(
            dir,
            args.checkpoint_interval,
            args.restore_from,
        ));
    }
    let result = args.query.build(&env, &config);
    match &args.output {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
            result.sink(sabot::operators::TransactionalCsvSink::new(
                dir,
                args.query.name(),
            ));
        }
        None => result.sink(Discard),
    }
    let job = env.build().context("invalid job")?;
    eprintln!(
        "sabot nexmark: {}, {} events at {} events/s of event time, parallelism {parallelism}, seed {}, {} state",
        args.query.name(),
        args.events,
        args.rate,
        args.seed,
        env.config().state.name()
    );
    let started = Instant::now();
    let cpu_before = cpu_time();
    let handle = job.start()?;
    let progress = (!args.no_progress && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(args.events);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
        if let Some(bar) = &progress {
            // Event time says how far the input got (every event kind shares it).
            let wm = handle.watermark().millis();
            if wm > sabot::nexmark::BASE_TIME_MS && wm < i64::MAX {
                let done = ((wm - sabot::nexmark::BASE_TIME_MS) as u128 * u128::from(args.rate)
                    / 1000) as u64;
                bar.set_position(done.min(args.events));
                bar.set_message(format!("{done} events"));
            }
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let result = handle
        .join()
        .with_context(|| format!("nexmark {} failed", args.query.name()))?;
    // From the start to the last subtask's end (not rounded to the polling above).
    let elapsed = result.elapsed;
    let _ = started;
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let rate = args.events as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "{}: {} events in {:.2} s: {:.0} events/s, {:.0} events/s per core (parallelism {parallelism})",
        args.query.name(),
        args.events,
        elapsed.as_secs_f64(),
        rate,
        rate / parallelism.max(1) as f64
    );
    if let Some(cpu) = cpu.filter(|c| !c.is_zero()) {
        println!(
            "CPU: {:.2} s, {:.0} events per CPU-second",
            cpu.as_secs_f64(),
            args.events as f64 / cpu.as_secs_f64()
        );
    }
    println!(
        "Result rows: {}",
        result.metric(sabot::runtime::SINK_RECORDS)
    );
    print_latency(&result);
    if args.checkpoint_dir.is_some() {
        println!("Checkpoints completed: {}", result.checkpoints.len());
        if let Some(r) = result.restored_from {
            println!("Continued from checkpoint {}", r.0);
        }
    }
    if let Some(dir) = &args.output {
        println!("Results written to {}", dir.display());
    }
    Ok(())
}

/// The latency markers' age at the sinks: how long a batch took from its source through
/// the job (see `sabot::runtime::SINK_LATENCY_US`).
fn print_latency(result: &sabot::runtime::JobResult) {
    let markers = result
        .histograms
        .get(sabot::runtime::SINK_LATENCY_US)
        .map_or(0, |h| h.count());
    if let (Some(p50), Some(p99), Some(max)) = (
        result.latency(0.5),
        result.latency(0.99),
        result.latency(1.0),
    ) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "Batch latency, source to sink ({markers} latency markers): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
}

fn nexmark_generate(args: NexmarkGenerateArgs) -> Result<()> {
    use sabot::nexmark::{CHUNK_EVENTS, EventKind, Generator, NexmarkConfig};
    let config = NexmarkConfig::new(args.events, args.seed, args.rate);
    config.validate().context("invalid generator settings")?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    let g = Generator::new(config);
    for (kind, name) in [
        (EventKind::Person, "person"),
        (EventKind::Auction, "auction"),
        (EventKind::Bid, "bid"),
    ] {
        let ext = match args.format {
            FileFormat::Csv => "csv",
            FileFormat::Arrow => "arrow",
        };
        let path = args.out.join(format!("{name}.{ext}"));
        let tmp = path.with_extension(format!("{ext}.tmp"));
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut rows = 0usize;
        let batches = (0..args.events.div_ceil(CHUNK_EVENTS))
            .map(|c| g.batch(kind, c * CHUNK_EVENTS..(c + 1) * CHUNK_EVENTS));
        match args.format {
            FileFormat::Csv => {
                use std::io::Write;
                let mut out = std::io::BufWriter::new(file);
                let schema = kind.schema();
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "{}", names.join(","))?;
                for b in batches {
                    let b = b?;
                    rows += b.num_rows();
                    for r in 0..b.num_rows() {
                        let cells = b
                            .columns()
                            .iter()
                            .map(|c| array_value_to_string(c, r))
                            .collect::<std::result::Result<Vec<_>, _>>()?;
                        writeln!(out, "{}", cells.join(","))?;
                    }
                }
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            }
            FileFormat::Arrow => {
                let mut w = arrow_ipc::writer::FileWriter::try_new(file, &kind.schema())?;
                for b in batches {
                    let b = b?;
                    rows += b.num_rows();
                    w.write(&b)?;
                }
                w.finish()?;
                w.into_inner()?.sync_all()?;
            }
        }
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot publish {}", path.display()))?;
        println!("{rows} {name} rows written to {}", path.display());
    }
    Ok(())
}

fn write_csv(path: &std::path::Path, batches: &[RecordBatch]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("csv.tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    if let Some(first) = batches.first() {
        let schema = first.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        writeln!(out, "{}", names.join(","))?;
    }
    for b in batches {
        for r in 0..b.num_rows() {
            let cells = b
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, r))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            writeln!(out, "{}", cells.join(","))?;
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// The largest `show` window alerts by total.
fn print_window_alerts(batches: &[RecordBatch], show: usize) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let all = concat_batches(&first.schema(), batches)?;
    let col = |name: &str| -> Result<_> {
        Ok(all
            .column_by_name(name)
            .with_context(|| format!("window alerts have no `{name}` column"))?
            .as_primitive::<Int64Type>()
            .clone())
    };
    let (account, start, total, txns) = (
        col("account")?,
        col("window_start")?,
        col("total")?,
        col("txns")?,
    );
    let mut order: Vec<usize> = (0..all.num_rows()).collect();
    order.sort_by_key(|&i| {
        (
            std::cmp::Reverse(total.value(i)),
            account.value(i),
            start.value(i),
        )
    });
    println!("\nTop window alerts:");
    println!(
        "  {:>10}  {:>15}  {:>12}  {:>5}",
        "account", "start (ms)", "total", "txns"
    );
    for &i in order.iter().take(show) {
        println!(
            "  {:>10}  {:>15}  {:>12}  {:>5}",
            account.value(i),
            start.value(i),
            dollars(total.value(i)),
            txns.value(i)
        );
    }
    Ok(())
}

/// The first `show` spike alerts by event time.
fn print_spike_alerts(batches: &[RecordBatch], show: usize) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let all = concat_batches(&first.schema(), batches)?;
    let int = |name: &str| -> Result<_> {
        Ok(all
            .column_by_name(name)
            .with_context(|| format!("spike alerts have no `{name}` column"))?
            .as_primitive::<Int64Type>()
            .clone())
    };
    let (txn, account, amount, ts) = (int("txn_id")?, int("account")?, int("amount")?, int("ts")?);
    let average = all
        .column_by_name("average")
        .context("spike alerts have no `average` column")?
        .as_primitive::<Float64Type>()
        .clone();
    let mut order: Vec<usize> = (0..all.num_rows()).collect();
    order.sort_by_key(|&i| (ts.value(i), txn.value(i)));
    println!("\nFirst spike alerts:");
    println!(
        "  {:>10}  {:>10}  {:>12}  {:>12}  {:>15}",
        "txn", "account", "amount", "average", "ts (ms)"
    );
    for &i in order.iter().take(show.min(average.len())) {
        println!(
            "  {:>10}  {:>10}  {:>12}  {:>12}  {:>15}",
            txn.value(i),
            account.value(i),
            dollars(amount.value(i)),
            dollars(average.value(i).round() as i64),
            ts.value(i)
        );
    }
    Ok(())
}
