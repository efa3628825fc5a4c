//! What a job keeps in a checkpoint, in one place: the names of its files
//! ([`CheckpointLayout`]) and what it records with the checkpoint ([`JobMeta`]: the
//! job's name, parallelism, max parallelism and the fingerprint of its graph).
//!
//! ```text
//! chk-00000000000000000042/
//!     source-<node>-<subtask>.pos    a source subtask's position (opaque bytes)
//!     op-<node>-<subtask>/...        an operator subtask's snapshot (its own files)
//!     _manifest                      every file above, and the job's metadata
//! ```
//!
//! The metadata goes into the manifest's `meta` records as `job`, `parallelism`,
//! `max_parallelism` and `graph` (one node per line), and is read back typed: a
//! checkpoint whose metadata is missing or unreadable is an error naming the record.

use std::collections::BTreeMap;
use std::path::Path;

use sabot_core::CheckpointId;

use crate::storage::Manifest;
use crate::{CheckpointError, Result};

/// The names of a job's files inside a checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointLayout;

impl CheckpointLayout {
    /// The file of source node `node`'s subtask `subtask`: its position.
    pub fn source_position(node: usize, subtask: usize) -> String {
        format!("source-{node}-{subtask}.pos")
    }

    /// The folder of operator node `node`'s subtask `subtask`: its snapshot.
    pub fn operator_dir(node: usize, subtask: usize) -> String {
        format!("op-{node}-{subtask}")
    }
}

/// The job graph a checkpoint belongs to: one line per node, naming its operator.
/// Operator state is found by node, so a checkpoint restores only into the same graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphFingerprint {
    nodes: Vec<String>,
}

impl GraphFingerprint {
    /// The fingerprint of a graph whose nodes are named `nodes`, in node order.
    pub fn new<S: AsRef<str>>(nodes: impl IntoIterator<Item = S>) -> Self {
        GraphFingerprint {
            nodes: nodes
                .into_iter()
                .map(|n| n.as_ref().replace('\n', " "))
                .collect(),
        }
    }

    /// The first node that differs between the two graphs: (index, was, is now), with
    /// `(none)` for a node only one of them has.
    pub fn first_difference<'a>(
        &'a self,
        now: &'a GraphFingerprint,
    ) -> Option<(usize, &'a str, &'a str)> {
        let n = self.nodes.len().max(now.nodes.len());
        (0..n)
            .find(|&i| self.nodes.get(i) != now.nodes.get(i))
            .map(|i| {
                let name =
                    |g: &'a GraphFingerprint| g.nodes.get(i).map_or("(none)", |s| s.as_str());
                (i, name(self), name(now))
            })
    }

    fn encode(&self) -> String {
        self.nodes.join("\n")
    }

    fn decode(s: &str) -> Self {
        GraphFingerprint {
            nodes: s.split('\n').map(str::to_owned).collect(),
        }
    }
}

/// What a job records with each of its checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobMeta {
    /// The job's name.
    pub job: String,
    /// Subtasks per operator when the checkpoint was taken.
    pub parallelism: usize,
    /// The number of key groups (fixed for a job's lifetime).
    pub max_parallelism: usize,
    /// The job graph.
    pub graph: GraphFingerprint,
}

impl JobMeta {
    /// A job's metadata.
    pub fn new(
        job: impl Into<String>,
        parallelism: usize,
        max_parallelism: usize,
        graph: GraphFingerprint,
    ) -> Self {
        JobMeta {
            job: job.into(),
            parallelism,
            max_parallelism,
            graph,
        }
    }

