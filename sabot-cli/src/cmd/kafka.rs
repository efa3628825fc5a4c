//! `sabot topics`, `sabot produce` and `sabot consume`: Kafka from the command line.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sabot::kafka::admin::OutRecord;

#[derive(Debug, Subcommand)]
pub(crate) enum TopicsCommand {
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
pub(crate) struct ProduceArgs {
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

pub(crate) fn parse_property(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
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

/// Runs `sabot topics <command>`.
pub(crate) fn topics(cmd: TopicsCommand) -> Result<()> {
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

/// Runs `sabot produce`.
pub(crate) fn produce(args: ProduceArgs) -> Result<()> {
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

/// Runs `sabot consume`.
pub(crate) fn consume(args: ConsumeArgs) -> Result<()> {
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
