//! Morsel-driven parallelism: map, filter and with_column over random batches split into
//! random morsels on several threads give the same rows, in the same order, as the
//! operators without morsels; errors still come out; morsels really run in parallel.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use sabot_core::arrow::array::{AsArray, BooleanArray, Int64Array};
use sabot_core::arrow::compute::kernels::numeric::mul;
use sabot_core::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot_core::metrics::Metrics;
use sabot_core::{Message, RecordBatch};
use sabot_operators::{
    FilterFactory, MapFactory, Morsels, OperatorFactory, Output, TaskContext, WithColumnFactory,
};

fn batch(values: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
}

/// Every output row of `factory` over `input`, in order, as (v, extra column if any).
fn run(
    factory: &dyn OperatorFactory,
    input: &RecordBatch,
) -> sabot_operators::Result<Vec<Vec<i64>>> {
    let ctx = TaskContext::new(0, 1, 128, Metrics::new());
    let mut op = factory.create(&input.schema(), &ctx)?;
    let mut out = Output::new();
    op.on_batch(input.clone(), &mut out)?;
    let mut rows = Vec::new();
    for m in out.drain() {
        if let Message::Data(b) = m {
            for i in 0..b.num_rows() {
                rows.push(
                    b.columns()
                        .iter()
                        .map(|c| c.as_primitive::<Int64Type>().value(i))
                        .collect(),
                );
            }
        }
    }
    Ok(rows)
}

fn map() -> MapFactory {
    MapFactory::new("negate", |b| {
        let v = b.column(0).as_primitive::<Int64Type>();
        let neg = Int64Array::from_iter_values(v.values().iter().map(|x| -x));
        Ok(RecordBatch::try_new(b.schema(), vec![Arc::new(neg)])?)
    })
}

fn filter() -> FilterFactory {
    FilterFactory::new("odd", |b| {
        let v = b.column(0).as_primitive::<Int64Type>();
        Ok(BooleanArray::from_iter(
            v.values().iter().map(|x| Some(x % 2 != 0)),
        ))
    })
}

fn with_column() -> WithColumnFactory {
    WithColumnFactory::new("triple", DataType::Int64, |b| {
        Ok(mul(b.column(0), &Int64Array::new_scalar(3))?)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn morsels_change_nothing_but_speed(
        values in proptest::collection::vec(-1000i64..1000, 0..3000),
        threads in 1usize..5,
        threshold in 0usize..500,
        morsel in 1usize..700,
    ) {
        let m = Morsels::new(threads).threshold_rows(threshold).morsel_rows(morsel);
        let input = batch(&values);
        prop_assert_eq!(run(&map().with_morsels(m), &input).unwrap(), run(&map(), &input).unwrap());
        prop_assert_eq!(run(&filter().with_morsels(m), &input).unwrap(), run(&filter(), &input).unwrap());
        prop_assert_eq!(
            run(&with_column().with_morsels(m), &input).unwrap(),
            run(&with_column(), &input).unwrap()
        );
    }
}

#[test]
fn an_error_in_one_morsel_fails_the_batch() {
    let failing = MapFactory::new("picky", |b| {
        let v = b.column(0).as_primitive::<Int64Type>();
        if v.values().contains(&7_777) {
            return Err("found 7777".into());
        }
        Ok(b)
    })
    .with_morsels(Morsels::new(3).threshold_rows(10).morsel_rows(100));
    let values: Vec<i64> = (0..10_000).collect();
    let e = sabot_core::ErrorChain(&run(&failing, &batch(&values)).unwrap_err()).to_string();
    assert!(e.contains("found 7777") && e.contains("picky"), "{e}");
}

#[test]
fn a_large_batch_is_processed_on_several_threads() {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let s = seen.clone();
    let slow = MapFactory::new("slow", move |b| {
        s.lock().unwrap().insert(std::thread::current().id());
        std::thread::sleep(std::time::Duration::from_millis(5));
        Ok(b)
    })
    .with_morsels(Morsels::new(2).threshold_rows(1_000).morsel_rows(1_000));
    let values: Vec<i64> = (0..8_000).collect();
    let rows = run(&slow, &batch(&values)).unwrap();
    assert_eq!(rows.len(), 8_000);
    assert_eq!(seen.lock().unwrap().len(), 2, "two threads took morsels");
    // Below the threshold: the subtask's own thread only.
    seen.lock().unwrap().clear();
    run(&slow, &batch(&values[..999])).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}
