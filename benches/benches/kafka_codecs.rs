//! Decoding Kafka payloads into Arrow: Sabot's JSON and Avro codecs (8,192 payloads into
//! one batch, bad-payload detection included) next to the usual row decoders into plain
//! structs in the same run: `serde_json::from_slice` and `apache_avro::from_avro_datum`
//! plus `from_value` (the Confluent prefix skipped). Throughput is records per second.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use sabot::arrow::datatypes::{DataType, Field, Schema};
use sabot::kafka::Codec;

const ROWS: usize = 8192;

const ORDER_AVRO: &str = r#"{"type":"record","name":"Order","fields":[
    {"name":"id","type":"long"},
    {"name":"account","type":"long"},
    {"name":"name","type":["null","string"]},
    {"name":"price","type":"double"},
    {"name":"flag","type":"boolean"}]}"#;

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read by the decoders being measured
struct Order {
    id: i64,
    account: i64,
    name: Option<String>,
    price: f64,
    flag: bool,
}

fn orders(schema: &Arc<Schema>) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new((0..ROWS as i64).collect::<Int64Array>()),
        Arc::new(
            (0..ROWS as i64)
                .map(|i| i * 7919 % 10_007)
                .collect::<Int64Array>(),
        ),
        Arc::new(
            (0..ROWS)
                .map(|i| (i % 5 != 0).then(|| format!("customer-{i}")))
                .collect::<StringArray>(),
        ),
        Arc::new((0..ROWS).map(|i| i as f64 * 0.25).collect::<Float64Array>()),
        Arc::new(
            (0..ROWS)
                .map(|i| Some(i % 3 == 0))
                .collect::<BooleanArray>(),
        ),
    ];
    RecordBatch::try_new(schema.clone(), cols).expect("batch")
}

fn decode(c: &mut Criterion) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("account", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, false),
        Field::new("flag", DataType::Boolean, false),
    ]));
    let json = Codec::json(schema.clone());
    let avro = Codec::avro(ORDER_AVRO, 1).expect("schema");
    let batch = orders(&avro.schema());
    let json_payloads = json
        .encoder(&schema)
        .expect("encoder")
        .encode(&batch)
        .expect("json");
    let avro_payloads = avro
        .encoder(&avro.schema())
        .expect("encoder")
        .encode(&batch)
        .expect("avro");
    let json_refs: Vec<Option<&[u8]>> = json_payloads.iter().collect();
    let avro_refs: Vec<Option<&[u8]>> = avro_payloads.iter().collect();
    let avro_schema = apache_avro::Schema::parse_str(ORDER_AVRO).expect("schema");

    let mut g = c.benchmark_group("kafka_decode");
    g.throughput(Throughput::Elements(ROWS as u64));
    let mut decoder = json.decoder().expect("decoder");
    g.bench_function("json/sabot_arrow", |b| {
        b.iter(|| decoder.decode(&json_refs).expect("decode").batch.num_rows())
    });
    g.bench_function("json/serde_json_structs", |b| {
        b.iter(|| {
            json_refs
                .iter()
                .map(|p| serde_json::from_slice::<Order>(p.expect("value")).expect("order"))
                .collect::<Vec<_>>()
                .len()
        })
    });
    let mut decoder = avro.decoder().expect("decoder");
    g.bench_function("avro/sabot_arrow", |b| {
        b.iter(|| decoder.decode(&avro_refs).expect("decode").batch.num_rows())
    });
    g.bench_function("avro/apache_avro_structs", |b| {
        b.iter(|| {
            avro_refs
                .iter()
                .map(|p| {
                    // Skip the Confluent prefix (magic byte and schema id).
                    let mut body = &p.expect("value")[5..];
                    let v =
                        apache_avro::from_avro_datum(&avro_schema, &mut body, None).expect("datum");
                    apache_avro::from_value::<Order>(&v).expect("order")
                })
                .collect::<Vec<_>>()
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
