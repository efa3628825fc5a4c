//! `sabot checkpoints list` and `sabot checkpoints inspect`.

use anyhow::{Context, Result};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum CheckpointsCommand {
    /// List every checkpoint in the folder, complete or not, oldest first.
    List {
        /// The checkpoint folder (a job's --checkpoint-dir).
        dir: std::path::PathBuf,
    },
    /// Show one checkpoint: its metadata and files, and whether every file is intact.
    Inspect {
        /// The checkpoint folder (a job's --checkpoint-dir).
        dir: std::path::PathBuf,
        /// The checkpoint to show (default: the newest complete one).
        #[arg(long)]
        id: Option<u64>,
    },
}

/// Runs `sabot checkpoints <command>`.
pub(crate) fn run(command: CheckpointsCommand) -> Result<()> {
    use sabot::checkpoint::storage::{CheckpointStorage, Listed};
    let dir = match &command {
        CheckpointsCommand::List { dir } | CheckpointsCommand::Inspect { dir, .. } => dir,
    };
    if !dir.is_dir() {
        anyhow::bail!("{} is not a folder", dir.display());
    }
    let storage = CheckpointStorage::open(dir)
        .with_context(|| format!("cannot open the checkpoint folder {}", dir.display()))?;
    match command {
        CheckpointsCommand::List { .. } => {
            let all = storage.list()?;
            if all.is_empty() {
                println!("No checkpoints in {}", dir.display());
                return Ok(());
            }
            println!(
                "{:>8}  {:<10}  {:>6}  {:>14}  {:>15}",
                "id", "status", "files", "bytes", "created (ms)"
            );
            for l in all {
                match l {
                    Listed::Complete(m) => println!(
                        "{:>8}  {:<10}  {:>6}  {:>14}  {:>15}",
                        m.id.0,
                        "complete",
                        m.files.len(),
                        m.bytes(),
                        m.created_ms
                    ),
                    Listed::Incomplete { id, reason } => {
                        println!("{:>8}  {:<10}  {reason}", id.0, "incomplete")
                    }
                }
            }
        }
        CheckpointsCommand::Inspect { id, .. } => {
            let manifest = match id {
                Some(id) => storage.manifest(sabot::core::CheckpointId(id))?,
                None => storage
                    .completed()?
                    .pop()
                    .with_context(|| format!("no complete checkpoint in {}", dir.display()))?,
            };
            println!(
                "Checkpoint {} in {}",
                manifest.id.0,
                storage.dir(manifest.id).display()
            );
            println!("Created: {} ms since the epoch", manifest.created_ms);
            match storage.verify(&manifest) {
                Ok(()) => println!(
                    "Files: {} ({} bytes), all intact",
                    manifest.files.len(),
                    manifest.bytes()
                ),
                Err(e) => println!(
                    "Files: {} ({} bytes), DAMAGED: {}",
                    manifest.files.len(),
                    manifest.bytes(),
                    sabot::core::ErrorChain(&e)
                ),
            }
            if !manifest.meta.is_empty() {
                println!("\nMetadata:");
                for (k, v) in &manifest.meta {
                    println!("  {k} = {v}");
                }
            }
            println!("\n  {:>12}  {:>8}  path", "bytes", "crc32");
            for f in &manifest.files {
                println!("  {:>12}  {:08x}  {}", f.len, f.crc32, f.path);
            }
        }
    }
    Ok(())
}
