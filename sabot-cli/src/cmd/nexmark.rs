//! `sabot nexmark run` and `sabot nexmark generate`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sabot::StreamEnv;
use sabot::arrow::array::RecordBatch;

use super::{JobArgs, cpu_time, write_csv_rows};

#[derive(Debug, Subcommand)]
pub(crate) enum NexmarkCommand {
    /// Run one query on generated events; ends with events/s, result rows and
    /// checkpoints.
    Run(NexmarkRunArgs),
    /// Write persons, auctions and bids to person.*, auction.* and bid.* files, so other
    /// systems can run the same input.
    Generate(NexmarkGenerateArgs),
    /// Run one query in a cluster: `coordinator` (waits for workers, places the
    /// subtasks, restarts the job when a worker fails or is lost) or `worker
    /// --coordinator ADDR` (runs each attempt as a child process); every process gets
    /// the same query options, before the role.
    Cluster(NexmarkClusterArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NexmarkClusterArgs {
    #[command(flatten)]
    query: QueryArgs,

    #[command(flatten)]
    job: JobArgs,

    #[command(subcommand)]
    role: sabot::cluster::Role,
}

#[derive(Debug, Args)]
pub(crate) struct NexmarkRunArgs {
    #[command(flatten)]
    query: QueryArgs,

    #[command(flatten)]
    job: JobArgs,
}

/// The query and its generated input.
#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// The query: q0, q1, q2, q3, q4, q5, q7, q8, q11 or q12.
    #[arg(long, value_parser = parse_query)]
    query: sabot_nexmark::Query,

    /// Events to generate, all kinds together (46 of every 50 are bids).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,

    /// Events per second of event time.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    rate: u64,

    /// Seed of the generator: the same seed gives the same events.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Args)]
pub(crate) struct NexmarkGenerateArgs {
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

fn parse_query(s: &str) -> std::result::Result<sabot_nexmark::Query, String> {
    sabot_nexmark::Query::parse(s).ok_or_else(|| {
        format!(
            "unknown query `{s}`: one of {}",
            sabot_nexmark::Query::ALL
                .iter()
                .map(|q| q.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

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

/// Runs `sabot nexmark <command>`.
pub(crate) fn run(command: NexmarkCommand) -> Result<()> {
    match command {
        NexmarkCommand::Run(args) => nexmark_run(args),
        NexmarkCommand::Generate(args) => nexmark_generate(args),
        NexmarkCommand::Cluster(args) => nexmark_cluster(args),
    }
}

fn nexmark_cluster(args: NexmarkClusterArgs) -> Result<()> {
    let NexmarkClusterArgs { query, job, role } = args;
    let config = sabot_nexmark::NexmarkConfig::new(query.events, query.seed, query.rate);
    config.validate().context("invalid generator settings")?;
    let checkpoints = job.checkpoints();
    if checkpoints.is_some() && job.output.is_none() {
        anyhow::bail!(
            "--checkpoint-dir needs --output: results are committed there with each checkpoint"
        );
    }
    let state = job.state_config()?;
    job.create_output()?;
    let q = query.query;
    let build = |env: &StreamEnv| -> std::result::Result<(), sabot::Error> {
        env.set_parallelism(job.parallelism(1))
            .set_name(format!("nexmark-{}", q.name()))
            .set_state(state.clone());
        if let Some(cs) = &checkpoints {
            env.set_checkpoints(cs.clone());
        }
        let result = q.build(env, &config);
        match &job.output {
            Some(dir) => result.sink(sabot::operators::TransactionalCsvSink::new(dir, q.name())),
            None => result.sink(Discard),
        }
        Ok(())
    };
    sabot::cluster::run(role, build).with_context(|| format!("nexmark {} in a cluster", q.name()))
}

fn nexmark_run(args: NexmarkRunArgs) -> Result<()> {
    use sabot_nexmark::NexmarkConfig;
    let parallelism = args.job.parallelism(1);
    let config = NexmarkConfig::new(args.query.events, args.query.seed, args.query.rate);
    config.validate().context("invalid generator settings")?;
    let env = args
        .job
        .env(format!("nexmark-{}", args.query.query.name()), 1)?;
    if let Some(checkpoints) = args.job.checkpoints() {
        if args.job.output.is_none() {
            anyhow::bail!(
                "--checkpoint-dir needs --output: results are committed there with each checkpoint"
            );
        }
        env.set_checkpoints(checkpoints);
    }
    let result = args.query.query.build(&env, &config);
    args.job.create_output()?;
    match &args.job.output {
        Some(dir) => {
            result.sink(sabot::operators::TransactionalCsvSink::new(
                dir,
                args.query.query.name(),
            ));
        }
        None => result.sink(Discard),
    }
    let job = env.build().context("invalid job")?;
    eprintln!(
        "sabot nexmark: {}, {} events at {} events/s of event time, parallelism {parallelism}, seed {}, {} state",
        args.query.query.name(),
        args.query.events,
        args.query.rate,
        args.query.seed,
        env.config().state.name()
    );
    let started = Instant::now();
    let cpu_before = cpu_time();
    let handle = job.start()?;
    let progress = (!args.job.no_progress && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(args.query.events);
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
            if wm > sabot_nexmark::BASE_TIME_MS && wm < i64::MAX {
                let done = ((wm - sabot_nexmark::BASE_TIME_MS) as u128
                    * u128::from(args.query.rate)
                    / 1000) as u64;
                bar.set_position(done.min(args.query.events));
                bar.set_message(format!("{done} events"));
            }
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let result = handle
        .join()
        .with_context(|| format!("nexmark {} failed", args.query.query.name()))?;
    // From the start to the last subtask's end (not rounded to the polling above).
    let elapsed = result.elapsed;
    let _ = started;
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let rate = args.query.events as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "{}: {} events in {:.2} s: {:.0} events/s, {:.0} events/s per core (parallelism {parallelism})",
        args.query.query.name(),
        args.query.events,
        elapsed.as_secs_f64(),
        rate,
        rate / parallelism.max(1) as f64
    );
    if let Some(cpu) = cpu.filter(|c| !c.is_zero()) {
        println!(
            "CPU: {:.2} s, {:.0} events per CPU-second",
            cpu.as_secs_f64(),
            args.query.events as f64 / cpu.as_secs_f64()
        );
    }
    println!(
        "Result rows: {}",
        result.metric(sabot::runtime::SINK_RECORDS)
    );
    print_latency(&result);
    if args.job.checkpoint_dir.is_some() {
        println!("Checkpoints completed: {}", result.checkpoints.len());
        if let Some(r) = result.restored_from {
            println!("Continued from checkpoint {}", r.0);
        }
    }
    if let Some(dir) = &args.job.output {
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
    use sabot_nexmark::{CHUNK_EVENTS, EventKind, Generator, NexmarkConfig};
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
                    write_csv_rows(&mut out, &b)?;
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
