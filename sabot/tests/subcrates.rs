//! The facade's re-exports resolve to the component crates.

#[test]
fn reexports_resolve() {
    let _: sabot::core::Timestamp = sabot::core::Timestamp::MIN;
    let _ = sabot::time::WatermarkTracker::new(1);
    let _ = sabot::shuffle::queue::bounded::<u8>(1);
    let _ = sabot::operators::Aggregate::count();
    let _ = sabot::runtime::JobConfig::default();
    let _ = sabot::state::StateError::NothingToRestore;
    let _ = sabot::checkpoint::CoordinatorConfig::default();
    let _ = sabot::kafka::Codec::text();
    let _ = sabot::StreamEnv::new();
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<sabot::Error>();
    check::<sabot::JobResult>();
    check::<sabot::runtime::JobGraph>();
    check::<sabot::operators::Collected>();
}
