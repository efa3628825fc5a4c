//! Mistakes in a job's definition are clear errors when the job is built, not panics
//! while it runs.

use std::sync::Arc;
use std::time::Duration;

use sabot::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use sabot::arrow::datatypes::{DataType, Field, Schema};
use sabot::operators::VecSource;
use sabot::runtime::RuntimeError;
use sabot::{Aggregate, Error, Stream, StreamEnv, TumblingWindow};
use sabot_test_kit::{keyed_batches, keyed_schema};

fn keyed_source(env: &StreamEnv) -> Stream {
    env.source(VecSource::new(
        keyed_schema(),
        keyed_batches(1, 100, 10, 5, 1, 1),
    ))
}

fn build_error(env: &StreamEnv) -> String {
    let err = env.build().expect_err("the job must be rejected");
    sabot_test_kit::error_chain(&err)
}

#[test]
fn window_over_missing_column_is_a_build_error() {
    let env = StreamEnv::new();
    keyed_source(&env)
        .with_watermarks("ts", Duration::ZERO)
        .key_by(&["key"])
        .window(TumblingWindow::of(Duration::from_secs(1)))
        .aggregate([Aggregate::sum("amount")])
        .collect();
    let msg = build_error(&env);
    assert!(msg.contains("`amount` not found"), "{msg}");
    assert!(
        msg.contains("tumbling_window"),
        "the error names the operator: {msg}"
    );
}

#[test]
fn watermarks_on_missing_time_column_is_a_build_error() {
    let env = StreamEnv::new();
    keyed_source(&env)
        .with_watermarks("event_time", Duration::ZERO)
        .collect();
    let msg = build_error(&env);
    assert!(msg.contains("`event_time` not found"), "{msg}");
}

#[test]
fn window_without_event_time_is_a_build_error() {
    let env = StreamEnv::new();
    keyed_source(&env)
        .key_by(&["key"])
        .window(TumblingWindow::of(Duration::from_secs(1)))
        .aggregate([Aggregate::count()])
        .collect();
    let msg = build_error(&env);
    assert!(msg.contains("with_watermarks"), "{msg}");
}

#[test]
fn float_key_column_is_a_build_error() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("price", DataType::Float64, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Float64Array::from(vec![1.5])) as ArrayRef,
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    let env = StreamEnv::new();
    env.source(VecSource::new(schema, vec![batch]))
        .key_by(&["price"])
        .collect();
    let err = env.build().unwrap_err();
    let msg = sabot::core::ErrorChain(&err).to_string();
    assert!(msg.contains("`price`") && msg.contains("Float64"), "{msg}");
    assert!(
        matches!(err, Error::Runtime(RuntimeError::Build { .. })),
        "{err:?}"
    );
}

#[test]
fn parallelism_zero_is_a_build_error() {
    let env = StreamEnv::new();
    env.set_parallelism(0);
    keyed_source(&env).collect();
    let msg = build_error(&env);
    assert!(msg.contains("invalid parallelism 0"), "{msg}");
}

#[test]
fn job_without_sink_is_a_build_error() {
    let env = StreamEnv::new();
    let _ = keyed_source(&env).select(&["key"]);
    let msg = build_error(&env);
    assert!(msg.contains("no sink"), "{msg}");
}

#[test]
fn duplicate_output_column_is_a_build_error() {
    let env = StreamEnv::new();
    keyed_source(&env)
        .with_watermarks("ts", Duration::ZERO)
        .key_by(&["key"])
        .window(TumblingWindow::of(Duration::from_secs(1)))
        .aggregate([
            Aggregate::sum("value"),
            Aggregate::max("value").alias("sum_value"),
        ])
        .collect();
    let msg = build_error(&env);
    assert!(msg.contains("appears twice"), "{msg}");
}

#[test]
fn sum_over_text_column_is_a_build_error() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let env = StreamEnv::new();
    env.source(VecSource::new(schema, vec![]))
        .with_watermarks("ts", Duration::ZERO)
        .key_by(&["k"])
        .window(TumblingWindow::of(Duration::from_secs(1)))
        .aggregate([Aggregate::sum("name")])
        .collect();
    let msg = build_error(&env);
    assert!(msg.contains("`name`") && msg.contains("Utf8"), "{msg}");
}

#[test]
fn text_event_time_column_is_a_build_error() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("when", DataType::Utf8, false),
    ]));
    let env = StreamEnv::new();
    env.source(VecSource::new(schema, vec![]))
        .with_watermarks("when", Duration::ZERO)
        .collect();
    let msg = build_error(&env);
    assert!(msg.contains("`when`") && msg.contains("Utf8"), "{msg}");
    assert!(msg.contains("event time"), "{msg}");
}

#[test]
fn window_and_join_misuse_is_a_build_error() {
    use sabot::{CountWindow, SessionWindow};
    // Early firing is for tumbling and sliding windows.
    let env = StreamEnv::new();
    keyed_source(&env)
        .key_by(&["key"])
        .window(CountWindow::of(3))
        .early_firing(Duration::from_millis(10))
        .aggregate([Aggregate::count()])
        .collect();
    let msg = build_error(&env);
    assert!(msg.contains("early firing applies to tumbling"), "{msg}");
    // Session windows need event time.
    let env = StreamEnv::new();
    keyed_source(&env)
        .key_by(&["key"])
        .window(SessionWindow::with_gap(Duration::from_millis(10)))
        .aggregate([Aggregate::count()])
        .collect();
    let msg = build_error(&env);
    assert!(msg.contains("no event time"), "{msg}");
    // An interval join needs event time on both sides.
    let env = StreamEnv::new();
    let left = keyed_source(&env)
        .with_watermarks("ts", Duration::ZERO)
        .key_by(&["key"]);
    let right = keyed_source(&env).key_by(&["key"]);
    left.join(right).interval(0, 10).collect();
    let msg = build_error(&env);
    assert!(msg.contains("the right input has no event time"), "{msg}");
    // Join keys of different types cannot meet.
    let env = StreamEnv::new();
    let ints = Arc::new(Schema::new(vec![Field::new("key", DataType::Int32, false)]));
    let f = RecordBatch::try_new(
        ints.clone(),
        vec![Arc::new(sabot::arrow::array::Int32Array::from(vec![1])) as ArrayRef],
    )
    .unwrap();
    let left = keyed_source(&env).key_by(&["key"]);
    let right = env.source(VecSource::new(ints, vec![f])).key_by(&["key"]);
    left.join(right).regular(None).collect();
    let msg = build_error(&env);
    assert!(msg.contains("have the same type"), "{msg}");
}
