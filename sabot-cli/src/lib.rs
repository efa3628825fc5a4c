//! The library half of the `sabot` command: the fraud-detection [`demo`] job that
//! `sabot demo` runs (also used by the benchmarks and tests).
//!
//! The command itself (`sabot demo`, `sabot worker`, `sabot nexmark`, `sabot checkpoints`,
//! `sabot topics`/`produce`/`consume`) is this crate's binary; `sabot --help` lists it.

pub mod demo;
