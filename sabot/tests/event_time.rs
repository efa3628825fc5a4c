//! Event time end to end: idle partitions, late data on the side output, allowed
//! lateness, null event times.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sabot::arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use sabot::arrow::datatypes::Int64Type;
use sabot::core::{BadRecordPolicy, SchemaRef};
use sabot::operators::{
    LATE_RECORDS_DROPPED, NULL_EVENT_TIME_DROPPED, Result, Sink, SinkFactory, Source,
    SourceFactory, SourcePoll, TaskContext, VecSource, WatermarkFactory,
};
use sabot::time::WatermarkStrategy;
use sabot::{Aggregate, StreamEnv, TumblingWindow};
use sabot_test_kit::{int64_batch, keyed_schema};

const LATE_MARKER: i64 = 999_999;

/// Shared between the scripted source and the sinks of one test.
#[derive(Debug, Default)]
struct Script {
    /// Partition 3 came back from its silence.
    resumed: AtomicBool,
    /// Window results that arrived while partition 3 was silent.
    results_while_silent: AtomicUsize,
}

/// Four partitions of (key, value, ts). Partitions 0-2 advance event time by 1 s per
/// batch every 5 ms of real time; partition 3 sends one batch, falls silent for 600 ms
/// (real time), then sends one record far behind the watermark, and ends.
#[derive(Debug, Clone)]
struct ScriptedSource(Arc<Script>);

struct Partition {
    index: usize,
    step: i64,
    script: Arc<Script>,
    silent_since: Option<std::time::Instant>,
    after_resume: usize,
}

impl SourceFactory for ScriptedSource {
    fn name(&self) -> String {
        "scripted".into()
    }
    fn schema(&self) -> SchemaRef {
        keyed_schema()
    }
    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Source>> {
        Ok(Box::new(Partition {
            index: ctx.subtask,
            step: 0,
            script: self.0.clone(),
            silent_since: None,
            after_resume: 0,
        }))
    }
}

