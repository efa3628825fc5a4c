//! `sabot demo` and `sabot worker`: the fraud-detection demo, in one process or split
//! over several.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use sabot::arrow::array::{AsArray, RecordBatch};
use sabot::arrow::compute::concat_batches;
use sabot::arrow::datatypes::{Float64Type, Int64Type};
use sabot::operators::LATE_RECORDS_DROPPED;
use sabot::runtime::{Cluster, SOURCE_RECORDS};
use sabot::{JobResult, StreamEnv};
use sabot_cli::demo::{
    BASE_TIME_MS, FraudOutputs, FraudRules, GeneratorConfig, KafkaDemo, SPIKE_LATE_RECORDS,
    TransactionGenerator, fraud_job, fraud_job_with_output,
};

use super::kafka::parse_property;
use super::{JobArgs, cpu_time, write_csv_rows};

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
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

/// `sabot demo`: its options, then optionally a cluster role.
#[derive(Debug, Args)]
pub(crate) struct DemoCommand {
    #[command(flatten)]
    pub(crate) demo: DemoArgs,

    #[command(subcommand)]
    pub(crate) role: Option<sabot::cluster::Role>,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Number of transactions to generate.
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,

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

    #[command(flatten)]
    job: JobArgs,
}

/// Runs `sabot worker`: the demo as one worker of a cluster.
pub(crate) fn worker(w: WorkerArgs) -> Result<()> {
    if w.index >= w.workers.len() {
        anyhow::bail!(
            "--index {} is not a position in --workers (0..{})",
            w.index,
            w.workers.len()
        );
    }
    let flight = sabot::shuffle::flight::FlightConfig::default()
        .with_connect_timeout(Duration::from_secs(w.connect_timeout));
    let cluster = Cluster::new(w.workers, w.index).with_flight(flight);
    demo(w.demo, Some(cluster))
}

/// Runs `sabot demo ... <role>`: the demo in cluster mode, its alerts written by each
/// subtask into --output.
pub(crate) fn demo_cluster(args: DemoArgs, role: sabot::cluster::Role) -> Result<()> {
    let Some(output) = args.job.output.clone() else {
        anyhow::bail!("--output is needed in cluster mode: each subtask writes its alerts there");
    };
    if args.brokers.is_some() {
        anyhow::bail!("--brokers is not supported in cluster mode yet");
    }
    // Checkpoints go into a folder every worker sees; the alerts are committed with them.
    let checkpoints = args.job.checkpoints();
    let (generator, rules) = generator_and_rules(&args)?;
    let state = args.job.state_config()?;
    args.job.create_output()?;
    let build = |env: &StreamEnv| -> sabot::Result<()> {
        env.set_parallelism(args.job.parallelism(1))
            .set_name("fraud-demo")
            .set_state(state.clone());
        if let Some(cs) = &checkpoints {
            env.set_checkpoints(cs.clone());
        }
        fraud_job_with_output(env, generator.clone(), &rules, Some(&output))?;
        Ok(())
    };
    sabot::cluster::run(role, build).context("the demo in a cluster")
}

/// Runs `sabot demo` (or one worker's share of it, in `cluster`).
pub(crate) fn demo(args: DemoArgs, cluster: Option<Cluster>) -> Result<()> {
    let (generator, rules) = generator_and_rules(&args)?;
    let workers = cluster.as_ref().map_or(1, |c| c.workers.len());
    let parallelism = args.job.parallelism(workers);
    // The share of the sources this process runs (all of them outside a cluster).
    let local_share = match &cluster {
        Some(c) => (0..parallelism).filter(|&s| c.owner(s) == c.me).count() as f64,
        None => parallelism as f64,
    } / parallelism.max(1) as f64;
    let suffix = cluster
        .as_ref()
        .map(|c| format!("-{}", c.me))
        .unwrap_or_default();
    args.job.create_output()?;
    let env = args.job.env("fraud-demo", workers)?;
    let transactional = set_checkpoints(&args, &env, cluster.is_some())?;
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
        kafka_job(&args, brokers, &env, &generator, &rules, transactional)?
    } else if transactional {
        fraud_job_with_output(&env, generator, &rules, args.job.output.as_deref())?
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
    let progress = (!args.job.no_progress && std::io::stderr().is_terminal())
        .then(|| progress_bar((args.events as f64 * local_share).round() as u64));
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
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    report(
        &args,
        &result,
        &outputs,
        Run {
            elapsed: started.elapsed(),
            cpu,
            parallelism,
            transactional,
            suffix,
        },
    )
}

/// The generator and the fraud rules of the demo's flags.
fn generator_and_rules(args: &DemoArgs) -> Result<(TransactionGenerator, FraudRules)> {
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
    Ok((generator, rules))
}

/// Sets the job's checkpoints, if any; returns whether the sinks commit with them.
fn set_checkpoints(args: &DemoArgs, env: &StreamEnv, in_cluster: bool) -> Result<bool> {
    let brokers = args.brokers.is_some();
    if brokers && in_cluster {
        anyhow::bail!("--brokers is not supported with sabot worker yet");
    }
    if brokers && args.job.output.is_some() {
        anyhow::bail!("--output is for alerts as files; with --brokers they go to Kafka topics");
    }
    let Some(checkpoints) = args.job.checkpoints() else {
        return Ok(false);
    };
    if args.job.output.is_none() && !brokers {
        anyhow::bail!(
            "--checkpoint-dir needs --output: the alerts are committed there with each checkpoint"
        );
    }
    if in_cluster {
        anyhow::bail!("--checkpoint-dir is not supported with sabot worker yet");
    }
    env.set_checkpoints(checkpoints);
    Ok(true)
}

/// The demo from and to Kafka: loads the transactions into their topic, then adds the job.
fn kafka_job(
    args: &DemoArgs,
    brokers: &str,
    env: &StreamEnv,
    generator: &TransactionGenerator,
    rules: &FraudRules,
    exactly_once: bool,
) -> Result<FraudOutputs> {
    let mut kafka = KafkaDemo::new(brokers, args.topic_partitions);
    kafka.prefix = args.topic_prefix.clone();
    kafka.exactly_once = exactly_once;
    kafka.producer = args.producer_properties.clone();
    eprintln!(
        "sabot demo: loading {} transactions into {} on {brokers}",
        args.events,
        kafka.transactions()
    );
    let sent = kafka
        .load(generator)
        .context("loading the transactions into Kafka")?;
    eprintln!("sabot demo: {sent} sent (the rest were there from an earlier load)");
    Ok(kafka.job(env, generator, rules)?)
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
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
}

/// What the report needs to know of the run besides its result.
struct Run {
    elapsed: Duration,
    cpu: Option<Duration>,
    parallelism: usize,
    transactional: bool,
    /// A worker's suffix of its output files (`-<index>`).
    suffix: String,
}

/// Prints throughput, alert counts and samples, and writes the alerts of a run without
/// checkpoints.
fn report(args: &DemoArgs, result: &JobResult, outputs: &FraudOutputs, run: Run) -> Result<()> {
    let Run {
        elapsed,
        cpu,
        parallelism,
        transactional,
        suffix,
    } = run;
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
    if args.job.checkpoint_dir.is_some() {
        println!("Checkpoints completed: {}", result.checkpoints.len());
    }
    if let (Some(dir), false) = (&args.job.output, transactional) {
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
        write_csv_rows(&mut out, b)?;
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
