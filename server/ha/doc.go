// Package ha makes the coordinator highly available: its replicated state
// lives in a hashicorp/raft cluster of coordinators, one [Node] each.
//
// The state — jobs, the last committed rounds of each job's arms with the
// digest of their global models and cumulative totals, the site registry,
// and the global models themselves as content-addressed blobs — is a
// raft finite-state machine, [FSM]. Commands are versioned and
// checksummed ([Encode]); a round commits once only and rounds are
// contiguous ([ErrRoundConflict]); a round may only reference a sealed
// blob, so with the blob's chunks travelling through the Raft log a
// committed round's model is on a quorum of nodes.
//
// A [Node] ([Open]) wraps raft with its raft-boltdb log, file snapshots
// and a TCP or mutual-TLS transport. Its proposing methods (SubmitJob,
// PutModel, CommitRound, …) succeed on the leader only and return a
// [*NotLeaderError] carrying the leader's gRPC address elsewhere. It never
// silently forks or loses the cluster: Open refuses, naming the fix, a
// data dir of another node or another peer list (cluster.json), one in
// use, a damaged raft log or snapshot, and a stored raft configuration
// other than the configured peers; and once running, a node whose peer
// list disagrees with the cluster's (the first leader records its hash)
// stops itself and reports on [Node.Err]. A one-voter cluster may have no
// raft address: it runs without network. Membership changes are not
// supported yet; blobs live in memory (the FSM keeps the models of the
// last two committed rounds of each arm) and in snapshots.
package ha
