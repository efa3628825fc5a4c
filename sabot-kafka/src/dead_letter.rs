//! The dead-letter topic of a [`KafkaSource`](crate::KafkaSource): records the codec
//! cannot decode go there with their original key and bytes, plus headers
//! `sabot.topic`, `sabot.partition`, `sabot.offset` and `sabot.error` (and the record's
//! own headers). In a checkpointed job they are published exactly once through
//! [`crate::txn`]: staged with the checkpoint that read them, committed when it
//! completes, so a replay after a failure does not send them twice.

use rdkafka::message::{BorrowedMessage, Message};
use sabot_core::CheckpointId;
use sabot_operators::TaskContext;

use crate::Result;
use crate::admin::OutRecord;
use crate::txn::TxnLog;

/// A source subtask's dead-letter producer.
#[derive(Debug)]
pub(crate) struct DeadLetters {
    topic: String,
    log: TxnLog,
}

impl DeadLetters {
    /// A producer to `topic` for the source subtask of `ctx`, with transactional id
    /// `sabot-dlq-<id>`.
    pub(crate) fn open(
        bootstrap: &str,
        topic: &str,
        id: &str,
        ctx: &TaskContext,
        config: &[(String, String)],
    ) -> Result<Self> {
        let id = format!("sabot-dlq-{id}");
        let dir = ctx
            .checkpoint_dir
            .as_ref()
            .map(|d| d.join("kafka-transactions"));
        Ok(DeadLetters {
            topic: topic.to_owned(),
            log: TxnLog::open(bootstrap, &id, dir, config)?,
        })
    }

    /// Sends `m` with the reason it could not be decoded.
    pub(crate) fn send(&mut self, m: &BorrowedMessage<'_>, reason: &str) -> Result<()> {
        self.log.append(&OutRecord {
            topic: &self.topic,
            partition: None,
            key: m.key(),
            value: m.payload(),
            headers: &crate::source::dead_letter_headers(m, reason),
        })
    }

    /// Checkpoint barrier `id` passes the source.
    pub(crate) fn on_barrier(&mut self, id: CheckpointId) -> Result<()> {
        self.log.on_barrier(id)
    }

    /// Checkpoint `id` completed.
    pub(crate) fn on_complete(&mut self, id: CheckpointId) -> Result<()> {
        self.log.on_complete(id)
    }

    /// The input ended (a job without checkpoints): waits for the records to be sent.
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.log.flush()
    }

    /// After a restore from `restored`.
    pub(crate) fn recover(&mut self, restored: Option<CheckpointId>) -> Result<()> {
        self.log.recover(restored)
    }
}
