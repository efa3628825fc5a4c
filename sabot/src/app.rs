//! Faust-style Kafka agents: an [`App`] bound to a broker, typed [`Topic`]s, agents that
//! receive one deserialized record at a time and send records to other topics, and
//! [`Table`]s kept in the agent's keyed state.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use sabot::app::{AgentContext, App};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Payment { account: i64, amount: i64 }
//! #[derive(Serialize, Deserialize)]
//! struct Alert { account: i64, total: i64 }
//!
//! let app = App::new("fraud").broker("localhost:9092");
//! let payments = app.topic::<Payment>("payments");
//! let alerts = app.topic::<Alert>("alerts");
//! let totals = app.table::<i64>("totals");
//! app.agent(&payments, move |p: Payment, ctx: &mut AgentContext<'_, '_>| {
//!     // Payments are keyed by account: the table holds each account's running total.
//!     let total = ctx.get(&totals)?.unwrap_or(0) + p.amount;
//!     ctx.set(&totals, &total)?;
//!     if total > 1_000_000 {
//!         ctx.send(&alerts, Some(&p.account.to_le_bytes()), &Alert { account: p.account, total })?;
//!     }
//!     Ok(())
//! });
//! app.run().unwrap();
//! ```
//!
//! How it runs: each agent is a Sabot job branch `KafkaSource(topic, raw bytes, with
//! metadata) -> key_by(message key) -> keyed process function -> KafkaSink(per-row
//! topic)`. Records with the same message key reach the same subtask in order, so a
//! table entry (the agent's keyed state, checkpointed with the job) belongs to one
//! message key, as in Faust where tables are partitioned like their topics. Values are
//! JSON (serde). A value that does not deserialize stops the job with an error naming
//! topic, partition and offset. With [`App::exactly_once`] and checkpoints on the
//! [`App::env`], what agents send is committed exactly once with the checkpoints.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use sabot_core::arrow::array::{
    Array, AsArray, BinaryArray, BinaryBuilder, Int32Array, Int64Array, RecordBatch,
};
use sabot_core::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot_kafka::{Codec, DeliveryGuarantee, KafkaSink, KafkaSource};
use sabot_operators::{
    BoxError, KeyedContext, KeyedProcessFunction, OperatorError, ProcessState, Result as OpResult,
    RowWriter,
};
use sabot_state::{StateDescriptor, ValueState};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{JobResult, Result, Stream, StreamEnv};

/// A Kafka topic whose values are JSON-encoded `T`s.
pub struct Topic<T> {
    name: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> Topic<T> {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        Topic {
            name: self.name.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Topic").field(&self.name).finish()
    }
}

/// A table of `V` per message key, kept in the keyed state of the agents that use it
/// (declare tables before the agents; each agent has its own entries).
pub struct Table<V> {
    name: String,
    _v: PhantomData<fn() -> V>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Table {
            name: self.name.clone(),
            _v: PhantomData,
        }
    }
}

impl<V> fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Table").field(&self.name).finish()
    }
}

