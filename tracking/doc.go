// Package tracking records Cohort's experiments the way MLflow does: an
// [Experiment] holds runs; a [Run] has an [RunInfo] (status, times, artifact
// URI, lifecycle stage) and [RunData] (the latest value of each [Metric],
// immutable [Param]s and mutable [Tag]s); runs nest through the tag
// [TagParentRunID], so a job run holds one arm run per arm and each
// federated arm one site run per site, and any MLflow UI shows the tree.
// [SQLiteStore] is the embedded store: one SQLite file (pure Go, WAL mode)
// with the full metric history beside a latest-value table, and artifacts
// as plain files under an artifact root. [Compare] reads a job run's arms
// back into a [Comparison] of accuracy, time, bytes moved and energy; the
// metric and tag names that the coordinator logs and Compare reads are the
// constants in names.go.
package tracking