    /// As the manifest's `meta` records.
    pub fn to_records(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("job".to_string(), self.job.clone()),
            ("parallelism".to_string(), self.parallelism.to_string()),
            (
                "max_parallelism".to_string(),
                self.max_parallelism.to_string(),
            ),
            ("graph".to_string(), self.graph.encode()),
        ])
    }

    /// Read back from checkpoint `m` (found in `folder`): a missing or unreadable
    /// record is an error naming it.
    pub fn from_manifest(m: &Manifest, folder: &Path) -> Result<JobMeta> {
        let bad = |reason: String| CheckpointError::BadManifest {
            path: folder.join(format!("chk-{:020}", m.id.0)),
            reason,
        };
        let record = |k: &str| {
            m.meta
                .get(k)
                .ok_or_else(|| bad(format!("the manifest records no `{k}`")))
        };
        let number = |k: &str| {
            record(k)?
                .parse::<usize>()
                .map_err(|_| bad(format!("the manifest's `{k}` is not a number")))
        };
        Ok(JobMeta {
            job: record("job")?.clone(),
            parallelism: number("parallelism")?,
            max_parallelism: number("max_parallelism")?,
            graph: GraphFingerprint::decode(record("graph")?),
        })
    }

    /// Whether a job described by `self` may continue from checkpoint `id` (in
    /// `folder`) taken by `taken`: the same graph and max parallelism (the
    /// parallelism may change: key groups move).
    pub fn check_restorable(&self, id: CheckpointId, taken: &JobMeta, folder: &Path) -> Result<()> {
        let refuse = |reason: String| CheckpointError::Incompatible {
            checkpoint: id,
            folder: folder.to_path_buf(),
            reason,
        };
        if taken.max_parallelism != self.max_parallelism {
            return Err(refuse(format!(
                "it was taken with max parallelism {}, and max parallelism must stay the same for a job's life (it is now {})",
                taken.max_parallelism, self.max_parallelism
            )));
        }
        if let Some((at, was, now)) = taken.graph.first_difference(&self.graph) {
            return Err(refuse(format!(
                "it was taken by a different job graph: node {at} was `{was}`, is now `{now}`; use another checkpoint folder for a changed job"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(meta: BTreeMap<String, String>) -> Manifest {
        Manifest {
            id: CheckpointId(3),
            created_ms: 0,
            meta,
            files: Vec::new(),
        }
    }

    #[test]
    fn job_meta_round_trips_through_the_manifest() {
        let meta = JobMeta::new(
            "j",
            2,
            128,
            GraphFingerprint::new(["source(x)", "key_by(a)", "window\nover"]),
        );
        let back = JobMeta::from_manifest(&manifest(meta.to_records()), Path::new("ck")).unwrap();
        assert_eq!(back, meta);
    }

    #[test]
    fn missing_or_unreadable_records_are_errors_naming_them() {
        let mut records = JobMeta::new("j", 2, 128, GraphFingerprint::new(["a"])).to_records();
        records.remove("graph");
        let e = JobMeta::from_manifest(&manifest(records.clone()), Path::new("ck")).unwrap_err();
        assert!(e.to_string().contains("`graph`"), "{e}");
        records.insert("graph".into(), "a".into());
        records.insert("parallelism".into(), "two".into());
        let e = JobMeta::from_manifest(&manifest(records), Path::new("ck")).unwrap_err();
        assert!(
            e.to_string().contains("`parallelism` is not a number"),
            "{e}"
        );
    }

    #[test]
    fn a_changed_graph_or_max_parallelism_is_refused_naming_the_difference() {
        let taken = JobMeta::new("j", 2, 128, GraphFingerprint::new(["src", "map", "sink"]));
        let same_p3 = JobMeta::new("j", 3, 128, GraphFingerprint::new(["src", "map", "sink"]));
        same_p3
            .check_restorable(CheckpointId(1), &taken, Path::new("ck"))
            .unwrap();
        let changed = JobMeta::new(
            "j",
            2,
            128,
            GraphFingerprint::new(["src", "filter", "sink"]),
        );
        let e = changed
            .check_restorable(CheckpointId(1), &taken, Path::new("ck"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("node 1 was `map`, is now `filter`"), "{e}");
        let longer = JobMeta::new(
            "j",
            2,
            128,
            GraphFingerprint::new(["src", "map", "sink", "x"]),
        );
        let e = longer
            .check_restorable(CheckpointId(1), &taken, Path::new("ck"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("node 3 was `(none)`, is now `x`"), "{e}");
        let other_max = JobMeta::new("j", 2, 256, GraphFingerprint::new(["src", "map", "sink"]));
        let e = other_max
            .check_restorable(CheckpointId(1), &taken, Path::new("ck"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max parallelism 128"), "{e}");
    }
}