/// A Faust-style application: agents over Kafka topics. See the module docs.
pub struct App {
    name: String,
    brokers: String,
    env: StreamEnv,
    tables: Mutex<Vec<String>>,
    agents: Mutex<usize>,
    bounded: bool,
    guarantee: DeliveryGuarantee,
    producer: Vec<(String, String)>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl App {
    /// An application named `name` (it names consumer groups and transactional ids) on
    /// the broker at `localhost:9092` until [`broker`](Self::broker) says otherwise.
    pub fn new(name: &str) -> Self {
        let env = StreamEnv::new();
        env.set_name(name);
        App {
            name: name.to_owned(),
            brokers: "localhost:9092".to_owned(),
            env,
            tables: Mutex::new(Vec::new()),
            agents: Mutex::new(0),
            bounded: false,
            guarantee: DeliveryGuarantee::AtLeastOnce,
            producer: Vec::new(),
        }
    }

    /// The Kafka bootstrap servers, `HOST:PORT[,HOST:PORT]`.
    pub fn broker(mut self, brokers: &str) -> Self {
        self.brokers = brokers.to_owned();
        self
    }

    /// Agents stop at the end their topics had when they started (for tests and batch
    /// runs); by default they run until stopped.
    pub fn until_end(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// What agents send is committed with the job's checkpoints, exactly once (set
    /// checkpoints on [`env`](Self::env)).
    pub fn exactly_once(mut self) -> Self {
        self.guarantee = DeliveryGuarantee::ExactlyOnce;
        self
    }

    /// Sets a librdkafka property of the producers that send agents' records.
    pub fn producer_property(mut self, key: &str, value: &str) -> Self {
        self.producer.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The job environment: parallelism, checkpoints, state backend.
    pub fn env(&self) -> &StreamEnv {
        &self.env
    }

    /// A topic of JSON-encoded `T`s.
    pub fn topic<T>(&self, name: &str) -> Topic<T> {
        Topic {
            name: name.to_owned(),
            _t: PhantomData,
        }
    }

    /// A table of `V` per message key.
    pub fn table<V>(&self, name: &str) -> Table<V> {
        if let Ok(mut t) = self.tables.lock()
            && !t.iter().any(|n| n == name)
        {
            t.push(name.to_owned());
        }
        Table {
            name: name.to_owned(),
            _v: PhantomData,
        }
    }

    /// The records of `topic` as a stream of batches decoded by `codec`, with the
    /// metadata columns (`kafka_key`, `kafka_partition`, ...): for agents that work on
    /// batches with the whole [`Stream`] API.
    pub fn stream<T>(&self, topic: &Topic<T>, codec: Codec) -> Stream {
        let mut source = KafkaSource::new(&self.brokers, &[&topic.name], codec)
            .group_id(&format!("{}-{}", self.name, topic.name))
            .with_metadata();
        if self.bounded {
            source = source.bounded();
        }
        self.env.source(source)
    }

    /// A sink writing to `topic`, values encoded by `codec`, with the app's guarantee.
    pub fn sink<T>(&self, topic: &Topic<T>, codec: Codec) -> KafkaSink {
        let mut sink = KafkaSink::new(&self.brokers, &topic.name, codec)
            .guarantee(self.guarantee)
            .transactional_id_prefix(&format!("sabot-{}-{}", self.name, topic.name));
        for (k, v) in &self.producer {
            sink = sink.set(k, v);
        }
        sink
    }

    /// Runs `agent` on every record of `topic`, deserialized from JSON; records with the
    /// same message key come in order to the same agent instance.
    pub fn agent<T, F>(&self, topic: &Topic<T>, agent: F)
    where
        T: DeserializeOwned + 'static,
        F: FnMut(T, &mut AgentContext<'_, '_>) -> std::result::Result<(), BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let index = {
            let mut n = self.agents.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let tables = self.tables.lock().map(|t| t.clone()).unwrap_or_default();
        let name = format!("agent-{index}({})", topic.name);
        let topic_name = topic.name.clone();
        let sent = self
            .stream(topic, Codec::bytes())
            .key_by(&["kafka_key"])
            .process_fn(&name, agent_output(), move || AgentFn {
                agent: agent.clone(),
                topic: topic_name.clone(),
                table_names: tables.clone(),
                tables: Vec::new(),
                _t: PhantomData,
            });
        let sink = KafkaSink::new(
            &self.brokers,
            &format!("{}-unrouted", self.name),
            Codec::bytes(),
        )
        .topic_column("topic")
        .key_column("key")
        .value_columns(&["value"])
        .guarantee(self.guarantee)
        .transactional_id_prefix(&format!("sabot-{}-agent-{index}", self.name));
        let sink = self.producer.iter().fold(sink, |s, (k, v)| s.set(k, v));
        sent.sink(sink);
    }

    /// Runs the agents (until their topics end, with [`until_end`](Self::until_end)).
    pub fn run(&self) -> Result<JobResult> {
        self.env.execute()
    }
}

/// The rows an agent sends: target topic, key, JSON value.
fn agent_output() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, false),
    ]))
}

/// What an agent can do with the record it was given.
pub struct AgentContext<'a, 'b> {
    key: Option<&'a [u8]>,
    keyed: &'a mut KeyedContext<'b>,
    out: &'a mut RowWriter,
    tables: &'a [(String, ValueState<Vec<u8>>)],
}

