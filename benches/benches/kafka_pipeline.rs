//! The fraud demo through a real Kafka-compatible broker (Tansu, started here), end to
//! end: load `SABOT_KAFKA_EVENTS` transactions (default 20,000) into a topic and run the
//! fraud job from it to the alert topics, next to the broker's own throughput in the
//! same run: producing the same JSON records and reading them back with a plain client.
//! Both use one record per produce batch (what the test broker needs to keep every
//! record; see `sabot_test_kit::kafka::PRODUCER_SETTINGS`). Throughput is transactions
//! per second.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::StreamEnv;
use sabot::kafka::admin::{OutRecord, Sender, create_topic, read_topic};
use sabot::kafka::{Codec, Payloads};
use sabot::operators::{SourceFactory, SourcePoll, TaskContext};
use sabot_cli::demo::{FraudRules, GeneratorConfig, KafkaDemo, TransactionGenerator};
use sabot_test_kit::kafka::{Broker, PRODUCER_SETTINGS};

fn generator(events: u64) -> TransactionGenerator {
    let mut config = GeneratorConfig::default();
    config.events = events;
    config.accounts = 1_000;
    TransactionGenerator::new(config).expect("generator")
}

/// The generator's transactions as JSON payloads.
fn payloads(g: &TransactionGenerator) -> Vec<Payloads> {
    let schema = g.schema();
    let mut encoder = Codec::json(schema.clone())
        .encoder(&schema)
        .expect("encoder");
    let mut source = g
        .create(&TaskContext::new(
            0,
            1,
            128,
            sabot::core::metrics::Metrics::new(),
        ))
        .expect("source");
    let mut out = Vec::new();
    while let SourcePoll::Batch(b) = source.poll_next().expect("poll") {
        out.push(encoder.encode(&b).expect("encode"));
    }
    out
}

fn pipeline(c: &mut Criterion) {
    let events: u64 = std::env::var("SABOT_KAFKA_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let broker = Broker::start().expect("broker");
    let b = broker.bootstrap();
    let g = generator(events);
    let json = payloads(&g);
    let round = AtomicUsize::new(0);
    let mut group = c.benchmark_group("kafka_pipeline");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(40))
        .throughput(Throughput::Elements(events));
    group.bench_function("broker_produce_consume", |bench| {
        bench.iter(|| {
            let topic = format!("raw-{}", round.fetch_add(1, Ordering::Relaxed));
            create_topic(&b, &topic, 3).expect("topic");
            let sender = Sender::new(&b, &PRODUCER_SETTINGS).expect("sender");
            for p in &json {
                for (i, value) in p.iter().enumerate() {
                    sender
                        .send(&OutRecord {
                            topic: &topic,
                            partition: Some((i % 3) as i32),
                            key: None,
                            value,
                            headers: &[],
                        })
                        .expect("send");
                }
            }
            sender.flush().expect("flush");
            let n = read_topic(&b, &topic, false).expect("read").len();
            assert_eq!(n as u64, events);
        })
    });
    group.bench_function("fraud_demo_through_broker", |bench| {
        bench.iter(|| {
            let mut demo = KafkaDemo::new(&b, 3);
            demo.prefix = format!("demo-{}", round.fetch_add(1, Ordering::Relaxed));
            demo.producer = PRODUCER_SETTINGS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            demo.load(&g).expect("load");
            let env = StreamEnv::new();
            env.set_parallelism(2);
            demo.job(&env, &g, &FraudRules::default()).expect("job");
            let r = env.execute().expect("run");
            assert_eq!(r.metric(sabot::runtime::SOURCE_RECORDS), events);
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
