//! Kafka end to end against a real broker (Tansu, started per test by
//! `sabot_test_kit::kafka::Broker`): offsets restored after a failure, the
//! exactly-once sink, bad-record policies, and partition assignment.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sabot::StreamEnv;
use sabot::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot::checkpoint::storage::CheckpointStorage;
use sabot::kafka::admin::{OutRecord, produce, read_topic};
use sabot::kafka::{
    BAD_RECORDS_DEAD_LETTERED, BAD_RECORDS_DROPPED, BadRecords, Codec, DeliveryGuarantee,
    KafkaSink, KafkaSource,
};
use sabot::operators::{SourceFactory, SourcePoll, TaskContext};
use sabot::runtime::CheckpointSettings;
use sabot_test_kit::kafka::{Broker, PRODUCER_SETTINGS};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("account", DataType::Int64, false),
        Field::new("amount", DataType::Int64, false),
    ]))
}

fn record(id: i64) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"account":{},"amount":{}}}"#,
        id % 97,
        id * 7 % 1000
    )
    .into_bytes()
}

/// `n` good records spread over `partitions`, with a bad record at every index in `bad`.
fn fill(broker: &Broker, topic: &str, partitions: i32, n: i64, bad: &[i64]) {
    sabot::kafka::admin::create_topic(&broker.bootstrap(), topic, partitions).unwrap();
    let values: Vec<(i32, Option<Vec<u8>>, Vec<u8>)> = (0..n)
        .flat_map(|id| {
            let p = (id % partitions as i64) as i32;
            let bad = bad.contains(&id).then(|| {
                (
                    p,
                    Some(format!("bad-{id}").into_bytes()),
                    format!("{{broken {id}").into_bytes(),
                )
            });
            bad.into_iter().chain([(p, None, record(id))])
        })
        .collect();
    let records: Vec<OutRecord<'_>> = values
        .iter()
        .map(|(p, k, v)| OutRecord {
            topic,
            partition: Some(*p),
            key: k.as_deref(),
            value: Some(v),
            headers: &[],
        })
        .collect();
    produce(&broker.bootstrap(), &records, &PRODUCER_SETTINGS).unwrap();
}

