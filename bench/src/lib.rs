//! What the benchmark binaries share: where a run keeps its files and
//! databases, and the Markdown of the reports.

pub mod place;
pub mod report;