impl Source for Partition {
    fn poll_next(&mut self) -> Result<SourcePoll> {
        let resumed = self.script.resumed.load(Ordering::SeqCst);
        if self.index == 3 {
            return Ok(match self.step {
                0 => {
                    self.step = 1;
                    self.silent_since = Some(std::time::Instant::now());
                    SourcePoll::Batch(rows(3, 0))
                }
                1 if self
                    .silent_since
                    .is_some_and(|t| t.elapsed() < Duration::from_millis(600)) =>
                {
                    SourcePoll::Idle
                }
                1 => {
                    self.step = 2;
                    self.script.resumed.store(true, Ordering::SeqCst);
                    // Event time 500 ms: its window [0, 1 s) fired long ago.
                    SourcePoll::Batch(int64_batch(&[
                        ("key", vec![3]),
                        ("value", vec![LATE_MARKER]),
                        ("ts", vec![500]),
                    ]))
                }
                _ => SourcePoll::End,
            });
        }
        if resumed {
            self.after_resume += 1;
            if self.after_resume > 3 {
                return Ok(SourcePoll::End);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
        self.step += 1;
        Ok(SourcePoll::Batch(rows(
            self.index as i64,
            self.step * 1_000,
        )))
    }
}

/// Two rows of partition `p` at event time `ts`.
fn rows(p: i64, ts: i64) -> RecordBatch {
    int64_batch(&[
        ("key", vec![p, p + 10]),
        ("value", vec![1, 1]),
        ("ts", vec![ts, ts + 1]),
    ])
}

/// Counts window results, noting those that arrived while partition 3 was silent.
#[derive(Debug, Clone)]
struct WatchingSink(Arc<Script>, Arc<std::sync::Mutex<Vec<RecordBatch>>>);

impl SinkFactory for WatchingSink {
    fn name(&self) -> String {
        "watching".into()
    }
    fn create(&self, _input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

impl Sink for WatchingSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if !self.0.resumed.load(Ordering::SeqCst) {
            self.0
                .results_while_silent
                .fetch_add(batch.num_rows(), Ordering::SeqCst);
        }
        self.1.lock().unwrap().push(batch);
        Ok(())
    }
}

fn run_idle_job(
    idle_timeout: Option<Duration>,
) -> (
    Arc<Script>,
    sabot::JobResult,
    Vec<RecordBatch>,
    Vec<RecordBatch>,
) {
    let script = Arc::new(Script::default());
    let env = StreamEnv::new();
    env.set_parallelism(4);
    let mut watermarks = WatermarkFactory::new("ts", WatermarkStrategy::Monotonic);
    if let Some(t) = idle_timeout {
        watermarks = watermarks.idle_timeout(t);
    }
    let windows = env
        .source(ScriptedSource(script.clone()))
        .with_event_time(watermarks)
        .key_by(&["key"])
        .window(TumblingWindow::of(Duration::from_secs(1)))
        .aggregate([
            Aggregate::sum("value").alias("total"),
            Aggregate::count().alias("n"),
        ]);
    let late = windows.late_data().collect();
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    windows.sink(WatchingSink(script.clone(), results.clone()));
    let result = env.execute().unwrap();
    let results = results.lock().unwrap().clone();
    (script, result, results, late.batches())
}

#[test]
fn silent_partition_stops_holding_back_windows_after_idle_timeout() {
    let (script, result, results, late) = run_idle_job(Some(Duration::from_millis(100)));
    assert!(
        script.results_while_silent.load(Ordering::SeqCst) > 0,
        "windows must fire while partition 3 is silent"
    );
    // The record partition 3 sent after its silence was behind the watermark: it is on the
    // side output, unchanged, and counted.
    assert_eq!(result.metric(LATE_RECORDS_DROPPED), 1);
    let late_values: Vec<i64> = late
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(late_values, [LATE_MARKER]);
    // Nothing lost: every other record is counted in exactly one window.
    let counted: i64 = results
        .iter()
        .flat_map(|b| {
            b.column_by_name("n")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .sum();
    let emitted = result.metric(sabot::runtime::SOURCE_RECORDS) as i64;
    assert_eq!(counted + 1, emitted);
}

#[test]
fn without_idle_timeout_a_silent_partition_holds_windows_back() {
    // The same job without idleness: the guarantee above really comes from the timeout.
    let (script, result, _, late) = run_idle_job(None);
    assert_eq!(script.results_while_silent.load(Ordering::SeqCst), 0);
    // The old record is then not late at all.
    assert_eq!(result.metric(LATE_RECORDS_DROPPED), 0);
    assert!(late.is_empty());
}

/// Sources with more subtasks than partitions: the extra subtasks poll idle until the
/// data they would hold back has produced results.
#[derive(Debug, Clone)]
struct TwoPartitions(Arc<AtomicBool>);

struct TwoPartitionTask {
    index: usize,
    batches: i64,
    seen: Arc<AtomicBool>,
}

impl SourceFactory for TwoPartitions {
    fn name(&self) -> String {
        "two-partitions".into()
    }
    fn schema(&self) -> SchemaRef {
        keyed_schema()
    }
    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Source>> {
        Ok(Box::new(TwoPartitionTask {
            index: ctx.subtask,
            batches: 0,
            seen: self.0.clone(),
        }))
    }
}

impl Source for TwoPartitionTask {
    fn poll_next(&mut self) -> Result<SourcePoll> {
        let seen = self.seen.load(Ordering::SeqCst);
        if self.index >= 2 {
            // No partition for this subtask: idle until the job has shown progress.
            return Ok(if seen {
                SourcePoll::End
            } else {
                SourcePoll::Idle
            });
        }
        if seen && self.batches > 0 {
            return Ok(SourcePoll::End);
        }
        self.batches += 1;
        std::thread::sleep(Duration::from_millis(2));
        Ok(SourcePoll::Batch(rows(
            self.index as i64,
            self.batches * 1_000,
        )))
    }
}

#[derive(Debug, Clone)]
struct FlagSink(Arc<AtomicBool>);

impl SinkFactory for FlagSink {
    fn name(&self) -> String {
        "flag".into()
    }
    fn create(&self, _input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

impl Sink for FlagSink {
    fn write(&mut self, _batch: RecordBatch) -> Result<()> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn more_subtasks_than_partitions_still_make_progress() {
    let seen = Arc::new(AtomicBool::new(false));
    let env = StreamEnv::new();
    env.set_parallelism(4);
    env.source(TwoPartitions(seen.clone()))
        .with_event_time(
            WatermarkFactory::new("ts", WatermarkStrategy::Monotonic)
                .idle_timeout(Duration::from_millis(50)),
        )
        .key_by(&["key"])
        .window(TumblingWindow::of(Duration::from_secs(1)))
        .aggregate([Aggregate::count()])
        .sink(FlagSink(seen.clone()));
    let (tx, rx) = std::sync::mpsc::channel();
    let job = env.build().unwrap();
    std::thread::spawn(move || {
        let _ = tx.send(job.run());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the job stalled: idle subtasks held the watermark back")
        .unwrap();
    assert!(seen.load(Ordering::SeqCst));
}

#[test]
fn allowed_lateness_updates_fired_windows() {
    // One partition: window [0, 10) fires at watermark 9, then a record at ts 5 arrives
    // within the allowed lateness and updates it; one at ts 1 after that is too late.
    let batches = vec![
        int64_batch(&[
            ("key", vec![1, 1]),
            ("value", vec![10, 20]),
            ("ts", vec![2, 8]),
        ]),
        int64_batch(&[("key", vec![1]), ("value", vec![1]), ("ts", vec![12])]), // wm 11
        int64_batch(&[("key", vec![1]), ("value", vec![5]), ("ts", vec![5])]),  // late, allowed
        int64_batch(&[("key", vec![1]), ("value", vec![1]), ("ts", vec![40])]), // wm 39
        int64_batch(&[("key", vec![1]), ("value", vec![7]), ("ts", vec![6])]),  // too late
    ];
    let env = StreamEnv::new();
    let windows = env
        .source(VecSource::new(keyed_schema(), batches))
        .with_event_time(WatermarkFactory::new("ts", WatermarkStrategy::Monotonic))
        .key_by(&["key"])
        .window(TumblingWindow::of(Duration::from_millis(10)))
        .allowed_lateness(Duration::from_millis(20))
        .aggregate([Aggregate::sum("value").alias("total")]);
    let late = windows.late_data().collect();
    let out = windows.collect();
    let result = env.execute().unwrap();
    let firings: Vec<(i64, i64)> = out
        .batches()
        .iter()
        .flat_map(|b| {
            let s = b
                .column_by_name("window_start")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let t = b
                .column_by_name("total")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            (0..b.num_rows())
                .map(move |i| (s.value(i), t.value(i)))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(firings, [(0, 30), (0, 35), (10, 1), (40, 1)]);
    assert_eq!(late.num_rows(), 1);
    assert_eq!(result.metric(LATE_RECORDS_DROPPED), 1);
    assert_eq!(result.metric(sabot::operators::LATE_RECORDS), 2);
}

fn batches_with_null_time() -> Vec<RecordBatch> {
    let ts: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2, 3])),
        Arc::new(Int64Array::from(vec![1, 1, 1])),
        ts,
    ];
    let schema = Arc::new(sabot::arrow::datatypes::Schema::new(vec![
        sabot::arrow::datatypes::Field::new("key", sabot::arrow::datatypes::DataType::Int64, false),
        sabot::arrow::datatypes::Field::new(
            "value",
            sabot::arrow::datatypes::DataType::Int64,
            false,
        ),
        sabot::arrow::datatypes::Field::new("ts", sabot::arrow::datatypes::DataType::Int64, true),
    ]));
    vec![RecordBatch::try_new(schema, cols).unwrap()]
}

fn null_time_job(policy: BadRecordPolicy) -> (StreamEnv, sabot::operators::Collected) {
    let batches = batches_with_null_time();
    let env = StreamEnv::new();
    env.set_bad_record_policy(policy);
    let out = env
        .source(VecSource::new(batches[0].schema(), batches))
        .with_watermarks("ts", Duration::ZERO)
        .key_by(&["key"])
        .window(TumblingWindow::of(Duration::from_millis(10)))
        .aggregate([Aggregate::count().alias("n")])
        .collect();
    (env, out)
}

#[test]
fn null_event_time_fails_the_job_naming_the_row() {
    let (env, _) = null_time_job(BadRecordPolicy::Fail);
    let err = sabot::core::ErrorChain(&env.execute().unwrap_err()).to_string();
    assert!(err.contains("null event time in column `ts`"), "{err}");
    assert!(err.contains("row 1 of batch 0"), "{err}");
}

#[test]
fn null_event_time_is_dropped_and_counted_under_the_drop_policy() {
    let (env, out) = null_time_job(BadRecordPolicy::Drop);
    let result = env.execute().unwrap();
    assert_eq!(result.metric(NULL_EVENT_TIME_DROPPED), 1);
    assert_eq!(out.num_rows(), 2);
}

#[test]
fn late_data_of_an_operator_without_that_side_output_is_a_build_error() {
    let env = StreamEnv::new();
    env.source(VecSource::new(keyed_schema(), vec![]))
        .select(&["key"])
        .late_data()
        .collect();
    let err = env.build().unwrap_err().to_string();
    assert!(err.contains("no side output `late-data`"), "{err}");
}