impl fmt::Debug for AgentContext<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentContext")
            .field("key", &self.key)
            .finish()
    }
}

impl AgentContext<'_, '_> {
    /// The record's message key.
    pub fn key(&self) -> Option<&[u8]> {
        self.key
    }

    /// Sends `value` (as JSON) with `key` to `topic`.
    pub fn send<U: Serialize>(
        &mut self,
        topic: &Topic<U>,
        key: Option<&[u8]>,
        value: &U,
    ) -> std::result::Result<(), BoxError> {
        let json = serde_json::to_vec(value)?;
        self.out.append_str(0, &topic.name)?;
        let keys = self.out.column::<BinaryBuilder>(1)?;
        match key {
            Some(k) => keys.append_value(k),
            None => keys.append_null(),
        }
        self.out.column::<BinaryBuilder>(2)?.append_value(json);
        Ok(())
    }

    fn state<'t>(
        tables: &'t [(String, ValueState<Vec<u8>>)],
        table: &str,
    ) -> std::result::Result<&'t ValueState<Vec<u8>>, BoxError> {
        tables
            .iter()
            .find(|(n, _)| n == table)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                format!("table `{table}` was declared after this agent: declare tables first")
                    .into()
            })
    }

    /// This key's entry of `table`.
    pub fn get<V: DeserializeOwned>(
        &mut self,
        table: &Table<V>,
    ) -> std::result::Result<Option<V>, BoxError> {
        let state = Self::state(self.tables, &table.name)?;
        match state.get(self.keyed.state())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Sets this key's entry of `table`.
    pub fn set<V: Serialize>(
        &mut self,
        table: &Table<V>,
        value: &V,
    ) -> std::result::Result<(), BoxError> {
        let bytes = serde_json::to_vec(value)?;
        let state = Self::state(self.tables, &table.name)?;
        state.update(self.keyed.state(), &bytes)?;
        Ok(())
    }
}

/// An agent as a keyed process function.
struct AgentFn<T, F> {
    agent: F,
    topic: String,
    table_names: Vec<String>,
    tables: Vec<(String, ValueState<Vec<u8>>)>,
    _t: PhantomData<fn() -> T>,
}

impl<T, F> KeyedProcessFunction for AgentFn<T, F>
where
    T: DeserializeOwned,
    F: FnMut(T, &mut AgentContext<'_, '_>) -> std::result::Result<(), BoxError> + Send,
{
    fn open(&mut self, state: &mut ProcessState) -> OpResult<()> {
        self.tables = self
            .table_names
            .iter()
            .map(|n| Ok((n.clone(), state.value_state(StateDescriptor::new(n))?)))
            .collect::<OpResult<_>>()?;
        Ok(())
    }

    fn process_element(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> OpResult<()> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| OperatorError::invalid_plan("agent", format!("no `{name}` column")))
        };
        let values = column("value")?.as_binary::<i32>();
        // A tombstone carries no record.
        if values.is_null(row) {
            return Ok(());
        }
        let record: T = serde_json::from_slice(values.value(row)).map_err(|e| {
            let partition = column("kafka_partition").ok().and_then(|c| {
                c.as_any()
                    .downcast_ref::<Int32Array>()
                    .map(|a| a.value(row))
            });
            let offset = column("kafka_offset").ok().and_then(|c| {
                c.as_any()
                    .downcast_ref::<Int64Array>()
                    .map(|a| a.value(row))
            });
            OperatorError::BadRecord {
                reason: format!("the value is not the agent's record type: {e}"),
                position: format!(
                    "topic `{}` partition {} offset {}",
                    self.topic,
                    partition.unwrap_or(-1),
                    offset.unwrap_or(-1)
                ),
            }
        })?;
        let keys = column("kafka_key")?;
        let keys = keys.as_any().downcast_ref::<BinaryArray>();
        let key = keys.and_then(|k| k.is_valid(row).then(|| k.value(row)));
        let mut actx = AgentContext {
            key,
            keyed: ctx,
            out,
            tables: &self.tables,
        };
        (self.agent)(record, &mut actx).map_err(|e| OperatorError::user(self.topic.clone(), e))
    }
}