/// The ids in the values of `topic` (read committed), sorted.
fn ids_in(broker: &Broker, topic: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = read_topic(&broker.bootstrap(), topic, true)
        .unwrap()
        .iter()
        .filter(|r| r.key.as_deref() != Some(b"marker".as_slice()))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            v["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Runs `in -> (fail once after the first completed checkpoint) -> out` with checkpoints
/// every 20 ms, then again on the same folder; the exactly-once sink's output must hold
/// every input id once.
/// Asserts `ids` is exactly `0..n`, with a short message when not.
fn assert_each_once(ids: &[i64], n: i64, what: &str) {
    if ids == (0..n).collect::<Vec<_>>().as_slice() {
        return;
    }
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(*id).or_insert(0) += 1;
    }
    let dup = counts.values().filter(|&&c| c > 1).count();
    let missing: Vec<i64> = (0..n).filter(|i| !counts.contains_key(i)).collect();
    panic!(
        "{what}: {} ids, {dup} duplicated, {} missing (first: {:?})",
        ids.len(),
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

fn run_with_failure(broker: &Broker, dir: &Path, parallelism: usize) {
    let ckpt = dir.join("ckpt");
    let failed = Arc::new(AtomicBool::new(false));
    for attempt in 0..2 {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism)
            .set_checkpoints(CheckpointSettings::new(&ckpt, Duration::from_millis(20)));
        let (f, c) = (failed.clone(), ckpt.clone());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        env.source(
            KafkaSource::new(&broker.bootstrap(), &["in"], Codec::json(schema()))
                .bounded()
                .max_batch(500),
        )
        .map(move |b| {
            std::thread::sleep(Duration::from_millis(2));
            let rows = seen.fetch_add(b.num_rows(), Ordering::SeqCst) + b.num_rows();
            // Fail mid-input, once a few checkpoints with rows in them completed.
            let completed = CheckpointStorage::open(&c)
                .and_then(|s| s.completed())
                .is_ok_and(|c| c.len() >= 3);
            if attempt == 0 && completed && rows > 12_000 && !f.swap(true, Ordering::SeqCst) {
                return Err("injected failure".into());
            }
            Ok(b)
        })
        .sink(
            KafkaSink::new(&broker.bootstrap(), "out", Codec::json(schema()))
                .key_column("account")
                .value_columns(&["id", "account", "amount"])
                .guarantee(DeliveryGuarantee::ExactlyOnce)
                .set(PRODUCER_SETTINGS[0].0, PRODUCER_SETTINGS[0].1),
        );
        let r = env.execute();
        if attempt == 0 {
            assert!(r.is_err(), "the first run should fail: {r:?}");
            assert!(failed.load(Ordering::SeqCst));
        } else {
            let r = r.unwrap();
            assert!(r.restored_from.is_some(), "the rerun did not restore");
        }
    }
}

#[test]
fn offsets_restore_and_the_exactly_once_sink_give_each_record_once() {
    let broker = Broker::start().unwrap();
    let n = 30_000;
    fill(&broker, "in", 3, n, &[]);
    sabot::kafka::admin::create_topic(&broker.bootstrap(), "out", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    run_with_failure(&broker, dir.path(), 2);
    assert_each_once(&ids_in(&broker, "out"), n, "exactly-once output");
    // Keys are the account column; a key's records land in one partition.
    let mut part_of_key = BTreeMap::new();
    for r in read_topic(&broker.bootstrap(), "out", true).unwrap() {
        let p = part_of_key.entry(r.key.clone()).or_insert(r.partition);
        assert_eq!(*p, r.partition, "key {:?} in two partitions", r.key);
    }
}

/// The values of a batch's first column (the ids).
fn first_column(b: &sabot::arrow::record_batch::RecordBatch) -> Vec<i64> {
    b.column(0)
        .as_any()
        .downcast_ref::<sabot::arrow::array::Int64Array>()
        .unwrap()
        .values()
        .to_vec()
}

/// Polls `s` until `ids` holds `want` ids or `deadline` passes; errors are returned.
fn read_ids(
    s: &mut Box<dyn sabot::operators::Source>,
    ids: &mut Vec<i64>,
    want: usize,
    within: Duration,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + within;
    while ids.len() < want && std::time::Instant::now() < deadline {
        if let SourcePoll::Batch(b) = s
            .poll_next()
            .map_err(|e| sabot::core::ErrorChain(&e).to_string())?
        {
            ids.extend(first_column(&b));
        }
    }
    Ok(())
}

#[test]
fn a_short_broker_outage_is_ridden_out_and_a_long_one_fails_the_source_clearly() {
    let broker = Broker::start().unwrap();
    fill(&broker, "outage", 1, 100, &[]);
    let timeout = Duration::from_secs(3);
    let source = KafkaSource::new(&broker.bootstrap(), &["outage"], Codec::json(schema()))
        .broker_timeout(timeout);
    let metrics = sabot::core::metrics::Metrics::default();
    let mut s = source
        .create(&TaskContext::new(0, 1, 128, metrics))
        .unwrap();
    let mut ids = Vec::new();
    read_ids(&mut s, &mut ids, 100, Duration::from_secs(30)).unwrap();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());

    // Half the timeout without an answer: the source keeps polling, then continues.
    broker.pause().unwrap();
    let quiet = std::time::Instant::now();
    while quiet.elapsed() < timeout / 2 {
        s.poll_next().expect("a short outage is not an error");
    }
    broker.resume().unwrap();
    let more: Vec<Vec<u8>> = (100..200).map(record).collect();
    let records: Vec<OutRecord<'_>> = more
        .iter()
        .map(|v| OutRecord {
            topic: "outage",
            partition: Some(0),
            key: None,
            value: Some(v),
            headers: &[],
        })
        .collect();
    produce(&broker.bootstrap(), &records, &PRODUCER_SETTINGS).unwrap();
    read_ids(&mut s, &mut ids, 200, Duration::from_secs(30)).unwrap();
    assert_eq!(ids, (0..200).collect::<Vec<_>>(), "after the outage");

    // Silent past the timeout: an error that says so, not a source waiting forever.
    broker.pause().unwrap();
    let t0 = std::time::Instant::now();
    let r = read_ids(&mut s, &mut ids, usize::MAX, Duration::from_secs(30));
    let took = t0.elapsed();
    broker.resume().unwrap();
    let e = r.expect_err("the source should fail once the broker was silent past its timeout");
    assert!(
        e.contains(&broker.bootstrap()) && e.contains("broker timeout"),
        "the error names the brokers and the timeout: {e}"
    );
    assert!(
        took >= timeout && took < timeout * 4,
        "failed after {took:?} (timeout {timeout:?})"
    );
}

#[test]
fn undeliverable_and_oversized_records_are_errors_not_silent_losses() {
    use sabot::kafka::admin::Sender;
    let broker = Broker::start().unwrap();
    sabot::kafka::admin::create_topic(&broker.bootstrap(), "small", 1).unwrap();
    let big = vec![b'x'; 2000];
    let rec = |v: &'static [u8]| OutRecord {
        topic: "small",
        partition: Some(0),
        key: Some(b"k"),
        value: Some(v),
        headers: &[],
    };
    let big: &'static [u8] = big.leak();
    // Over the producer's message.max.bytes: refused before sending, with the sizes.
    let e = produce(
        &broker.bootstrap(),
        &[rec(big)],
        &[("message.max.bytes", "1000")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("2001 bytes") && e.contains("`small`") && e.contains("1000"),
        "{e}"
    );

    // The exactly-once sink refuses it as well, with the same clear error (checked when
    // the row is staged: a record that cannot be published never enters a checkpoint).
    let env = StreamEnv::new();
    let dir = tempfile::tempdir().unwrap();
    env.set_checkpoints(CheckpointSettings::new(
        dir.path().join("ckpt"),
        Duration::from_millis(50),
    ));
    fill(&broker, "wide-in", 1, 10, &[]);
    let mut fields: Vec<Field> = schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("pad", DataType::Utf8, false));
    let wide = Arc::new(Schema::new(fields));
    env.source(
        KafkaSource::new(&broker.bootstrap(), &["wide-in"], Codec::json(schema())).bounded(),
    )
    .with_column("pad", DataType::Utf8, |b| {
        let pad: sabot::arrow::array::StringArray =
            (0..b.num_rows()).map(|_| Some("p".repeat(1500))).collect();
        Ok(Arc::new(pad))
    })
    .sink(
        KafkaSink::new(&broker.bootstrap(), "small", Codec::json(wide))
            .guarantee(DeliveryGuarantee::ExactlyOnce)
            .set("message.max.bytes", "1000"),
    );
    let e = sabot_test_kit::error_chain(&env.execute().unwrap_err());
    assert!(
        e.contains("message.max.bytes of 1000") && e.contains("`small`"),
        "{e}"
    );

    // A broker that stops answering: the records time out and flush says so.
    let sender = Sender::new(
        &broker.bootstrap(),
        &[("message.timeout.ms", "1500"), PRODUCER_SETTINGS[0]],
    )
    .unwrap();
    sender.send(&rec(b"first")).unwrap();
    sender.flush().unwrap();
    broker.pause().unwrap();
    sender.send(&rec(b"lost")).unwrap();
    let t0 = std::time::Instant::now();
    let r = sender.flush();
    broker.resume().unwrap();
    let e = r
        .expect_err("an undelivered record must fail the flush")
        .to_string();
    assert!(
        e.contains("1 record(s) not delivered") && e.contains("topic `small`"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
}

fn run_policy(broker: &Broker, topic: &str, policy: BadRecords) -> sabot::runtime::JobResult {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.source(
        KafkaSource::new(&broker.bootstrap(), &[topic], Codec::json(schema()))
            .bounded()
            .bad_records(policy)
            .set_dead_letter_producer(PRODUCER_SETTINGS[0].0, PRODUCER_SETTINGS[0].1),
    )
    .sink(
        KafkaSink::new(
            &broker.bootstrap(),
            &format!("{topic}-good"),
            Codec::json(schema()),
        )
        .set(PRODUCER_SETTINGS[0].0, PRODUCER_SETTINGS[0].1),
    );
    env.execute().unwrap()
}

#[test]
fn bad_record_policies_drop_dead_letter_and_fail() {
    let broker = Broker::start().unwrap();
    let n = 20_000;
    // One bad record per 10,000 plus a burst of 25.
    let mut bad: Vec<i64> = (0..n).filter(|i| i % 10_000 == 1234).collect();
    bad.extend(15_000..15_025);
    for t in ["drop", "dlq", "fail"] {
        fill(&broker, t, 3, n, &bad);
        sabot::kafka::admin::create_topic(&broker.bootstrap(), &format!("{t}-good"), 1).unwrap();
    }

    let r = run_policy(&broker, "drop", BadRecords::Drop);
    assert_eq!(r.metric(BAD_RECORDS_DROPPED), bad.len() as u64);
    assert_each_once(&ids_in(&broker, "drop-good"), n, "drop: good output");

    sabot::kafka::admin::create_topic(&broker.bootstrap(), "dead", 1).unwrap();
    let r = run_policy(&broker, "dlq", BadRecords::DeadLetter("dead".into()));
    assert_eq!(r.metric(BAD_RECORDS_DEAD_LETTERED), bad.len() as u64);
    assert_each_once(&ids_in(&broker, "dlq-good"), n, "dead-letter: good output");
    let mut dead: Vec<(Vec<u8>, Vec<u8>)> = read_topic(&broker.bootstrap(), "dead", true)
        .unwrap()
        .into_iter()
        .map(|r| {
            let h: BTreeMap<_, _> = r.headers.into_iter().collect();
            assert_eq!(h["sabot.topic"], b"dlq");
            assert!(!h["sabot.error"].is_empty());
            assert!(h.contains_key("sabot.offset") && h.contains_key("sabot.partition"));
            (r.key.unwrap(), r.value.unwrap())
        })
        .collect();
    dead.sort();
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = bad
        .iter()
        .map(|id| {
            (
                format!("bad-{id}").into_bytes(),
                format!("{{broken {id}").into_bytes(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(
        dead, want,
        "the dead-letter topic holds exactly the bad records"
    );

    let env = StreamEnv::new();
    env.source(
        KafkaSource::new(&broker.bootstrap(), &["fail"], Codec::json(schema()))
            .bounded()
            .bad_records(BadRecords::Fail),
    )
    .sink(KafkaSink::new(
        &broker.bootstrap(),
        "fail-good",
        Codec::json(schema()),
    ));
    let e = sabot_test_kit::error_chain(&env.execute().unwrap_err());
    assert!(
        e.contains("topic `fail`") && e.contains("offset"),
        "the error names topic, partition and offset: {e}"
    );
}

#[test]
fn each_partition_is_read_by_one_subtask_and_spare_subtasks_go_idle() {
    let broker = Broker::start().unwrap();
    fill(&broker, "two", 2, 1000, &[]);
    let source = KafkaSource::new(&broker.bootstrap(), &["two"], Codec::json(schema())).bounded();
    let metrics = sabot::core::metrics::Metrics::default();
    let mut seen = Vec::new();
    for subtask in 0..3 {
        let mut s = source
            .create(&TaskContext::new(subtask, 3, 128, metrics.clone()))
            .unwrap();
        let mut ids = Vec::new();
        let mut first = None;
        loop {
            match s.poll_next().unwrap() {
                SourcePoll::Batch(b) => {
                    first.get_or_insert("batch");
                    ids.extend(first_column(&b));
                }
                SourcePoll::MarkIdle => {
                    first.get_or_insert("idle");
                }
                SourcePoll::End => break,
                _ => {}
            }
        }
        if subtask == 2 {
            assert!(ids.is_empty(), "subtask 2 of 3 has no partition of 2");
        } else {
            assert_eq!(ids.len(), 500, "subtask {subtask} reads one partition");
        }
        seen.extend(ids);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    // Unbounded, a subtask without partitions marks itself idle at once.
    let unbounded = KafkaSource::new(&broker.bootstrap(), &["two"], Codec::json(schema()));
    let mut s = unbounded
        .create(&TaskContext::new(2, 3, 128, metrics))
        .unwrap();
    assert!(matches!(s.poll_next().unwrap(), SourcePoll::MarkIdle));
}

#[test]
fn cli_topics_produce_and_consume() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let broker = Broker::start().unwrap();
    let b = broker.bootstrap();
    let sabot = env!("CARGO_BIN_EXE_sabot");
    let o = Command::new(sabot)
        .args([
            "topics",
            "create",
            "cli",
            "--partitions",
            "2",
            "--brokers",
            &b,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(sabot)
        .args(["topics", "list", "--brokers", &b])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("cli\t2 partitions"));
    // `sabot produce` with `input` on its stdin.
    let produce = |input: &[u8]| {
        let mut child = Command::new(sabot)
            .args([
                "produce",
                "--topic",
                "cli",
                "--key-separator",
                ":",
                "--brokers",
                &b,
            ])
            // One record per batch: see `PRODUCER_SETTINGS`.
            .arg(format!(
                "--producer-property={}={}",
                PRODUCER_SETTINGS[0].0, PRODUCER_SETTINGS[0].1
            ))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let o = produce(b"a:1\nb:2\nc:3\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(sabot)
        .args(["consume", "--topic", "cli", "--keys", "--brokers", &b])
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(lines, ["a\t1", "b\t2", "c\t3"]);
    // A line without the separator is a clear error.
    let o = produce(b"a:1\nnope\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 2"));
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Payment {
    account: i64,
    amount: i64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Crossed {
    account: i64,
    total: i64,
    payments: u32,
}

/// A Faust-style agent with a table: each account's running total, and one message when
/// it first passes a threshold; a second agent forwards every large payment.
#[test]
fn faust_agents_keep_tables_per_key_and_send_to_topics() {
    use sabot::app::{AgentContext, App};
    let broker = Broker::start().unwrap();
    sabot::kafka::admin::create_topic(&broker.bootstrap(), "payments", 3).unwrap();
    for t in ["crossed", "large"] {
        sabot::kafka::admin::create_topic(&broker.bootstrap(), t, 1).unwrap();
    }
    let payments: Vec<Payment> = (0..3000)
        .map(|i| Payment {
            account: i % 37,
            amount: (i * 7919) % 1000,
        })
        .collect();
    let values: Vec<(Vec<u8>, Vec<u8>)> = payments
        .iter()
        .map(|p| {
            (
                p.account.to_string().into_bytes(),
                serde_json::to_vec(p).unwrap(),
            )
        })
        .collect();
    let records: Vec<OutRecord<'_>> = values
        .iter()
        .map(|(k, v)| OutRecord {
            topic: "payments",
            partition: None,
            key: Some(k),
            value: Some(v),
            headers: &[],
        })
        .collect();
    produce(&broker.bootstrap(), &records, &PRODUCER_SETTINGS).unwrap();

    let app = App::new("fraud")
        .broker(&broker.bootstrap())
        .until_end()
        .producer_property(PRODUCER_SETTINGS[0].0, PRODUCER_SETTINGS[0].1);
    app.env().set_parallelism(2);
    let input = app.topic::<Payment>("payments");
    let crossed = app.topic::<Crossed>("crossed");
    let large = app.topic::<Payment>("large");
    let totals = app.table::<(i64, u32)>("totals");
    let (c, t) = (crossed.clone(), totals.clone());
    app.agent(&input, move |p: Payment, ctx: &mut AgentContext<'_, '_>| {
        let (before, n) = ctx.get(&t)?.unwrap_or((0, 0));
        let total = before + p.amount;
        ctx.set(&t, &(total, n + 1))?;
        if before <= 10_000 && total > 10_000 {
            let key = ctx.key().map(<[u8]>::to_vec);
            ctx.send(
                &c,
                key.as_deref(),
                &Crossed {
                    account: p.account,
                    total,
                    payments: n + 1,
                },
            )?;
        }
        Ok(())
    });
    let l = large.clone();
    app.agent(&input, move |p: Payment, ctx: &mut AgentContext<'_, '_>| {
        if p.amount >= 990 {
            ctx.send(&l, None, &p)?;
        }
        Ok(())
    });
    app.run().unwrap();

    // The model: per account in order (one partition per key keeps the order).
    let mut want_crossed = Vec::new();
    let mut running: BTreeMap<i64, (i64, u32)> = BTreeMap::new();
    for p in &payments {
        let e = running.entry(p.account).or_default();
        let before = e.0;
        *e = (e.0 + p.amount, e.1 + 1);
        if before <= 10_000 && e.0 > 10_000 {
            want_crossed.push(Crossed {
                account: p.account,
                total: e.0,
                payments: e.1,
            });
        }
    }
    want_crossed.sort();
    let mut got_crossed: Vec<Crossed> = read_topic(&broker.bootstrap(), "crossed", true)
        .unwrap()
        .iter()
        .map(|r| {
            let c: Crossed = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            assert_eq!(r.key.as_deref(), Some(c.account.to_string().as_bytes()));
            c
        })
        .collect();
    got_crossed.sort();
    assert!(!want_crossed.is_empty());
    assert_eq!(got_crossed, want_crossed);
    // Compared as sorted lists, so that a failure shows which payments are missing or
    // doubled (and whether they were among the input's last).
    let mut got_large: Vec<(i64, i64)> = read_topic(&broker.bootstrap(), "large", true)
        .unwrap()
        .iter()
        .map(|r| {
            let p: Payment = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            (p.account, p.amount)
        })
        .collect();
    got_large.sort_unstable();
    let mut want_large: Vec<(i64, i64)> = payments
        .iter()
        .filter(|p| p.amount >= 990)
        .map(|p| (p.account, p.amount))
        .collect();
    want_large.sort_unstable();
    assert_eq!(got_large, want_large);
}

/// A value that is not the agent's type stops the app with its topic and offset.
#[test]
fn a_bad_agent_record_names_its_offset() {
    use sabot::app::{AgentContext, App};
    let broker = Broker::start().unwrap();
    sabot::kafka::admin::create_topic(&broker.bootstrap(), "p", 1).unwrap();
    let good = serde_json::to_vec(&Payment {
        account: 1,
        amount: 2,
    })
    .unwrap();
    let records = [&good[..], b"{\"account\": \"x\"}", &good[..]].map(|v| OutRecord {
        topic: "p",
        partition: Some(0),
        key: None,
        value: Some(v),
        headers: &[],
    });
    produce(&broker.bootstrap(), &records, &PRODUCER_SETTINGS).unwrap();
    let app = App::new("bad").broker(&broker.bootstrap()).until_end();
    let input = app.topic::<Payment>("p");
    app.agent(&input, |_: Payment, _: &mut AgentContext<'_, '_>| Ok(()));
    let e = sabot_test_kit::error_chain(&app.run().unwrap_err());
    assert!(e.contains("topic `p` partition 0 offset 1"), "{e}");
}

/// `sabot demo --brokers` killed with `kill -9` three times and restarted on the same
/// checkpoint folder: a read-committed consumer sees every alert exactly once (the
/// alerts of a run that never crashed).
///
/// Ignored: the test broker (Tansu 0.6) cannot run it. It shows aborted transactions'
/// records to read-committed consumers, and its read-committed fetches stall on
/// partitions written by several transactional producers, so the sinks' recovery (which
/// reads the commit markers read-committed) waits on it. Seen here: `sabot consume
/// --read-committed` of the demo's spike-alerts topic read nothing for 60 s while a
/// plain read found every record, and in this test the restarted sinks were still in
/// recovery two seconds after the job started, so the kills came before any alert was
/// sent. With the sinks switched to at-least-once the test fails (duplicated alerts), so
/// it does check the guarantee. Run it against a broker that isolates transactions
/// (Apache Kafka): `SABOT_KAFKA_BROKERS=host:port cargo test -p sabot --test kafka --
/// --ignored kill_9`.
#[test]
#[ignore = "needs a broker that isolates transactions; Tansu 0.6 does not (see the doc comment)"]
fn kill_9_three_times_read_committed_sees_every_alert_once() {
    use std::process::{Command, Stdio};
    let local;
    let b = match std::env::var("SABOT_KAFKA_BROKERS") {
        Ok(b) => b,
        Err(_) => {
            local = Broker::start().unwrap();
            local.bootstrap()
        }
    };
    let sabot = env!("CARGO_BIN_EXE_sabot");
    let demo = |prefix: &str, ckpt: Option<&Path>| {
        let mut c = Command::new(sabot);
        c.args([
            "demo",
            "--events",
            "60000",
            "--accounts",
            "500",
            "--threshold",
            "300",
        ])
        .args(["--parallelism", "2", "--no-progress", "--brokers", &b])
        .args(["--topic-prefix", prefix, "--checkpoint-interval", "100"])
        .arg(format!(
            "--producer-property={}={}",
            PRODUCER_SETTINGS[0].0, PRODUCER_SETTINGS[0].1
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(d) = ckpt {
            c.arg("--checkpoint-dir").arg(d);
        }
        c
    };
    let alerts = |prefix: &str, committed: bool| {
        let mut all = Vec::new();
        for kind in ["window-alerts", "spike-alerts"] {
            let topic = format!("{prefix}-{kind}");
            let mut v: Vec<Vec<u8>> = read_topic(&b, &topic, committed)
                .unwrap()
                .into_iter()
                .filter_map(|r| r.value)
                .collect();
            v.sort();
            all.push(v);
        }
        all
    };
    let o = demo("reference", None).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = alerts("reference", false);
    assert!(!want[0].is_empty() && !want[1].is_empty());

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let mut killed_mid_job = 0;
    for wait_ms in [1000u64, 1500, 2000] {
        let mut child = demo("crashed", Some(&ckpt)).spawn().unwrap();
        // Wait for the job to start (after the load), then let it run a while.
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let started = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("transactions, 500 accounts"));
        // Keep reading its log, so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        if started {
            std::thread::sleep(Duration::from_millis(wait_ms));
        }
        // SIGKILL: no clean-up of any kind.
        kill_9(child.id());
        let status = child.wait().unwrap();
        if !status.success() {
            killed_mid_job += 1;
        }
    }
    assert!(
        killed_mid_job >= 2,
        "the job finished before most kills: no crash tested"
    );
    // The killed runs had sent alerts already (a plain read sees them): the crashes came
    // in the middle of the output.
    assert!(
        alerts("crashed", false).iter().any(|a| !a.is_empty()),
        "no alert was sent before the kills"
    );
    let o = demo("crashed", Some(&ckpt)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = alerts("crashed", true);
    for (kind, (g, w)) in ["window", "spike"].iter().zip(got.iter().zip(&want)) {
        assert!(
            g == w,
            "{kind} alerts read committed after 3 kill -9: {} records, want {} (lost or duplicated)",
            g.len(),
            w.len()
        );
    }
}

fn kill_9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}
